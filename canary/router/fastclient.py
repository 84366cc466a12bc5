"""A small pooled HTTP/1.1 client for the router's most common upstream call: a GET whose answer is
read whole.  asyncio protocol plus httptools' parser, keep-alive connections per upstream.

It exists for speed: aiohttp costs about 0.4 ms of CPU per proxied request here, most of the
router's budget (see ``benchmarks.router``).  Everything else (HEAD, request bodies, streaming)
goes through aiohttp.  A request on a reused connection that the upstream had closed meanwhile is
sent once more on a fresh one (GETs are safe to repeat).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from typing import cast
from urllib.parse import urlsplit

import httptools


class UpstreamError(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind  # "connect", "reset", "timeout", "bad_response"


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, list[tuple[bytes, bytes]], bytes, bool]] | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.closed = False
        self.got_bytes = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail("bad_response")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail("reset")

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(
                (self.parser.get_status_code(), self.headers, b"".join(self.body), self.parser.should_keep_alive())
            )

    def _fail(self, kind: str) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(UpstreamError(kind))

    async def exchange(self, request: bytes, timeout_s: float) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
        assert self.transport is not None
        self.headers, self.body, self.got_bytes = [], [], False
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        try:
            return await asyncio.wait_for(self.waiter, timeout_s)
        except TimeoutError:
            self.close()
            raise UpstreamError("timeout") from None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class FastClient:
    def __init__(self, max_idle: int = 64) -> None:
        self.idle: dict[tuple[str, int], deque[_Connection]] = defaultdict(deque)
        self.max_idle = max_idle

    async def get(
        self, url: str, headers: dict[str, str], body: bytes | None, timeout_s: float
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
        for attempt in range(2):
            conn, reused = await self._connection(host, port, timeout_s)
            try:
                status, response_headers, data, keep = await conn.exchange(request, timeout_s)
            except UpstreamError as exc:
                conn.close()
                if reused and attempt == 0 and exc.kind == "reset" and not conn.got_bytes:
                    continue  # the upstream closed an idle connection: send it once more, fresh
                raise
            pool = self.idle[(host, port)]
            if keep and not conn.closed and len(pool) < self.max_idle:
                pool.append(conn)
            else:
                conn.close()
            return status, response_headers, data
        raise UpstreamError("reset")

    async def _connection(self, host: str, port: int, timeout_s: float) -> tuple[_Connection, bool]:
        pool = self.idle[(host, port)]
        while pool:
            conn = pool.pop()
            if not conn.closed:
                return conn, True
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await asyncio.wait_for(loop.create_connection(_Connection, host, port), min(timeout_s, 5.0))
        except (OSError, TimeoutError):
            raise UpstreamError("connect") from None
        return protocol, False

    def close(self) -> None:
        for pool in self.idle.values():
            for conn in pool:
                conn.close()
        self.idle.clear()
