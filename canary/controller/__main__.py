"""``python -m canary.controller``: the controller alone, as it runs on Kubernetes (``canary up``
runs it together with a router and the services on one machine).

Settings come from the environment as everywhere (``CANARY_DB_URL``, ``CANARY_ADMIN_TOKEN``,
``CANARY_PLATFORM=kubernetes``, ``CANARY_PROMETHEUS_URL``, ...); the flags say where the router and
the controller itself are reached, and which release of each service is stable to begin with.
``--standby`` makes it a warm standby (``canary.controller.standby``), as ``canary up`` runs its
controllers: imported and ready, it waits for the state directory's lock and acts when it gets it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from canary.controller.app import create_controller_app
from canary.controller.lease_holder import LeaseHolder
from canary.controller.standby import listening_socket, wait_to_act, warm_up
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
    parser.add_argument(
        "--standby",
        action="store_true",
        help="wait for the state directory's lock (STATE/controller.lock) before serving and acting",
    )
    parser.add_argument(
        "--listen-fd", type=int, default=None, help="serve on this inherited listening socket, not HOST:PORT"
    )
    args = parser.parse_args(argv)
    holder: LeaseHolder | None = None
    try:
        from canary.stack import StackTokens  # here only: a standby imports it while it waits

        settings = StackTokens.filled_in(load_settings(port=args.port, host=args.host))
        if args.standby:
            warm_up(settings)  # everything that can be done before acting is done while waiting
            holder = wait_to_act(settings.state_dir)
        sockets = [listening_socket(args.listen_fd, settings.host, settings.port)] if args.standby else None
        app = create_controller_app(
            settings, stable=args.stable, router_url=args.router_url, public_url=args.public_url, holder=holder
        )
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run_server(app, settings.host, settings.port, settings.log_level, sockets=sockets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
