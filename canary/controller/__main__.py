"""``python -m canary.controller``: the controller alone, as it runs on Kubernetes (``canary up``
runs it together with a router and the services on one machine).

Settings come from the environment as everywhere (``CANARY_DB_URL``, ``CANARY_ADMIN_TOKEN``,
``CANARY_PLATFORM=kubernetes``, ``CANARY_PROMETHEUS_URL``, ...); the flags say where the router and
the controller itself are reached, and which release of each service is stable to begin with.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from canary.controller.app import create_controller_app
from core.errors import ConfigError
from core.serve import run_server
from core.settings import load_settings


def stable_releases(text: str) -> dict[str, str]:
    """``web=1.0,api=2.3`` -> {"web": "1.0", "api": "2.3"}."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        service, sep, release = part.partition("=")
        if not sep or not service or not release:
            raise argparse.ArgumentTypeError(f"{part!r} is not SERVICE=RELEASE")
        out[service.strip()] = release.strip()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m canary.controller", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0: in a pod)")
    parser.add_argument("--port", type=int, default=8700)
    parser.add_argument("--router-url", default="http://router:8080", help="a router, for the builtin provider")
    parser.add_argument("--public-url", default="http://controller:8700", help="where routers reach this controller")
    parser.add_argument(
        "--stable",
        type=stable_releases,
        default=None,
        help="SERVICE=RELEASE,...: the stable release of each service at first start (default: the catalog's)",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings(port=args.port, host=args.host)
        app = create_controller_app(
            settings, stable=args.stable, router_url=args.router_url, public_url=args.public_url
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run_server(app, settings.host, settings.port, settings.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
