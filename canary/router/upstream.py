"""The router's upstream client: pooled keep-alive HTTP/1.1 connections (asyncio protocol and
httptools' parser), plain or TLS, with every answer streamed under flow control.

Where it sits: the proxy (``canary.router.proxy``) and the mirror call :meth:`UpstreamPool.send`
and get an :class:`Attempt` (failures are values).  An answer that is complete when its headers are
parsed is handed over whole (one write to the client); any other is read chunk by chunk with
:meth:`Attempt.read`, and the upstream socket stops being read while the router holds more than
``HIGH_WATER`` bytes of it, so memory is bounded whatever the answer's size.

Safety: a request is sent twice only when its caller says it is safe to repeat (see
:meth:`UpstreamPool.send`); ``https://`` upstreams are verified (the system's CAs, or ``router_ca_bundle``); an idle
connection is dropped before the upstream's keep-alive would close it (``router_upstream_idle_s``,
or less when the upstream says ``Keep-Alive: timeout=N``); a connection is reused only after a
complete, well-framed answer with nothing after it, so one request's bytes never reach another's
answer; a malformed answer, or one whose head is over 64 KiB of header names and values or 128 KiB
as received (``canary.router.upstream_connection``), is the error ``bad_response`` (the proxy
answers 502) and its connection is closed.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Protocol
from urllib.parse import urlsplit

from canary.router.upstream_connection import UpstreamConnection, UpstreamError

MAX_IDLE_PER_ORIGIN = 256
CONNECT_TIMEOUT_S = 5.0
WRITE_JOINED = 64 * 1024  # request bodies up to this go out in one write with their head (one syscall)


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

    @cached_property
    def key(self) -> tuple[str, str, int]:  # the pool's, looked up on every request: made once
        return (self.scheme, self.host, self.port)


@lru_cache(maxsize=1024)
def origin_of(url: str) -> Origin:
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if tls else 80)
    return Origin(parts.scheme, host, port, parts.path.rstrip("/"), f"{host}:{port}".encode("idna"))


@dataclass
class Attempt:
    """One request to one upstream: an answer (status > 0) or an error."""

    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes | None = None  # the whole answer, when it was complete with its head
    error: str = ""
    conn: UpstreamConnection | None = None
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
        self.idle: dict[tuple[str, str, int], deque[UpstreamConnection]] = {}
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

    def _idle_limit(self, conn: UpstreamConnection) -> float:
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

    def give_back(self, conn: UpstreamConnection) -> None:
        conn.busy = False
        clean = conn.complete and conn.keep and not conn.closed and not conn.chunks and not conn.error
        if not clean or conn.body_cut:
            conn.close()
            return
        pool = self.idle.get(conn.origin_key)
        if pool is None:
            pool = self.idle[conn.origin_key] = deque()
        elif len(pool) >= MAX_IDLE_PER_ORIGIN:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        pool.append(conn)

    def take_idle(self, origin: Origin) -> UpstreamConnection | None:
        pool = self.idle.get(origin.key)
        now = time.monotonic()
        while pool:
            conn = pool.pop()
            limit = self.idle_s if conn.keep_alive_s is None else self._idle_limit(conn)
            if not conn.closed and now - conn.idle_since <= limit:
                return conn
            conn.close()
        return None

    async def _connection(self, origin: Origin) -> tuple[UpstreamConnection, bool]:
        conn = self.take_idle(origin)
        if conn is not None:
            return conn, True
        loop = asyncio.get_running_loop()
        tls = origin.scheme == "https"
        try:
            _, fresh = await asyncio.wait_for(
                loop.create_connection(
                    lambda: UpstreamConnection(loop, origin.key),
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
        return fresh, False

    async def send(
        self,
        method: str,
        url: str,
        path_qs: str,
        headers: bytes,
        body: bytes | BodySource | None,
        timeout_s: float,
        *,
        repeatable: bool,
    ) -> Attempt:
        """``headers``: the encoded header block (``canary.router.headers.request_headers``).

        ``repeatable``: the request is safe to send twice (the proxy's ``safe_to_repeat``, the rule
        failover follows).  Only such a request, with its body at hand, is sent again on a fresh
        connection when a reused one closes before any answer: the upstream may have done the work
        (a POST charged a card) and died before answering, so any other gets the error."""
        origin = origin_of(url)
        request = request_bytes(method, origin, path_qs, headers, body)
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
                if retry and repeatable and (body is None or isinstance(body, bytes)):
                    continue  # the upstream closed an idle connection as we sent: once more, fresh
                return Attempt(error=exc.kind)
        return Attempt(error="reset")

    async def _exchange(
        self, conn: UpstreamConnection, request: bytes, body: bytes | BodySource | None, timeout_s: float
    ) -> Attempt:
        assert conn.transport is not None
        if isinstance(body, bytes) or body is None:
            if body and len(body) > WRITE_JOINED:
                conn.transport.writelines((request, body))  # not copied: a held body can be 64 MB
            else:
                conn.transport.write(request + body if body else request)
        else:
            conn.transport.write(request)
            # answered before it took the whole body: the upstream still waits for the rest, and would
            # take the next request on this connection for it, so the connection is never reused
            conn.body_cut = not await _pump(conn, body)
        timer = conn.loop.call_later(timeout_s, conn._fail, "timeout")
        assert conn.head_ready is not None
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


def request_bytes(method: str, origin: Origin, path_qs: str, headers: bytes, body: bytes | BodySource | None) -> bytes:
    target = f"{method} {origin.prefix}{path_qs} HTTP/1.1\r\nhost: ".encode("latin-1")
    head = [target, origin.host_header, b"\r\n", headers]
    if isinstance(body, bytes):
        if body or method not in ("GET", "HEAD"):
            head.append(b"content-length: %d\r\n" % len(body))
    elif body is not None:
        head.append(
            b"content-length: %d\r\n" % body.length if body.length is not None else b"transfer-encoding: chunked\r\n"
        )
    head.append(b"\r\n")
    return b"".join(head)


async def _pump(conn: UpstreamConnection, body: BodySource) -> bool:
    """Stream a request body to the upstream, chunk-encoded when its length is unknown; False when
    it stopped before the body's end (the upstream answered or left first)."""
    assert conn.transport is not None
    chunked = body.length is None
    while chunk := await body.read():
        if conn.head_in or conn.closed:
            return False  # the upstream answered (or left) before taking the whole body
        conn.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
        await conn.drain()
    if chunked and not conn.closed:
        conn.transport.write(b"0\r\n\r\n")
    return True
