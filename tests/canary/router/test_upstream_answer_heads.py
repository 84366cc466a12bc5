"""An upstream's answer head is bounded as a request's is (``canary.router.upstream_connection``),
over real sockets: a head over 64 KiB of header names and values, over 128 KiB as received, or one
that never ends, is a 502 counted against its track (a canary's failed over to stable) on a
connection never reused; a head at the limits is relayed, on a connection kept."""

from __future__ import annotations

import httpx
import pytest

from canary.router.upstream_connection import MAX_HEAD_BYTES, MAX_HEADER_BYTES
from tests.canary.router.test_framing_and_upstream_safety import ok, routed
from tests.canary.router.upstreams import RawUpstream


def answer_with(extra: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\n%bContent-Length: 4\r\n\r\nfine" % extra


def names_and_values(total: int) -> bytes:
    """An answer whose header names and values come to ``total`` bytes (Content-Length's included)."""
    return answer_with(b"X-Big: " + b"b" * (total - len(b"X-Big") - len(b"Content-Length4")) + b"\r\n")


def head_of(size: int) -> bytes:
    """An answer whose head is ``size`` bytes, padded with a value's leading whitespace (which is
    not part of the value: its headers' names and values stay a few bytes)."""
    padding = size - (len(answer_with(b"X-Pad: v\r\n")) - len(b"fine")) + 1
    return answer_with(b"X-Pad:" + b" " * padding + b"v\r\n")


AT_THE_LIMITS = {
    "64 KiB of names and values": names_and_values(MAX_HEADER_BYTES),
    "a 128 KiB head": head_of(MAX_HEAD_BYTES),
}
OVER_THE_LIMITS = {
    "64 KiB and a byte of names and values": names_and_values(MAX_HEADER_BYTES + 1),
    "a 128 KiB and a byte head": head_of(MAX_HEAD_BYTES + 1),
    "200 KiB of headers": answer_with(b"".join(b"X-H%d: %b\r\n" % (i, b"h" * 1000) for i in range(200))),
    "an endless head": b"HTTP/1.1 200 OK\r\nX-Endless: " + b"e" * (8 << 20),  # 8 MiB and never done
}


@pytest.mark.parametrize("name", sorted(OVER_THE_LIMITS))
def test_an_answer_head_over_the_limits_is_a_502_counted_against_its_track(name):
    upstream = RawUpstream(lambda path: OVER_THE_LIMITS[name] if path == "/huge" else ok(path.encode()))
    bad = RawUpstream(lambda path: OVER_THE_LIMITS[name])
    good = RawUpstream(lambda path: ok(b"stable:" + path.encode()))
    try:
        # timeout_s: an endless head the router kept reading would end as a 504, not this 502
        with routed({"stable": upstream.url}, timeout_s=5) as (url, router), httpx.Client(base_url=url) as client:
            assert client.get("/svc/fine").text == "/fine"  # its connection pooled: the fast path next
            r = client.get("/svc/huge")
            assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_bad_response"
            assert router.stats.errors[("svc", "stable", "", "/huge")] == 1
            assert client.get("/svc/fine").text == "/fine"  # the router serves on
            assert upstream.connections == 2  # on a new connection: the broken one was closed
        with routed({"stable": good.url, "canary": bad.url}, weight=100, timeout_s=5) as (url, router):
            r = httpx.get(f"{url}/svc/x")  # safe to repeat: failover to stable, the canary counted
            assert r.status_code == 200 and r.text == "stable:/x" and r.headers["x-canary-failover"] == "1"
            assert router.stats.errors[("svc", "canary", "", "/x")] == 1
    finally:
        for each in (upstream, bad, good):
            each.close()


@pytest.mark.parametrize("name", sorted(AT_THE_LIMITS))
def test_an_answer_head_at_the_limits_is_relayed_on_a_connection_kept(name):
    upstream = RawUpstream(lambda path: AT_THE_LIMITS[name])
    try:
        with routed({"stable": upstream.url}) as (url, router), httpx.Client(base_url=url) as client:
            for _ in range(2):  # the second on the pooled connection (the fast path's parser)
                r = client.get("/svc/x")
                assert r.status_code == 200 and r.text == "fine"
                assert r.headers.get("x-pad") == "v" or len(r.headers["x-big"]) > MAX_HEADER_BYTES - 100
            assert upstream.connections == 1
            assert router.stats.errors[("svc", "stable", "", "/x")] == 0
    finally:
        upstream.close()
