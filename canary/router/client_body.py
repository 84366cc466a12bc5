"""A client's request body as the protocol server (``canary.router.server``) receives it, read by
the proxy as a stream: the client's socket is paused while more than ``BODY_HIGH_WATER`` bytes wait,
so a client never sends faster than the upstream takes its body."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from canary.router.wire import BodyError

BODY_HIGH_WATER = 256 * 1024


class _Connection(Protocol):
    def pause_input(self) -> None: ...

    def resume_input(self) -> None: ...

    def write_raw(self, data: bytes) -> None: ...


class ClientBody:
    """A request body as it arrives; the client socket is paused while too much of it waits."""

    def __init__(self, conn: _Connection, length: int | None, expect_continue: bool) -> None:
        self.conn = conn
        self.length = length
        self.complete = length == 0
        self.error = ""
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.waiter: asyncio.Future[None] | None = None
        self.expect_continue = expect_continue

    def feed(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.buffered += len(chunk)
        if self.buffered > BODY_HIGH_WATER:
            self.conn.pause_input()
        self._wake()

    def finish(self, error: str = "") -> None:
        if error and not self.complete:
            self.error = error
        self.complete = True
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def read(self) -> bytes:
        if self.expect_continue:
            self.expect_continue = False
            self.conn.write_raw(b"HTTP/1.1 100 Continue\r\n\r\n")
        while True:
            if self.chunks:
                data = b"".join(self.chunks)
                self.chunks.clear()
                self.buffered = 0
                self.conn.resume_input()
                return data
            if self.error:
                raise BodyError(self.error)
            if self.complete:
                return b""
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
