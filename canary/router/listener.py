"""The router's listening socket and event loop: :class:`RouterServer` accepts connections (each a
``canary.router.server.ClientConnection``), closes idle and slow-to-speak ones, and stops
gracefully; ``new_loop`` is uvloop's where it is built."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterator

from canary.router.client_body import ClientBody
from canary.router.server import HEAD_TIMEOUT_S, KEEP_ALIVE_S, ClientConnection
from canary.router.simple_heads import SimpleRequest
from canary.router.wire import ClientSide, FastClientSide, RequestHead

Handler = Callable[[RequestHead, ClientBody, ClientSide], Awaitable[None]]
FastPath = Callable[[bytes, SimpleRequest, FastClientSide], bool]  # (target, head, connection)


class RouterServer:
    """Listens on one address; ``handle`` gets every parsed request."""

    def __init__(self, handle: Handler, try_fast: FastPath | None = None) -> None:
        self.handle = handle
        self.try_fast: FastPath = try_fast or (lambda target, head, client: False)
        self.connections: set[ClientConnection] = set()
        self.loop: asyncio.AbstractEventLoop  # the running loop, set in start()
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> int:
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(lambda: ClientConnection(self), host, port, backlog=4096)
        self._sweeper = asyncio.create_task(self._sweep())
        sock = self._server.sockets[0]
        return int(sock.getsockname()[1])

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for conn in list(self.connections):
                if conn.head_started and now - conn.head_started > HEAD_TIMEOUT_S:
                    conn.close()  # a request head trickling in (slowloris)
                elif not conn.busy and not conn.head_started and now - conn.last_active > KEEP_ALIVE_S:
                    conn.close()

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if not conn.busy:
                conn.close()
        deadline = time.monotonic() + 5
        while any(c.busy for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # uvloop is not built for every platform: asyncio's loop works, slower
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


@contextlib.contextmanager
def loop_in_thread() -> Iterator[asyncio.AbstractEventLoop]:
    """A uvloop event loop running in a background thread (tests, embedding)."""
    loop = new_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
