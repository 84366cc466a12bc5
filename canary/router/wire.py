"""What the proxy knows of the client's side of an exchange, whichever front end carried it.

The protocol server (``canary.router.server``, the fast path) and the ASGI adapter
(``canary.router.app``, for in-process use) both hand the proxy a :class:`RequestHead`, a request
body to read, and a :class:`ClientSide` to answer on; the proxy (``canary.router.proxy``) never
sees sockets or ASGI messages.
"""

from __future__ import annotations

import json
from collections.abc import Coroutine
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol

REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


class BodyError(Exception):
    """The client's request body could not be read to its end."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind  # "too_large", "bad_body" (bad chunking), "client_gone"


class ClientGone(Exception):
    """The client closed its connection while being answered."""


@dataclass
class RequestHead:
    method: str
    path: str  # without the query
    query: str  # without the "?"
    headers: list[tuple[bytes, bytes]]  # as received
    client: str
    scheme: str = "http"

    @property
    def path_qs(self) -> str:
        return self.path + "?" + self.query if self.query else self.path


class RequestBody(Protocol):
    length: int | None  # declared Content-Length (0: no body); None: chunked

    async def read(self) -> bytes:
        """The next chunk; b"" once complete.  Raises BodyError."""
        ...


class ClientSide(Protocol):
    async def answer(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """A whole answer; ``headers`` carry its framing (content-length) already."""
        ...

    async def start(self, status: int, headers: list[tuple[bytes, bytes]], chunked: bool) -> None:
        """The head of a streamed answer; ``chunked``: its length is unknown."""
        ...

    async def write(self, chunk: bytes) -> None:
        """Raises ClientGone."""
        ...

    async def end(self) -> None: ...

    def abort(self) -> None:
        """Close the client's connection: a streamed answer broke off and cannot be finished."""
        ...


class FastClientSide(ClientSide, Protocol):
    """The protocol server's connection, for the proxy's fast path (no task per request)."""

    closed: bool
    keep: bool  # the client keeps its connection after this answer

    def answer_now(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """A whole answer, written from a callback."""
        ...

    def finish(self, answer: bytes) -> None:
        """A whole answer already encoded, head and body, written from a callback; then :meth:`done`."""
        ...

    def done(self) -> None:
        """The fast-path request is answered: on to the next one."""
        ...

    def continue_async(self, work: Coroutine[Any, Any, None]) -> None:
        """The request needs more than a callback (streaming, failover, a fresh connection): run
        ``work`` in the connection's task, in order, as if it had gone there from the start."""
        ...


def json_error(
    status: int, code: str, message: str, detail: Any = None
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    error: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        error["detail"] = detail
    payload = json.dumps({"error": error}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    return status, headers, payload


class _NoBody:
    """The body of a bodiless request (the fast path's, handed on to the task path)."""

    length: int | None = 0
    complete = True
    error = ""

    async def read(self) -> bytes:
        return b""


NO_BODY = _NoBody()


def bodyless(method: str, status: int) -> bool:
    return method == "HEAD" or status in (204, 304) or 100 <= status < 200


async def read_all(body: RequestBody, cap: int) -> bytes:
    """A whole request body, refusing (``too_large``) past ``cap`` bytes."""
    parts: list[bytes] = []
    size = 0
    while chunk := await body.read():
        size += len(chunk)
        if size > cap:
            raise BodyError("too_large")
        parts.append(chunk)
    return b"".join(parts)
