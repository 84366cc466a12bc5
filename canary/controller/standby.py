"""The warm standby's steps (``python -m canary.controller --standby``, as ``canary up`` runs its
controllers, ``canary.controller.local_controllers``).

A controller started ahead of need pays for its start while another acts: its imports (most of a
start's CPU) and its settings and catalog (``warm_up``), then it blocks in ``flock`` on the state
directory's lock (``wait_to_act``: no CPU while it waits).  The kernel frees the lock the moment the
acting controller's process ends, SIGKILL included, and wakes the standby: it holds the state
directory's lease name, so its first tick acts.  Two never act at once: only the lock's holder has
the name, and a second controller without it waits for the lease.

It serves on the listening socket ``canary up`` handed down (``listening_socket``): the socket
outlives any one controller process, so connections made while none accepts queue on it instead of
being refused.  Without one it binds the port once it holds the lock (its previous holder is dead).
A standby whose ``canary up`` is gone (end of file on its stdin pipe) exits while it waits.
"""

from __future__ import annotations

import importlib
import os
import socket
import stat
import threading

from canary.catalog.settings import catalog_for
from canary.controller.lease_holder import LeaseHolder, wait_for_lock
from canary.controller.notifying import read_webhooks
from core.settings import Settings

# imported by the controller's start only after it holds the lock (lazily, in the platform, the
# providers and uvicorn's server): imported ahead here, as they cost most of a start
AHEAD = (
    "canary.platforms.local",
    "canary.providers.builtin",
    "canary.providers.prometheus",
    "canary.controller.group_api",
    "sqlite3",
    "httpcore",
    "anyio._backends._asyncio",
    "anyio.streams.memory",
    "anyio.streams.stapled",
    "uvicorn.server",
    "uvicorn.lifespan.on",
    "uvicorn.protocols.http.h11_impl",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.protocols.websockets.auto",
    "uvicorn.loops.auto",
)


def warm_up(settings: Settings) -> None:
    """What a controller's start needs that does not depend on holding the lock."""
    for module in AHEAD:
        try:
            importlib.import_module(module)
        except ImportError:  # an optional part (httptools, prometheus_api_client): the start skips it too
            continue
    catalog_for(settings)  # a wrong entry stops the standby now, in words, not at the takeover
    read_webhooks(settings)  # so does a bad webhooks file


class _Waiting:
    """Exits the process when stdin, a pipe from ``canary up``, ends while it still waits."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acting = False

    def watch_stdin(self) -> None:
        try:
            if not stat.S_ISFIFO(os.fstat(0).st_mode):
                return  # not started by `canary up`: nothing to watch
        except OSError:
            return
        threading.Thread(target=self._until_eof, name="standby-stdin", daemon=True).start()

    def _until_eof(self) -> None:
        while os.read(0, 4096):  # the raw descriptor: no buffer lock held at the interpreter's exit
            pass
        with self.lock:
            if not self.acting:
                os._exit(0)  # blocked in flock: nothing to unwind


def wait_to_act(state_dir: str) -> LeaseHolder:
    """Block until this controller holds the state directory's lock (the acting one has ended)."""
    waiting = _Waiting()
    waiting.watch_stdin()
    holder = wait_for_lock(state_dir)
    with waiting.lock:
        waiting.acting = True
    return holder


def listening_socket(fd: int | None, host: str, port: int) -> socket.socket:
    """The inherited listening socket, or one bound now on ``host:port``."""
    if fd is not None:
        return socket.socket(fileno=fd)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock
