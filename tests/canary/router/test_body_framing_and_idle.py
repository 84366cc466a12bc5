"""Two README promises about the router ("The router": "Framing" and "Upstream connections"), each
observed from outside the router: everything is real HTTP over TCP on 127.0.0.1 (a router
protocol server in a thread of this process, a uvicorn or raw-socket upstream, a raw client socket).

- A chunked request body up to 256 KiB (``CHUNKED_PREFETCH``) is read whole first and goes upstream
  with a Content-Length and no Transfer-Encoding; one just over it is still forwarded intact,
  streamed with ``Transfer-Encoding: chunked`` (its length is not known when its head goes out).
- An idle upstream connection is dropped after ``router_upstream_idle_s`` (``CANARY_ROUTER_UPSTREAM_IDLE_S``)
  when the upstream sends no ``Keep-Alive`` header: requests in quick succession share one TCP
  connection, a request after a longer idle gap opens a new one, and the router closes the idle one
  by itself.  (The ``Keep-Alive: timeout=N`` path is in ``test_framing_and_upstream_safety.py``.)
"""

from __future__ import annotations

import hashlib
import json
import socket
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from core.serve import serve_in_thread
from core.settings import Settings
from tests.canary.router.test_framing_and_upstream_safety import TOKEN, ok, routed
from tests.canary.router.upstreams import RawUpstream

KIB = 1024
PREFETCH = 256 * KIB  # the README's figure (canary.router.request_bodies.CHUNKED_PREFETCH)
IDLE_S = 0.5  # router_upstream_idle_s for the idle test: far from the 4 s default


def recording_app() -> Starlette:
    """An upstream that answers with the header lines it received (as sent, duplicates kept) and the
    size and SHA-256 of the body it read."""

    async def record(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse(
            {
                "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers.raw],
                "size": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
            }
        )

    return Starlette(routes=[Route("/{path:path}", record, methods=["POST"])])


@pytest.fixture(scope="module")
def recorder():
    with serve_in_thread(recording_app()) as url:
        yield url


def body_of(size: int) -> bytes:
    """``size`` bytes that are not all alike, so a lost, repeated or reordered piece shows in the hash."""
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def post_chunked(router_url: str, pieces: list[bytes]) -> dict:
    """POST the pieces as one chunked body, each chunk in its own write, and return the upstream's
    JSON record of what reached it."""
    host, port = router_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /svc/up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        for piece in pieces:
            s.sendall(b"%x\r\n%b\r\n" % (len(piece), piece))
            time.sleep(0.01)  # separate writes, so the router reads the body in several parts
        s.sendall(b"0\r\n\r\n")
        answer = b""
        while data := s.recv(65536):
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), answer[:300]
    return json.loads(body)


def values(record: dict, name: str) -> list[str]:
    return [v for k, v in record["headers"] if k.lower() == name]


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize(
    "pieces",
    [
        pytest.param([body_of(4000), body_of(3000), body_of(3000)], id="10kB-in-3-chunks"),
        pytest.param(split(body_of(PREFETCH), 64 * KIB), id="exactly-256KiB"),
    ],
)
def test_a_chunked_body_up_to_256_kib_goes_upstream_whole_with_a_content_length(recorder, pieces):
    whole = b"".join(pieces)
    with routed({"stable": recorder}) as (url, _):
        seen = post_chunked(url, pieces)
    assert values(seen, "content-length") == [str(len(whole))]
    assert values(seen, "transfer-encoding") == []
    assert seen["size"] == len(whole) and seen["sha256"] == hashlib.sha256(whole).hexdigest()


def test_a_chunked_body_just_over_256_kib_is_streamed_upstream_intact(recorder):
    whole = body_of(PREFETCH + 1)
    with routed({"stable": recorder}) as (url, _):
        seen = post_chunked(url, split(whole, 64 * KIB))  # four 64 KiB chunks and a 1-byte one
    # too large to hold first: its length is unknown when the head goes out, so it stays chunked
    assert values(seen, "transfer-encoding") == ["chunked"]
    assert values(seen, "content-length") == []
    assert seen["size"] == len(whole) and seen["sha256"] == hashlib.sha256(whole).hexdigest()


class ClosingWatchedUpstream(RawUpstream):
    """A raw upstream (never closes a connection itself, sends no Keep-Alive header) that also counts
    the connections its peer, the router, closed."""

    def __init__(self) -> None:
        self.closed_by_router = 0
        super().__init__(lambda path: ok(path.encode()))

    def _serve(self, conn: socket.socket) -> None:
        super()._serve(conn)  # returns when the router closes (EOF or reset), or at close()
        if not self._stop:
            self.closed_by_router += 1


def wait_until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_an_idle_upstream_connection_is_dropped_after_the_idle_setting_and_reused_before():
    upstream = ClosingWatchedUpstream()
    settings = Settings(admin_token=TOKEN, router_upstream_idle_s=IDLE_S)
    try:
        with routed({"stable": upstream.url}, settings) as (url, _), httpx.Client(base_url=url) as client:
            for i in range(5):  # in quick succession: one upstream connection
                assert client.get(f"/svc/burst{i}").text == f"/burst{i}"
            assert upstream.connections == 1
            time.sleep(3 * IDLE_S)  # the stimulus: idle for three times the setting (4 s default: kept)
            # dropped by the router itself, before any request asks for it
            wait_until(lambda: upstream.closed_by_router == 1, 2.0, "the idle connection was kept past the setting")
            assert client.get("/svc/after-gap").text == "/after-gap"
            assert upstream.connections == 2  # a new connection, not the dropped one
            for i in range(5):  # and that one is reused again while busy
                assert client.get(f"/svc/again{i}").text == f"/again{i}"
            assert upstream.connections == 2
    finally:
        upstream.close()
