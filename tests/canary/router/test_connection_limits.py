"""The protocol server's limits, each observed from a real socket: a request head that trickles in
and an idle keep-alive connection are closed (timeouts shortened for the test), ``Expect:
100-continue`` is answered by the router, large chunked bodies stream while bad chunking is refused,
and answers over the buffer cap are not held for a mirror comparison."""

from __future__ import annotations

import contextlib
import json
import socket
import time

import httpx
import pytest

from canary.router import listener
from canary.router.app import create_router, serve_router_in_thread
from core.serve import serve_in_thread
from core.settings import Settings
from tests.canary.router.test_slow_and_large import read_answer
from tests.canary.router.upstreams import RawUpstream, echo_app, http_exchange

TOKEN = "t"


@contextlib.contextmanager
def routed(upstreams: dict[str, str], settings: Settings | None = None, **route: object):
    router = create_router(settings or Settings(admin_token=TOKEN))
    with serve_router_in_thread(router) as url:
        table = {"version": 1, "services": {"svc": {"upstreams": upstreams, **route}}}
        r = httpx.put(f"{url}/_router/table", content=json.dumps(table), headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200, r.text
        yield url, router


def closed_within(sock: socket.socket, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            if sock.recv(4096) == b"":
                return True
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True
    return False


@pytest.fixture(scope="module")
def echo():
    with serve_in_thread(echo_app("stable")) as url:
        yield url


def test_a_trickling_request_head_and_an_idle_connection_are_closed(echo, monkeypatch):
    monkeypatch.setattr(listener, "HEAD_TIMEOUT_S", 0.5)
    monkeypatch.setattr(listener, "KEEP_ALIVE_S", 1.0)
    with routed({"stable": echo}) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as slow:
            slow.sendall(b"GET /svc/x HTTP/1.1\r\nHo")  # and no more: slowloris
            assert closed_within(slow, 5)
        with socket.create_connection(("127.0.0.1", port)) as idle:
            idle.sendall(b"GET /svc/x HTTP/1.1\r\nHost: x\r\n\r\n")
            head, _ = read_answer(idle)
            assert head.startswith(b"HTTP/1.1 200 ")
            assert closed_within(idle, 5)  # kept a second, then let go


def test_expect_100_continue_is_answered_before_the_body_is_sent(echo):
    with routed({"stable": echo}) as (url, _), socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as s:
        s.settimeout(10)
        s.sendall(b"POST /svc/up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += s.recv(4096)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"hello")
        head, body = read_answer(s)
    assert head.startswith(b"HTTP/1.1 200 ") and json.loads(body)["body_bytes"] == 5
    assert "expect" not in json.loads(body)["headers"]


def chunked(data: bytes, size: int = 65536) -> bytes:
    out = b"".join(b"%x\r\n%b\r\n" % (len(data[i : i + size]), data[i : i + size]) for i in range(0, len(data), size))
    return out + b"0\r\n\r\n"


def test_large_chunked_bodies_stream_and_bad_chunking_later_is_refused(echo):
    big = b"c" * 600_000
    head = b"POST /svc/up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    with routed({"stable": echo}) as (url, _):
        answer = http_exchange(url, head + chunked(big))
        assert answer.startswith(b"HTTP/1.1 200 ") and b'"body_bytes":600000' in answer
        broken = chunked(big[: 65536 * 6]).removesuffix(b"0\r\n\r\n") + b"zz\r\n"  # past the first 256 KiB
        answer = http_exchange(url, head + broken)
        assert answer.startswith(b"HTTP/1.1 400 ") and b"malformed request body" in answer


def test_answers_over_the_buffer_cap_are_not_held_for_a_mirror_comparison():
    upstream = RawUpstream(lambda path: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (
        len(path) * 100) + path.encode() * 100)  # fmt: skip
    try:
        settings = Settings(admin_token=TOKEN, router_buffer_max_bytes=1000)
        stable_canary = {"stable": upstream.url, "canary": upstream.url}
        with routed(stable_canary, settings, mirror={"share": 1.0}) as (url, router):
            assert httpx.get(f"{url}/svc/long-path-answer").status_code == 200  # 1,700 bytes: over the cap
            assert httpx.get(f"{url}/svc/short").status_code == 200  # 600 bytes: compared
            deadline = time.monotonic() + 10
            while ("svc", "/short") not in router.stats.mirror_compared:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert ("svc", "/long-path-answer") not in router.stats.mirror_compared
    finally:
        upstream.close()


def test_a_canary_answer_over_the_buffer_cap_is_not_compared_nor_counted_as_different():
    def ok(body: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)

    stable = RawUpstream(lambda path: ok(b"small"))
    canary = RawUpstream(lambda path: ok(b"c" * 2000) if path == "/big" else ok(b"small"))  # cap: 1,000
    try:
        settings = Settings(admin_token=TOKEN, router_buffer_max_bytes=1000)
        with routed({"stable": stable.url, "canary": canary.url}, settings, mirror={"share": 1.0}) as (url, router):
            assert httpx.get(f"{url}/svc/big").text == "small"
            assert httpx.get(f"{url}/svc/short").text == "small"
            deadline = time.monotonic() + 5
            compared = router.stats.mirror_compared
            # both copies reached the canary and every comparison is over (the short one recorded)
            while len(canary.requests) < 2 or router.mirror.tasks or ("svc", "/short") not in compared:
                assert time.monotonic() < deadline, "the mirrored copies were never compared"
                time.sleep(0.02)
            assert compared == {("svc", "/short"): 1}
            assert not router.stats.mirror_different
            assert router.mirror.report()["samples"] == {}
    finally:
        stable.close()
        canary.close()
