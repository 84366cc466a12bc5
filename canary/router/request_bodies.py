"""Request bodies on their way upstream: streamed under the router's body limit, prefetched when
chunked, or held whole for failover within one budget across all requests.

Where it sits: the proxy (``canary.router.proxy``) chooses, per request, how its body goes; the
upstream pool (``canary.router.upstream``) sends bytes whole or reads a :class:`Limited` as it goes.

Failover budget: a body that may have to be sent a second time (to stable, when the canary fails)
is held whole until it has been; all such bodies together hold at most ``HeldBodies.limit`` bytes
(``router_failover_buffer_bytes``, 256 MiB by default).  A body that does not fit what is left is not refused: it
streams to its track as any other (what was read of it first, then the rest), without failover,
and the proxy counts it (``unbuffered``).  A reservation lasts until the body is no longer needed
and is given back however the request ends (an error, a client gone, a cancellation).
"""

from __future__ import annotations

from canary.router.wire import BodyError, RequestBody, read_all

CHUNKED_PREFETCH = 256 * 1024


class Limited:
    """A streamed request body that stops with ``too_large`` past the router's limit; ``first``:
    what was already read of it, sent before the rest."""

    def __init__(self, body: RequestBody, limit: int, first: bytes = b"") -> None:
        self.body = body
        self.length = body.length
        self.limit = limit
        self.size = 0
        self.first = first

    async def read(self) -> bytes:
        chunk, self.first = (self.first, b"") if self.first else (await self.body.read(), b"")
        self.size += len(chunk)
        if self.size > self.limit:
            raise BodyError("too_large")
        return chunk


async def prefetch(body: RequestBody, limit: int) -> bytes | Limited:
    """A chunked body whole when it is small (then sent with a Content-Length: bad chunking is found
    before anything goes upstream), else streamed on from what was read."""
    parts: list[bytes] = []
    size = 0
    while size <= CHUNKED_PREFETCH:
        chunk = await body.read()
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        size += len(chunk)
    return Limited(body, limit, b"".join(parts))


class HeldBodies:
    """The bytes of request bodies held for failover, against one limit for the whole router."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> bool:
        """Reserve ``size`` bytes; False (nothing reserved) when they do not fit what is left."""
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size

    async def hold(self, body: RequestBody, limit: int) -> tuple[bytes | Limited, int]:
        """(the body, the bytes reserved for it): the body whole when it fits the budget, else a
        :class:`Limited` that streams it on from what was read.  The caller gives the reservation
        back (:meth:`give_back`) once the body is no longer needed; on an exception it is given back
        here."""
        if body.length is not None:  # (within ``limit``: the proxy checked the declared length)
            if not self.take(body.length):
                return Limited(body, limit), 0
            try:
                return await read_all(body, limit), body.length
            except BaseException:
                self.give_back(body.length)
                raise
        parts: list[bytes] = []
        size = reserved = 0
        try:
            while chunk := await body.read():
                size += len(chunk)
                if size > limit:
                    raise BodyError("too_large")
                parts.append(chunk)
                if not self.take(len(chunk)):
                    return Limited(body, limit, b"".join(parts)), reserved
                reserved += len(chunk)
        except BaseException:
            self.give_back(reserved)
            raise
        return b"".join(parts), reserved
