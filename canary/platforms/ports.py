"""Whether a port on 127.0.0.1 is free, for the local platform: a release keeps its port across
restarts (the router's table stays right), so before it starts again there, the platform checks
that no other program took the port meanwhile."""

from __future__ import annotations

import socket


def bindable(port: int, reuse_address: bool = False) -> bool:
    """``port`` on 127.0.0.1 can be bound now; with ``reuse_address``, as a server binds it (the
    last one's connections in TIME_WAIT do not count): nothing listens there."""
    with socket.socket() as s:
        if reuse_address:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def if_free(port: int | None) -> int | None:
    """``port`` if no other program took it meanwhile, else None."""
    return port if port is not None and bindable(port) else None
