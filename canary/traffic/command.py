"""``canary load``: the command line of the incident's load generator (``canary.traffic.load``).

It drives the incident's three services by name, as the replay does; the rest of ``canary/``
knows services only through the catalog.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from core.errors import ConfigError


class LoadUsageError(ConfigError):
    """A bad argument of ``canary load``: printed as one line."""


def _parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, _, share = part.partition("=")
        if name.strip() not in ("importer", "opens", "resizer"):
            raise argparse.ArgumentTypeError(f"unknown service {name.strip()!r} in --mix (importer, opens, resizer)")
        try:
            mix[name.strip()] = float(share)
        except ValueError:
            raise argparse.ArgumentTypeError(f"share of {name.strip()} must be a number, got {share!r}") from None
        if mix[name.strip()] < 0:
            raise argparse.ArgumentTypeError(f"share of {name.strip()} must not be negative")
    return mix


def _load(args: argparse.Namespace) -> int:
    import json
    import os

    from canary.traffic.load import LoadConfig, run
    from core.scoped_tokens import scoped_token

    config = LoadConfig(
        importer=args.importer,
        opens=args.opens,
        resizer=args.resizer,
        rate=args.rate,
        duration=args.duration,
        accounts=args.accounts,
        seed=args.seed,
        # the opens service's own token: under `canary up` derived from the stack's service token
        # (each service has its own), the controller's admin token being another
        admin_token=args.admin_token
        or scoped_token(os.environ.get("CANARY_SERVICE_TOKEN", "") or _kept(args.state_dir), "service_token", "opens")
        or os.environ.get("CANARY_ADMIN_TOKEN", ""),
    )
    if args.mix:
        config.mix = args.mix
    if not config.targets():
        raise LoadUsageError("give at least one of --importer, --opens, --resizer (with a share above 0 in --mix)")
    if config.opens and not config.admin_token:
        raise LoadUsageError(
            "--opens needs --admin-token (or CANARY_SERVICE_TOKEN, STATE/service-token, or CANARY_ADMIN_TOKEN) "
            "to mint tracking tokens"
        )
    try:
        report = run(config, progress=None if args.quiet else lambda line: print(line, file=sys.stderr, flush=True))
    except PermissionError as exc:
        raise LoadUsageError(str(exc)) from None
    except Exception as exc:  # a service that cannot be reached during setup
        import httpx

        if isinstance(exc, httpx.HTTPError):
            raise LoadUsageError(f"setup failed: {exc}") from None
        raise
    print(json.dumps(report, indent=2))
    return 0


def _kept(state_dir: str) -> str:
    """The service token `canary up` keeps in ``state_dir`` ("" when it keeps none: never made here)."""
    from pathlib import Path

    try:
        return (Path(state_dir) / "service-token").read_text().strip()
    except OSError:
        return ""


def add_load_command(sub: Any, _positive_float: Callable[[str], float], _positive_int: Callable[[str], int]) -> None:
    load = sub.add_parser("load", help="drive realistic traffic at the services and report what consumers saw")
    load.add_argument("--importer", metavar="URL", help="importer base URL")
    load.add_argument("--opens", metavar="URL", help="open tracker base URL")
    load.add_argument("--resizer", metavar="URL", help="resizer base URL")
    load.add_argument(
        "--rate", type=_positive_float, default=20.0, help="requests per second, all services (default 20)"
    )
    load.add_argument("--duration", type=_positive_float, default=30.0, help="seconds (default 30)")
    load.add_argument("--mix", type=_parse_mix, help="shares, e.g. importer=0.05,opens=0.75,resizer=0.2")
    load.add_argument("--accounts", type=_positive_int, default=20, help="customers (default 20)")
    load.add_argument("--seed", type=int, default=1)
    load.add_argument(
        "--admin-token",
        help="the opens service's admin token, to mint tracking tokens (default: derived from the "
        "stack's service token, CANARY_SERVICE_TOKEN or STATE/service-token; else CANARY_ADMIN_TOKEN)",
    )
    load.add_argument("--state-dir", default="state", help="where `canary up` keeps its tokens (default state)")
    load.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    load.set_defaults(func=_load)
