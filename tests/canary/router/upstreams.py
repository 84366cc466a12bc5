"""Small real upstreams for router tests: each reports which track it is and what it received."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


def echo_app(track: str, fail: bool = False, delay_s: float = 0.0) -> Starlette:
    async def echo(request: Request) -> Response:
        if delay_s:
            await asyncio.sleep(delay_s)
        body = await request.body()
        if fail or request.url.path.startswith("/fail"):
            return JSONResponse({"track": track, "error": "boom", "body_bytes": len(body)}, status_code=500)
        return JSONResponse(
            {
                "track": track,
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "headers": dict(request.headers),
                "body_bytes": len(body),
                "body_head": body[:40].decode("latin-1"),
            }
        )

    async def stream(request: Request) -> Response:
        async def chunks():  # type: ignore[no-untyped-def]
            for i in range(5):
                yield f"chunk-{i};".encode()

        return StreamingResponse(chunks(), media_type="text/plain")  # chunked: no content-length

    return Starlette(
        routes=[
            Route("/stream", stream, methods=["GET"]),
            Route("/{path:path}", echo, methods=["GET", "POST", "PUT", "HEAD", "DELETE"]),
        ]
    )


class RawUpstream:
    """A TCP upstream that answers each GET with whatever bytes ``answer(path)`` returns, as they
    are: for malformed, hostile or oddly framed answers no HTTP server would send.  Keeps every
    connection open after answering (so junk left on it could be taken for the next answer) and
    records the requests it received.  ``read_bodies``: after answering, take the request's body
    (its Content-Length) before the next request, as a server that answers early does."""

    def __init__(self, answer: Callable[[str], bytes], read_bodies: bool = False) -> None:
        self.answer = answer
        self.read_bodies = read_bodies
        self.body_bytes = 0  # request body bytes taken (read_bodies)
        self.requests: list[bytes] = []
        self.connections = 0
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = False
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        with contextlib.suppress(OSError):
            while not self._stop:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                self.requests.append(head)
                path = head.split(b" ")[1].decode("latin-1")
                conn.sendall(self.answer(path))
                length = _content_length(head) if self.read_bodies else 0
                while length > 0:
                    if not buffer:
                        buffer = conn.recv(65536)
                        if not buffer:
                            return
                    taken, buffer = buffer[:length], buffer[length:]
                    length -= len(taken)
                    self.body_bytes += len(taken)

    def close(self) -> None:
        self._stop = True
        self._sock.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.close()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def http_exchange(url: str, raw: bytes, timeout_s: float = 10.0) -> bytes:
    """Send raw bytes to a server and read until it closes (or ``timeout_s``: then raise)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout_s) as s:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


class CloseSecondUpstream:
    """A TCP upstream that answers the first request of each connection (201, kept open) and, on
    the second, reads it whole, records it and closes without answering: a process that did the work
    and died before it answered.  ``received``: each request's target and body, in arrival order."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        with contextlib.suppress(OSError), conn:
            for number in (1, 2):
                request = _read_request(conn, buffer)
                if request is None:
                    return
                target, body, buffer = request
                self.received.append((target, body))
                if number == 1:
                    conn.sendall(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok")

    def close(self) -> None:
        self._sock.close()


def _read_request(conn: socket.socket, buffer: bytes) -> tuple[str, bytes, bytes] | None:
    """(target, body, what followed) of the next request, its body framed by length or chunks."""

    def more() -> bytes:
        data = conn.recv(65536)
        if not data:
            raise OSError("closed")
        return data

    try:
        while b"\r\n\r\n" not in buffer:
            buffer += more()
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        if b"transfer-encoding: chunked" in head.lower():
            body = b""
            while True:
                while b"\r\n" not in buffer:
                    buffer += more()
                size_line, _, buffer = buffer.partition(b"\r\n")
                size = int(size_line, 16)
                while len(buffer) < size + 2:
                    buffer += more()
                body, buffer = body + buffer[:size], buffer[size + 2 :]
                if size == 0:
                    break
        else:
            length = _content_length(head)
            while len(buffer) < length:
                buffer += more()
            body, buffer = buffer[:length], buffer[length:]
    except OSError:
        return None
    return head.split(b" ")[1].decode("latin-1"), body, buffer
