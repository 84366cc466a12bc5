"""One upstream connection of the router's pool (``canary.router.upstream``): an asyncio protocol
around httptools' response parser, carrying one exchange at a time.

It reads no faster than the proxy takes the answer (the socket is paused above ``HIGH_WATER``
buffered bytes), marks itself unusable on anything that could mix two answers up (bytes nobody
asked for, a second answer to one request, a HEAD answer whose body httptools cannot skip), and
remembers the upstream's ``Keep-Alive: timeout=N`` so the pool lets go of it in time.

An answer's head is bounded as a request's is (``canary.router.server``, same figures): headers
over ``MAX_HEADER_BYTES`` (64 KiB of names and values), or more than ``MAX_HEAD_BYTES`` (128 KiB)
received before the head is complete (interim 1xx heads included), are the error ``bad_response``
(the proxy answers 502, or fails a canary over to stable, and counts it against the track) and
close the connection.  The parser, which buffers a header until it ends, is fed nothing past that
limit: an upstream's endless head costs the router no more than that.

Per request on the fast path it allocates no future and no timer: the answer's head is reported
by a callback, and the head timeout is one timer per connection, armed for the earliest deadline
and moved on (not re-created) when it fires early for a request that has since been answered.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from typing import cast

import httptools

from canary.router.simple_heads import SimpleAnswer, simple_answer

# The fast path's callback: (this connection, the answer when it was simple and whole, its body);
# no answer: look at the connection's state (status, error, complete, chunks) as the parser left it.
Answered = Callable[["UpstreamConnection", SimpleAnswer | None, bytes], None]
HIGH_WATER = 256 * 1024  # buffered answer bytes above which the upstream socket is paused
MAX_HEADER_BYTES = 64 << 10  # an answer's header names and values together (as a request's)
MAX_HEAD_BYTES = 128 << 10  # an answer's head as received: its line, headers, separators and padding


class UpstreamError(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind  # "connect", "tls", "reset", "timeout", "bad_response", "too_large"


class _HeadTooLarge(Exception):
    """Raised from a parser callback (or around the parser) to stop it at once."""


class UpstreamConnection(asyncio.Protocol):
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
        self.notify: Answered | None = None  # the proxy's fast path: called once the head is in
        self.context: object = None  # the fast path's own state for this exchange, handed back with it
        self.timer: asyncio.TimerHandle | None = None  # the connection's one head-timeout timer
        self.deadline = 0.0  # loop time by which the fast path's head must be in
        self.timer_at = 0.0  # when the timer fires
        self._reset_exchange(head_only=False, waited=False)
        self._write_ready: asyncio.Future[None] | None = None

    def _reset_exchange(self, head_only: bool, waited: bool = True) -> None:
        """``waited``: a task awaits ``head_ready`` (the fast path's callback needs no future)."""
        self.fresh = True  # the exchange's state is its own (the fast path resets it only when needed)
        self.head_only = head_only
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0  # names and values, interim heads' included
        self.head_fed = 0  # bytes fed to the parser before the final head was complete
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.complete = False
        self.until_close = False
        self.keep = False
        self.framed = False  # a Content-Length or Transfer-Encoding header came
        self.error = ""
        self.got_bytes = False
        self.body_cut = False  # the request's body was not sent whole: never reuse the connection
        self.interim = False
        self.extra = False
        self.reading_paused = False
        self.waiter: asyncio.Future[None] | None = None
        self.head_ready: asyncio.Future[None] | None = self.loop.create_future() if waited else None

    # -- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        if not self.fresh:
            # the fast path's exchange: a simple whole answer skips the parser (and the reset)
            found = simple_answer(data)
            if found is not None and self.notify is not None:
                answer, body = found
                self.keep = answer.keep
                if answer.keep_alive_s is not None:
                    self.keep_alive_s = answer.keep_alive_s
                notify, self.notify = self.notify, None
                self.fresh = True
                notify(self, answer, body)
                return
            self._reset_exchange(head_only=False, waited=False)
        if not self.busy or self.complete:
            self.close()  # bytes nobody asked for: this connection can never be trusted again
            return
        self.got_bytes = True
        try:
            self._feed(data)
        except (httptools.HttpParserError, _HeadTooLarge):  # (a callback's error is the parser's)
            self._fail("bad_response")
        if self.notify is not None and (self.status or self.error):
            self._notify()

    def _feed(self, data: bytes) -> None:
        """Feed the parser; while the answer's head is incomplete, never past ``MAX_HEAD_BYTES``."""
        if self.status:  # the head is in: its body (a second answer is refused by on_message_begin)
            self.parser.feed_data(data)
            return
        room = max(MAX_HEAD_BYTES - self.head_fed, 0)
        self.head_fed += len(data)
        if len(data) <= room:
            self.parser.feed_data(data)
            return
        self.parser.feed_data(data[:room])  # the head may end within it, and a body follow
        if not self.status:
            raise _HeadTooLarge
        self.parser.feed_data(data[room:])

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.fresh:
            self._reset_exchange(head_only=False, waited=False)
        if self.until_close and self.status and not self.complete:
            self.complete = True  # an answer framed by the end of the connection (HTTP/1.0 style)
            self._wake()
        self._fail("tls" if isinstance(exc, ssl.SSLError) else "reset")
        if self.notify is not None:
            self._notify()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
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
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > MAX_HEADER_BYTES:
            raise _HeadTooLarge  # (httptools stops and raises its callback error)
        self.headers.append((name, value))
        lower = name.lower()
        if lower == b"content-length" or lower == b"transfer-encoding":
            self.framed = True
        elif lower == b"keep-alive":
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
        self.until_close = not self.framed and status not in (204, 304)
        if self.head_only:
            # httptools cannot be told that a HEAD answer has no body: take the head, drop the connection
            self.complete, self.keep = True, False
        if self.head_ready is not None and not self.head_ready.done():
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
        if self.head_ready is not None and not self.head_ready.done():
            self.head_ready.set_exception(UpstreamError(self.error))
            self.head_ready.exception()  # retrieved: nobody may be waiting any more
        self._wake()
        if kind == "bad_response":
            self.close()

    def start_fast(self, request: bytes, timeout_s: float, notify: Answered, context: object) -> None:
        """Send a bodiless GET and call ``notify`` (from the event loop's callback, no task) once
        its answer's head is in, or it failed, or ``timeout_s`` passed without a head.

        Only on a connection the pool gave out (its last exchange ended whole and clean): the
        exchange's state is reset only if the answer is not a simple whole one."""
        assert self.transport is not None
        self.busy = True
        self.fresh = False
        self.notify = notify
        self.context = context
        self.deadline = self.loop.time() + timeout_s
        if self.timer is None or self.deadline < self.timer_at:  # a shorter timeout than the last one's
            self._arm()
        self.transport.write(request)

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = self.deadline
        self.timer = self.loop.call_at(self.deadline, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.notify is None or self.closed:
            return  # nobody waits for a head: the timer is re-armed by the next request
        if self.loop.time() < self.deadline:
            self._arm()  # it was armed for an earlier request: on to this one's deadline
            return
        if not self.fresh:
            self._reset_exchange(head_only=False, waited=False)
        self._fail("timeout")
        self._notify()

    @property
    def head_in(self) -> bool:
        """The answer's head is in, or the exchange failed."""
        return self.status > 0 or bool(self.error)

    def _notify(self) -> None:
        notify, self.notify = self.notify, None
        if notify is not None:
            notify(self, None, b"")

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
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.close()
