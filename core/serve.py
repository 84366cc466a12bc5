"""Command-line serving: ``python -m services.<name> --release R --port N --db URL``.

Each service's ``__main__`` hands its app factory and its known releases to :func:`serve_main`,
which parses flags, loads settings (flags over environment over YAML), and runs uvicorn.  Bad flags
and bad settings end with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import uvicorn
from starlette.applications import Starlette

from core.errors import ConfigError
from core.settings import Settings, load_settings

# How long an idle keep-alive connection stays open.  Longer than the clients' pools keep theirs
# (httpx 5 s, the router's upstream pool 30 s): the client always gives up first, so no request is
# ever sent on a connection the server is closing at that moment (uvicorn's default is 5 s, the
# same as httpx's, and the race showed as stray errors and ReadErrors under load).
KEEP_ALIVE_S = 75


@contextlib.contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0, **config: Any) -> Iterator[str]:
    """Run an ASGI app under uvicorn in a background thread on a free port; yield its base URL.

    For tests and benchmarks that need a real server on 127.0.0.1 inside the same process.
    """
    if not port:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    config.setdefault("timeout_keep_alive", KEEP_ALIVE_S)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError("server thread exited at start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def build_parser(prog: str, releases: Sequence[str], description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--release", help=f"release to run: {', '.join(releases)} (default CANARY_RELEASE, else 1.0)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8000)")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--db", dest="db_url", help="database URL: sqlite:///PATH or postgresql://...")
    parser.add_argument("--state-dir", help="directory for local state (default ./state)")
    parser.add_argument("--config", help="YAML settings file (also CANARY_CONFIG)")
    parser.add_argument("--log-level", default=None, help="uvicorn log level (default warning)")
    parser.add_argument("--track", choices=("stable", "canary"), help="queue consumers: which track this is")
    parser.add_argument("--route-table", help="queue consumers: route table file or URL to take their share from")
    return parser


def settings_from_args(service: str, releases: Sequence[str], args: argparse.Namespace) -> Settings:
    settings = load_settings(
        config_file=args.config,
        service=service,
        release=args.release,  # else CANARY_RELEASE or the config file, as for every setting
        port=args.port,
        host=args.host,
        db_url=args.db_url,
        state_dir=args.state_dir,
        log_level=args.log_level,
        track=args.track,
        route_table=args.route_table,
    )
    if settings.release not in releases:
        raise ConfigError(f"unknown release {settings.release!r} of {service}: choose one of {', '.join(releases)}")
    return settings


def serve_main(
    service: str,
    releases: Sequence[str],
    factory: Callable[[Settings], Starlette],
    argv: Sequence[str] | None = None,
    description: str = "",
    prog: str | None = None,
) -> int:
    prog = prog or f"python -m services.{service}"
    parser = build_parser(prog, releases, description or f"Run the {service} service.")
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(service, releases, args)
        app = factory(settings)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run_server(app, settings.host, settings.port, settings.log_level)
    return 0


def run_server(app: Any, host: str, port: int, log_level: str = "warning", **config: Any) -> None:
    """Run an ASGI app under uvicorn in the foreground, as every command of the project does:
    no access log, and idle connections kept ``KEEP_ALIVE_S``."""
    uvicorn.run(
        app, host=host, port=port, log_level=log_level, access_log=False, timeout_keep_alive=KEEP_ALIVE_S, **config
    )
