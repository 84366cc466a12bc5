"""What the router's header work holds stays bounded, over real sockets: header sets whose raw
headers are large (hop-by-hop or named in ``Connection``, so that they never reach the encoded
block) are not remembered by ``canary.router.headers``, and request heads over the protocol
server's header limits are refused with 400 before they are buffered whole."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time

import httpx

from canary.router import headers
from canary.router.app import create_router, serve_router_in_thread
from canary.router.server import MAX_HEAD_BYTES, MAX_HEADER_BYTES
from core.settings import Settings
from tests.canary.router.upstreams import RawUpstream, http_exchange

TOKEN = "t"


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\n%bContent-Length: %d\r\n\r\n%b" % (extra, len(body), body)


@contextlib.contextmanager
def routed(upstream: str):
    router = create_router(Settings(admin_token=TOKEN))
    with serve_router_in_thread(router) as url:
        table = {"version": 1, "services": {"svc": {"upstreams": {"stable": upstream}}}}
        r = httpx.put(f"{url}/_router/table", content=json.dumps(table), headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200, r.text
        yield url


def key_bytes(raw: tuple[tuple[bytes, bytes], ...]) -> int:
    return sum(len(name) + len(value) for name, value in raw)


def test_large_distinct_hop_by_hop_headers_never_grow_the_header_caches() -> None:
    # Each request carries 40 KB of its own Proxy-Authorization and of a header its Connection
    # names; each answer 20 KB of its own Proxy-Authenticate: none of it is forwarded, all of it
    # would be in a cache key.
    def answer(path: str) -> bytes:
        return ok(path.encode(), b"Proxy-Authenticate: Basic %b%b\r\n" % (path.encode(), b"a" * 20_000))

    upstream = RawUpstream(answer)
    headers._requests.clear()
    headers._responses.clear()
    try:
        with routed(upstream.url) as url, httpx.Client(base_url=url, timeout=10) as client:
            for i in range(40):
                r = client.get(
                    f"/svc/p{i}",
                    headers={
                        "Proxy-Authorization": f"Basic {i}" + "p" * 20_000,
                        "Connection": "keep-alive, x-private",
                        "X-Private": f"{i}" + "x" * 20_000,
                    },
                )
                assert r.status_code == 200 and r.text == f"/p{i}"
                assert "proxy-authenticate" not in r.headers
            small = client.get("/svc/small", headers={"X-Account-Id": "a"})
            assert small.status_code == 200 and small.text == "/small"
        for name in (b"proxy-authorization", b"x-private"):
            assert not any(name in line.lower() for head in upstream.requests for line in head.split(b"\r\n"))
        requests, responses = list(headers._requests), list(headers._responses)
        assert all(key_bytes(raw) <= headers.CACHED_BYTES for raw, _, _ in requests)
        assert all(key_bytes(raw) <= headers.CACHED_BYTES for raw in responses)
        assert sum(key_bytes(raw) for raw, _, _ in requests) <= 2 * headers.CACHED_BYTES  # only small sets
        assert sum(key_bytes(raw) for raw in responses) <= 2 * headers.CACHED_BYTES
        small_sets = [dict((n.lower(), v) for n, v in raw) for raw, _, _ in requests]
        assert any(named.get(b"x-account-id") == b"a" for named in small_sets)  # small sets still remembered
    finally:
        upstream.close()


def test_request_headers_up_to_the_limit_pass_and_over_it_get_400_never_forwarded() -> None:
    upstream = RawUpstream(lambda path: ok(path.encode()))
    try:
        with routed(upstream.url) as url:
            # just under the limit, in many headers, the head arriving in several reads
            fields = b"".join(b"X-H%d: %b\r\n" % (i, b"v" * 1000) for i in range(60))
            answer = http_exchange(url, b"GET /svc/fine HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%b\r\n" % fields)
            assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"/fine"), answer[:200]
            over = b"X-Big: " + b"v" * (MAX_HEADER_BYTES + 1) + b"\r\n"
            answer = http_exchange(url, b"GET /svc/big HTTP/1.1\r\nHost: x\r\n%b\r\n" % over)
            assert answer.startswith(b"HTTP/1.1 400 ") and b"request headers over 64 KiB" in answer, answer[:200]
        assert [r.split(b" ")[1] for r in upstream.requests] == [b"/fine"]
    finally:
        upstream.close()


def test_an_endless_header_is_refused_before_the_router_buffers_it_whole() -> None:
    # One header that never ends: the parser would hold it all until the head timeout (15 s).
    upstream = RawUpstream(lambda path: ok(path.encode()))
    try:
        with routed(upstream.url) as url:
            host, port = url.removeprefix("http://").split(":")
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(b"GET /svc/endless HTTP/1.1\r\nHost: x\r\nX-Endless: ")
                sent, started = 0, time.monotonic()
                while not select.select([s], [], [], 0.01)[0]:
                    assert sent < 8 * MAX_HEAD_BYTES, "still reading the head"
                    s.sendall(b"e" * 16384)
                    sent += 16384
                answer = b""
                with contextlib.suppress(ConnectionResetError):
                    while chunk := s.recv(65536):
                        answer += chunk
            assert answer.startswith(b"HTTP/1.1 400 ") and b"request head over 128 KiB" in answer, answer[:200]
            assert MAX_HEAD_BYTES < sent <= 4 * MAX_HEAD_BYTES and time.monotonic() - started < 5
        assert upstream.requests == []
    finally:
        upstream.close()
