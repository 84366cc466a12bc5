"""``python -m canary.router --table FILE_OR_URL --port N [--table-state FILE]``: run the router's protocol
server; with ``--table-state`` it keeps the last table it served there and serves it at once when it
starts again (also while the controller is down); ``--failover-buffer-bytes`` (or
``CANARY_ROUTER_FAILOVER_BUFFER_BYTES``) bounds the request bodies held for failover, all requests
together (256 MiB by default)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from canary.router.app import create_router, run_router
from core.errors import ConfigError
from core.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m canary.router", description="The canary router.")
    parser.add_argument("--table", default="", help="route table: a YAML/JSON file or the controller's URL")
    parser.add_argument(
        "--table-token",
        default=os.environ.get("CANARY_TABLE_TOKEN", ""),
        help="bearer token for a table URL (or CANARY_TABLE_TOKEN)",
    )
    parser.add_argument("--table-state", default="", help="file the last served table is kept in")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--config", help="YAML settings file (also CANARY_CONFIG)")
    parser.add_argument(
        "--failover-buffer-bytes",
        type=int,
        help="the most of request bodies held for failover at once, all requests together; a body over"
        " what is left goes to its track without failover (setting router_failover_buffer_bytes, or"
        " CANARY_ROUTER_FAILOVER_BUFFER_BYTES; default 256 MiB)",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings(
            config_file=args.config,
            port=args.port,
            host=args.host,
            router_failover_buffer_bytes=args.failover_buffer_bytes,
        )
        router = create_router(settings, args.table, args.table_token)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    router.tables.configure(
        address=f"{settings.host}:{settings.port}", state_file=Path(args.table_state) if args.table_state else None
    )
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    run_router(router, settings.host, settings.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
