"""The router's upstream client: pooled keep-alive HTTP/1.1 connections (asyncio protocol and
httptools' parser), plain or TLS, with every answer streamed under flow control.

Where it sits: the proxy (``canary.router.proxy``) and the mirror call :meth:`UpstreamPool.send`
and get an :class:`Attempt` (failures are values).  An answer that is complete when its headers are
parsed is handed over whole (one write to the client); any other is read chunk by chunk with
:meth:`Attempt.read`, and the upstream socket stops being read while the router holds more than
``HIGH_WATER`` bytes of it, so memory is bounded whatever the answer's size.

Safety: ``https://`` upstreams are verified (the system's CAs, or ``router_ca_bundle``); an idle
connection is dropped before the upstream's keep-alive would close it (``router_upstream_idle_s``,
or less when the upstream says ``Keep-Alive: timeout=N``); a connection is reused only after a
complete, well-framed answer with nothing after it, so one request's bytes never reach another's
answer; a malformed answer is the error ``bad_response`` (the proxy answers 502).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol, cast
from urllib.parse import urlsplit

import httptools

HIGH_WATER = 256 * 1024  # buffered answer bytes above which the upstream socket is paused
LOW_WATER = 64 * 1024
MAX_IDLE_PER_ORIGIN = 256
CONNECT_TIMEOUT_S = 5.0


class UpstreamError(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind  # "connect", "tls", "reset", "timeout", "bad_response", "too_large"


class BodySource(Protocol):
    """A request body the router streams to the upstream as it arrives."""

    length: int | None  # declared Content-Length; None: chunked

    async def read(self) -> bytes:
        """The next chunk; b"" once the body is complete."""
        ...


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int
    prefix: str  # a path the upstream URL carries, put before every request's path
    host_header: bytes

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


@lru_cache(maxsize=1024)
def origin_of(url: str) -> Origin:
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if tls else 80)
    return Origin(parts.scheme, host, port, parts.path.rstrip("/"), f"{host}:{port}".encode("idna"))


class _Connection(asyncio.Protocol):
    """One upstream connection, carrying one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin_key: tuple[str, str, int]) -> None:
        self.loop = loop
        self.origin_key = origin_key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.busy = False
        self.idle_since = 0.0
        self.keep_alive_s: float | None = None
        self._reset_exchange(head_only=False)
        self._write_ready: asyncio.Future[None] | None = None

    def _reset_exchange(self, head_only: bool) -> None:
        self.head_only = head_only
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.complete = False
        self.until_close = False
        self.keep = False
        self.error = ""
        self.got_bytes = False
        self.interim = False
        self.extra = False
        self.reading_paused = False
        self.waiter: asyncio.Future[None] | None = None
        self.head_ready: asyncio.Future[None] = self.loop.create_future()

    # -- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        if not self.busy or self.complete:
            self.close()  # bytes nobody asked for: this connection can never be trusted again
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail("bad_response")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.until_close and self.status and not self.complete:
            self.complete = True  # an answer framed by the end of the connection (HTTP/1.0 style)
            self._wake()
        self._fail("tls" if isinstance(exc, ssl.SSLError) else "reset")
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)

    def pause_writing(self) -> None:
        self._write_ready = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)
        self._write_ready = None

    # -- httptools callbacks ---------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.complete:  # a second answer to one request: never reuse this connection
            self.extra = True
            self.keep = False
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.extra:
            return
        self.headers.append((name, value))
        if name.lower() == b"keep-alive":
            for part in value.split(b","):
                key, _, number = part.strip().partition(b"=")
                if key.lower() == b"timeout" and number.strip().isdigit():
                    self.keep_alive_s = float(number.strip())

    def on_headers_complete(self) -> None:
        if self.extra:
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            self.interim = True  # 100 Continue and friends: the real answer follows
            self.headers = []
            return
        self.status = status
        names = {n.lower() for n, _ in self.headers}
        self.until_close = (
            b"content-length" not in names and b"transfer-encoding" not in names and status not in (204, 304)
        )
        if self.head_only:
            # httptools cannot be told that a HEAD answer has no body: take the head, drop the connection
            self.complete, self.keep = True, False
        if not self.head_ready.done():
            self.head_ready.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.extra:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.extra:
            return
        if self.interim:
            self.interim = False
            return
        self.complete = True
        self.keep = self.parser.should_keep_alive() and not self.head_only
        self._wake()

    # -- the exchange ----------------------------------------------------------------------------
    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _fail(self, kind: str) -> None:
        if self.complete and not self.error:
            return
        self.error = self.error or kind
        if not self.head_ready.done():
            self.head_ready.set_exception(UpstreamError(self.error))
            self.head_ready.exception()  # retrieved: nobody may be waiting any more
        self._wake()
        if kind == "bad_response":
            self.close()

    async def drain(self) -> None:
        if self._write_ready is not None:
            await self._write_ready
        if self.closed:
            raise UpstreamError("reset")

    async def read(self, timeout_s: float) -> bytes:
        while True:
            if self.chunks:
                data = b"".join(self.chunks) if len(self.chunks) > 1 else self.chunks[0]
                self.chunks.clear()
                self.buffered = 0
                if self.reading_paused and self.transport is not None and not self.closed:
                    self.reading_paused = False
                    self.transport.resume_reading()
                return data
            if self.complete:
                return b""
            if self.error:
                raise UpstreamError(self.error)
            self.waiter = self.loop.create_future()
            try:
                await asyncio.wait_for(self.waiter, timeout_s)
            except TimeoutError:
                self.close()
                raise UpstreamError("timeout") from None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


@dataclass
class Attempt:
    """One request to one upstream: an answer (status > 0) or an error."""

    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes | None = None  # the whole answer, when it was complete with its head
    error: str = ""
    conn: _Connection | None = None
    pool: UpstreamPool | None = None
    timeout_s: float = 10.0

    @property
    def answered(self) -> bool:
        return self.status > 0

    @property
    def failed(self) -> bool:
        return not self.answered or self.status >= 500

    @property
    def content_type(self) -> str:
        return next((v.decode("latin-1") for k, v in self.headers if k.lower() == b"content-type"), "")

    @property
    def content_length(self) -> int | None:
        value = next((v for k, v in self.headers if k.lower() == b"content-length"), None)
        return int(value) if value is not None and value.strip().isdigit() else None

    async def read(self) -> bytes:
        """The next chunk of a streamed answer; b"" at its end.  Raises UpstreamError."""
        if self.conn is None:
            body, self.body = self.body, b""
            return body or b""
        return await self.conn.read(self.timeout_s)

    async def read_all(self, cap: int) -> bytes:
        """The whole answer, refusing (``too_large``) past ``cap`` bytes."""
        parts, size = [], 0
        while chunk := await self.read():
            size += len(chunk)
            if size > cap:
                self.release()
                raise UpstreamError("too_large")
            parts.append(chunk)
        self.release()
        return b"".join(parts)

    def release(self) -> None:
        """Give the connection back (after a complete answer) or close it (any other moment)."""
        conn, self.conn = self.conn, None
        if conn is not None and self.pool is not None:
            self.pool.give_back(conn)


class UpstreamPool:
    def __init__(self, idle_s: float = 4.0, ca_bundle: str = "") -> None:
        self.idle_s = idle_s
        self.ca_bundle = ca_bundle
        self.idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=self.ca_bundle or None)  # verifies host and chain
        return self._tls

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for pool in self.idle.values():
            for conn in pool:
                conn.close()
        self.idle.clear()

    def _idle_limit(self, conn: _Connection) -> float:
        if conn.keep_alive_s is not None:
            return min(self.idle_s, max(conn.keep_alive_s - 1.0, 0.0))
        return self.idle_s

    async def _sweep(self) -> None:
        # Closing expired connections ahead of the upstream keeps it from closing one just as a
        # request goes out on it (a request that then fails for no reason of its own).
        while True:
            await asyncio.sleep(min(1.0, self.idle_s / 2))
            now = time.monotonic()
            for pool in self.idle.values():
                while pool and now - pool[0].idle_since > self._idle_limit(pool[0]):
                    pool.popleft().close()

    def give_back(self, conn: _Connection) -> None:
        conn.busy = False
        if not (conn.complete and conn.keep and not conn.closed and not conn.chunks and not conn.error):
            conn.close()
            return
        pool = self.idle.setdefault(conn.origin_key, deque())
        if len(pool) >= MAX_IDLE_PER_ORIGIN:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        pool.append(conn)

    async def _connection(self, origin: Origin) -> tuple[_Connection, bool]:
        pool = self.idle.get(origin.key)
        now = time.monotonic()
        while pool:
            conn = pool.pop()
            if not conn.closed and now - conn.idle_since <= self._idle_limit(conn):
                return conn, True
            conn.close()
        loop = asyncio.get_running_loop()
        tls = origin.scheme == "https"
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(loop, origin.key),
                    origin.host,
                    origin.port,
                    ssl=self.tls_context() if tls else None,
                    server_hostname=origin.host if tls else None,
                ),
                CONNECT_TIMEOUT_S,
            )
        except ssl.SSLError:
            raise UpstreamError("tls") from None
        except (OSError, TimeoutError):
            raise UpstreamError("connect") from None
        return conn, False

    async def send(
        self,
        method: str,
        url: str,
        path_qs: str,
        headers: bytes,
        body: bytes | BodySource | None,
        timeout_s: float,
    ) -> Attempt:
        """``headers``: the encoded header block (``canary.router.headers.request_headers``)."""
        origin = origin_of(url)
        target = f"{method} {origin.prefix}{path_qs} HTTP/1.1\r\nhost: ".encode("latin-1")
        head = [target, origin.host_header, b"\r\n", headers]
        if isinstance(body, bytes):
            if body or method not in ("GET", "HEAD"):
                head.append(b"content-length: %d\r\n" % len(body))
        elif body is not None:
            head.append(
                b"content-length: %d\r\n" % body.length
                if body.length is not None
                else b"transfer-encoding: chunked\r\n"
            )
        head.append(b"\r\n")
        request = b"".join(head)
        for try_no in range(2):
            try:
                conn, reused = await self._connection(origin)
            except UpstreamError as exc:
                return Attempt(error=exc.kind)
            conn.busy = True
            conn._reset_exchange(head_only=method == "HEAD")
            try:
                return await self._exchange(conn, request, body, timeout_s)
            except BaseException as exc:
                if not isinstance(exc, UpstreamError):
                    conn.close()  # the client's body failed (too large, gone): not the upstream's fault
                    raise
                conn.close()
                retry = reused and try_no == 0 and exc.kind == "reset" and not conn.got_bytes
                if retry and (body is None or isinstance(body, bytes)):
                    continue  # the upstream closed an idle connection as we sent: once more, fresh
                return Attempt(error=exc.kind)
        return Attempt(error="reset")

    async def _exchange(
        self, conn: _Connection, request: bytes, body: bytes | BodySource | None, timeout_s: float
    ) -> Attempt:
        assert conn.transport is not None
        if isinstance(body, bytes) or body is None:
            conn.transport.write(request + body if body else request)
        else:
            conn.transport.write(request)
            await _pump(conn, body)
        timer = conn.loop.call_later(timeout_s, conn._fail, "timeout")
        try:
            await conn.head_ready
        finally:
            timer.cancel()
        attempt = Attempt(conn.status, conn.headers, pool=self, timeout_s=timeout_s)
        if conn.complete:
            attempt.body = b"".join(conn.chunks)
            conn.chunks.clear()
            self.give_back(conn)
        else:
            attempt.conn = conn
        return attempt


async def _pump(conn: _Connection, body: BodySource) -> None:
    """Stream a request body to the upstream, chunk-encoded when its length is unknown."""
    assert conn.transport is not None
    chunked = body.length is None
    while chunk := await body.read():
        if conn.head_ready.done() or conn.closed:
            return  # the upstream answered (or left) before taking the whole body
        conn.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
        await conn.drain()
    if chunked and not conn.closed:
        conn.transport.write(b"0\r\n\r\n")
