"""The router's fast path: an HTTP/1.1 server at the protocol level (asyncio protocol, uvloop,
httptools' parser), with no framework layer around proxied requests.

Where it sits: it parses and frames; each proxied request goes to ``Proxy.handle`` with a
:class:`RequestHead`, its body as a stream and this connection as the :class:`ClientSide`; admin
and observability paths go whole to the router's Starlette app (``asgi_bridge.call_asgi``).

What it refuses with 400, never forwarding: malformed requests, both Content-Length and
Transfer-Encoding, a Transfer-Encoding other than ``chunked``, bad chunking, control characters
in header names or values, protocol upgrades, a request target over 16 KiB, more than 200 headers,
headers over ``MAX_HEADER_BYTES`` (names and values) or a head over ``MAX_HEAD_BYTES`` as sent
(the parser buffers a header whole: this bounds what one connection holds).  Pipelined requests
are answered in order.  Flow control both ways: a client's body is read no faster than the
upstream takes it, and an answer no faster than the client reads it.  Idle keep-alive connections
are closed after ``KEEP_ALIVE_S``, and a request head that takes longer than ``HEAD_TIMEOUT_S`` to
arrive (slowloris) is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

import httptools

from canary.router.answer_heads import answer_head
from canary.router.client_body import ClientBody
from canary.router.simple_heads import simple_request
from canary.router.wire import ClientGone, RequestHead, json_error

if TYPE_CHECKING:
    from canary.router.listener import RouterServer

log = logging.getLogger("releasewarden.router")
KEEP_ALIVE_S = 75.0  # longer than clients keep theirs (httpx: 5 s), so the client gives up first
HEAD_TIMEOUT_S = 15.0
ADMIN_PATHS = ("/healthz", "/readyz", "/metrics", "/_router")
ADMIN_BODY_MAX = 2 << 20
MAX_HEADER_BYTES = 64 << 10  # a request's header names and values together
MAX_HEAD_BYTES = 128 << 10  # a request head as sent: its line, headers, separators and padding
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


async def _run_out(work: Coroutine[Any, Any, None]) -> None:
    try:
        await work
    except Exception:
        log.debug("a request whose client left ended in an error", exc_info=True)


class _Refused(Exception):
    pass


class ClientConnection(asyncio.Protocol):
    def __init__(self, server: RouterServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client = ""
        self.closed = False
        self.pending: deque[tuple[RequestHead, ClientBody, bool] | str | Coroutine[Any, Any, None]] = deque()
        self.worker: asyncio.Task[None] | None = None  # one per connection, kept while it lives
        self.more: asyncio.Future[None] | None = None  # the worker waits on it for the next request
        self.busy = False  # a request is being answered
        self.fast = False  # ... by the proxy's fast path (no task)
        self.parsing: ClientBody | None = None
        self.mid_message = False  # httptools' parser holds part of a request: it must get what follows
        self.head_started = 0.0  # when the request head being read began (0: none)
        self.last_active = time.monotonic()
        self.input_paused = False
        self.eof = False
        self.write_ready: asyncio.Future[None] | None = None
        # A bodiless request's body is complete from the start and never changes (finish() keeps no
        # error on a complete body): one per connection serves all of them.
        self.no_body = ClientBody(self, 0, False)
        self._reset_head()
        # the answer being written
        self.keep = True
        self.current: ClientBody | None = None
        self.chunked_out = False
        self.started = False

    def _reset_head(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0  # names and values
        self.head_fed = 0  # bytes fed while this head was incomplete, bar the chunk it began in

    # -- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if isinstance(peer, tuple) else ""
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.parsing is not None:
            self.parsing.finish("client_gone")
        for item in self.pending:
            if isinstance(item, tuple):
                item[1].finish("client_gone")
            elif not isinstance(item, str):  # a fast-path continuation: run it out, to release what it holds
                self.loop.create_task(_run_out(item))
        self.pending.clear()
        if self.write_ready is not None and not self.write_ready.done():
            self.write_ready.set_result(None)
        if self.more is not None and not self.more.done():
            self.more.set_result(None)

    def eof_received(self) -> bool | None:
        # A client that half-closes after its request still gets the answer; then the connection ends.
        self.eof = True
        if self.parsing is not None:
            self.parsing.finish("client_gone")
            self.parsing = None
        return True if self.busy or self.pending else None

    def data_received(self, data: bytes) -> None:
        if not (self.busy or self.fast or self.pending or self.mid_message or self.closed):
            # The common case, one whole simple GET head (``simple_heads``), skips the parser's
            # callbacks; anything else, and anything the proxy hands back, goes to the parser.
            found = simple_request(data, self.client)
            if found is not None:
                target, request = found
                self.busy, self.fast, self.keep, self.current = True, True, request.keep, self.no_body
                if self.server.try_fast(target, request, self):  # (``started`` is set when it answers)
                    return
                self.busy, self.fast = False, False
        if self.head_started:  # a head begun in an earlier chunk, still incomplete: all before was its
            if self.head_fed > MAX_HEAD_BYTES:
                self._refuse(f"request head over {MAX_HEAD_BYTES >> 10} KiB")
                return
            self.head_fed += len(data)  # (a new head begun in this chunk starts again from 0)
        try:
            self.parser.feed_data(data)
        except _Refused as exc:
            self._refuse(str(exc))
        except httptools.HttpParserUpgrade:
            self._refuse("protocol upgrades (WebSocket, h2c) are not supported")
        except httptools.HttpParserError as exc:
            cause = exc.__context__ if isinstance(exc.__context__, _Refused) else exc
            self._refuse(f"malformed request: {cause}")

    def pause_writing(self) -> None:
        self.write_ready = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.write_ready is not None and not self.write_ready.done():
            self.write_ready.set_result(None)
        self.write_ready = None

    # -- httptools callbacks ---------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.mid_message = True
        self.head_started = time.monotonic()
        self._reset_head()

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > 16384:
            raise _Refused("request target over 16 KiB")

    def on_header(self, name: bytes, value: bytes) -> None:
        if _BAD_VALUE.search(value) or _BAD_VALUE.search(name):
            raise _Refused("control character in a header")
        self.headers.append((name, value))
        if len(self.headers) > 200:
            raise _Refused("more than 200 headers")
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > MAX_HEADER_BYTES:
            raise _Refused(f"request headers over {MAX_HEADER_BYTES >> 10} KiB")

    def on_headers_complete(self) -> None:
        self.head_started = 0.0
        if self.parser.should_upgrade():
            raise _Refused("protocol upgrades (WebSocket, h2c) are not supported")
        path, _, query = self.url.partition(b"?")
        if not path.startswith(b"/"):
            raise _Refused("request target must be a path")
        length: int | None = 0
        expect = False
        for name, value in self.headers:
            lower = name.lower()
            if lower == b"content-length":
                length = int(value)  # digits only: the parser has checked
            elif lower == b"transfer-encoding":
                if value.strip().lower() != b"chunked" or length is None:
                    raise _Refused("Transfer-Encoding other than a single 'chunked'")
                length = None
            elif lower == b"expect" and value.lower() == b"100-continue":
                expect = True
        head = RequestHead(
            self.parser.get_method().decode("ascii"),
            path.decode("latin-1"),
            query.partition(b"#")[0].decode("latin-1"),
            self.headers,
            self.client,
        )
        body = self.no_body if length == 0 else ClientBody(self, length, expect)
        self.parsing = body
        self.pending.append((head, body, self.parser.should_keep_alive()))
        if length != 0:
            self._schedule()  # a body to stream: the handler starts now (bodiless ones: when complete)

    def on_body(self, body: bytes) -> None:
        if self.parsing is not None:
            self.parsing.feed(body)

    def on_message_complete(self) -> None:
        self.mid_message = False
        body = self.parsing
        if body is None:
            return
        body.finish()
        self.parsing = None
        if body.length == 0:
            self._schedule()  # a bodiless request the parser read: the connection's task answers it

    # -- the proxy's fast path (FastClientSide) --------------------------------------------------
    def answer_now(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.write_raw(self._head(status, headers, b"") + body)

    def finish(self, answer: bytes) -> None:
        self.started = True
        if not self.closed:
            self.transport.write(answer)  # type: ignore[union-attr]  # set before any request
        self.done()

    def done(self) -> None:
        self.fast = self.busy = False
        if not self.keep or (self.eof and not self.pending):
            self.close()
            return
        self.last_active = time.monotonic()
        if self.pending:
            self._schedule()

    def continue_async(self, work: Coroutine[Any, Any, None]) -> None:
        self.started, self.chunked_out = False, False  # nothing of its answer has gone out yet
        if self.closed:
            work.close()
            self.fast = self.busy = False
            return
        self.pending.appendleft(work)
        self.fast = self.busy = False
        self._schedule()

    # -- answering -------------------------------------------------------------------------------
    def _refuse(self, message: str) -> None:
        log.info("refused a request from %s: %s", self.client, message)
        if self.transport is not None:
            self.transport.pause_reading()  # nothing after a framing error can be trusted
        if self.parsing is not None and not self.parsing.complete:
            self.parsing.finish("bad_body")
            self.parsing = None
            if self.busy:
                self.pending.append("")  # the handler answers 400 for its own body; then close
                return
        self.pending.append(message)
        self._schedule()

    def _schedule(self) -> None:
        # One task per connection, waiting on a future between requests: cheaper than a task each.
        if self.fast:
            return  # a fast-path answer is on its way: the next request waits for it
        if self.worker is None:
            self.worker = self.loop.create_task(self._work())
        elif self.more is not None and not self.more.done():
            self.more.set_result(None)

    async def _work(self) -> None:
        try:
            while not self.closed:
                if not self.pending:
                    self.busy = False
                    self.more = self.loop.create_future()
                    await self.more
                    self.more = None
                    continue
                self.busy = True
                item = self.pending.popleft()
                if isinstance(item, str):
                    if item:
                        self.keep, self.started, self.current = False, False, None
                        await self.answer(*json_error(400, "bad_request", item))
                    self.close()
                    return
                if isinstance(item, tuple):
                    head, body, self.keep = item
                    self.current = body
                    self.started, self.chunked_out = False, False
                    await self.server.handle(head, body, self)
                else:  # a fast-path request continued here: its state is already set
                    assert self.current is not None
                    body = self.current
                    await item
                if not body.complete or body.error:
                    self.close()  # an unread body: the next request would start inside it
                    return
                if not self.keep or (self.eof and not self.pending):
                    self.close()
                    return
                self.last_active = time.monotonic()
        except ClientGone:
            self.close()
        except Exception:
            log.exception("the router failed on a request")
            if not self.started and not self.closed:
                self.keep = False
                await self.answer(*json_error(500, "internal_error", "router error"))
            self.close()
        finally:
            self.busy = False

    def _head(self, status: int, headers: list[tuple[bytes, bytes]], extra: bytes) -> bytes:
        self.started = True
        return answer_head(status, headers, self.keep, extra)

    async def answer(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        current = self.current
        if current is not None and (not current.complete or current.error):
            self.keep = False  # answered before its body arrived: the connection cannot go on
        self.write_raw(self._head(status, headers, b"") + body)
        await self._drain()

    async def start(self, status: int, headers: list[tuple[bytes, bytes]], chunked: bool) -> None:
        if chunked and self.parser.get_http_version() == "1.1":
            self.chunked_out = True
            self.write_raw(self._head(status, headers, b"transfer-encoding: chunked\r\n"))
        else:
            self.keep = self.keep and not chunked  # HTTP/1.0: the end of the answer is the end of the connection
            self.write_raw(self._head(status, headers, b""))

    async def write(self, chunk: bytes) -> None:
        if self.closed:
            raise ClientGone
        self.write_raw(b"%x\r\n%b\r\n" % (len(chunk), chunk) if self.chunked_out else chunk)
        await self._drain()

    async def end(self) -> None:
        if self.chunked_out:
            self.write_raw(b"0\r\n\r\n")

    def abort(self) -> None:
        self.keep = False
        self.close()

    def write_raw(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    async def _drain(self) -> None:
        if self.write_ready is not None:
            await self.write_ready
        if self.closed:
            raise ClientGone

    def pause_input(self) -> None:
        if not self.input_paused and self.transport is not None:
            self.input_paused = True
            self.transport.pause_reading()

    def resume_input(self) -> None:
        if self.input_paused and self.transport is not None and not self.closed:
            self.input_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True
