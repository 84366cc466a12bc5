"""ASGI at the router's two edges.

- ``call_asgi``: the protocol server hands admin and observability requests (``/healthz``,
  ``/metrics``, ``/_router/*``) to the router's Starlette app, whole: they are small and rare.
- ``AsgiBody`` and ``AsgiClient``: the router hosted by any ASGI server (``serve_in_thread``, or
  ``httpx.ASGITransport`` in-process) proxies through the same :class:`canary.router.proxy.Proxy`
  as the protocol server, with the ASGI server's own framing.  The fast path is the protocol
  server (``python -m canary.router``); this one exists for embedding.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from canary.router.wire import BodyError, ClientGone, RequestHead


async def call_asgi(app: ASGIApp, head: RequestHead, body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": head.method,
        "scheme": head.scheme,
        "path": unquote(head.path),
        "raw_path": head.path.encode("latin-1"),
        "query_string": head.query.encode("latin-1"),
        "root_path": "",
        "headers": [(k.lower(), v) for k, v in head.headers],
        "client": (head.client, 0),
        "server": None,
        "state": {},
    }
    sent = False
    status = 500
    headers: list[tuple[bytes, bytes]] = []
    parts: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status, headers = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))

    await app(scope, receive, send)
    payload = b"".join(parts)
    headers = [(k, v) for k, v in headers if k.lower() not in (b"content-length", b"transfer-encoding")]
    headers.append((b"content-length", str(len(payload)).encode()))
    return status, headers, payload


def head_of(scope: Scope) -> RequestHead:
    client = scope.get("client") or ("", 0)
    return RequestHead(
        method=scope["method"],
        path=scope.get("raw_path", b"").decode("latin-1").partition("?")[0] or scope["path"],
        query=scope["query_string"].decode("latin-1"),
        headers=list(scope["headers"]),
        client=client[0],
        scheme=scope.get("scheme", "http"),
    )


class AsgiBody:
    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.receive = receive
        self.done = False
        headers = {k.lower(): v for k, v in scope["headers"]}
        declared = headers.get(b"content-length", b"")
        if declared.strip().isdigit():
            self.length: int | None = int(declared)
        else:
            self.length = None if b"transfer-encoding" in headers else 0

    async def read(self) -> bytes:
        while not self.done:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise BodyError("client_gone")
            self.done = not message.get("more_body", False)
            chunk: bytes = message.get("body", b"")
            if chunk:
                return chunk
        return b""


class AsgiClient:
    def __init__(self, send: Send) -> None:
        self.send = send

    async def answer(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        await self.start(status, headers, chunked=False)
        await self._send({"type": "http.response.body", "body": body})

    async def start(self, status: int, headers: list[tuple[bytes, bytes]], chunked: bool) -> None:
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def write(self, chunk: bytes) -> None:
        await self._send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def end(self) -> None:
        await self._send({"type": "http.response.body", "body": b""})

    def abort(self) -> None:
        pass  # the ASGI server closes the connection when the app returns without ending the body

    async def _send(self, message: dict[str, Any]) -> None:
        try:
            await self.send(message)
        except OSError:
            raise ClientGone from None
