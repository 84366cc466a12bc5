"""A spare router, ready ahead of need: ``python -m canary.platforms.router_standby ROUTER-ARGS``.

It pays for the router's imports (most of a router's start-up time) in advance, then waits for a
line on stdin; on it, it becomes ``python -m canary.router ROUTER-ARGS`` at once.  The supervisor in
``canary.platforms.local_router`` keeps one beside the live router, so that a router's death costs
consumers only the moments until the spare has bound the port.  End of file on stdin means whoever
started it is gone (a killed ``canary up``): it exits instead of lingering.
"""

from __future__ import annotations

import sys

import uvicorn.server  # noqa: F401  (imported ahead of need: what makes the switch fast)

from canary.router.__main__ import main


def standby(argv: list[str]) -> int:
    if not sys.stdin.buffer.readline():
        return 0
    return main(argv)


if __name__ == "__main__":
    sys.exit(standby(sys.argv[1:]))
