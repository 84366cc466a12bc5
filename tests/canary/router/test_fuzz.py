"""Fuzzing the router's protocol server (hypothesis), bounded in time: hostile and malformed
requests from clients, hostile and malformed answers from an upstream.  Whatever comes in, the
router answers with well-formed HTTP or closes the connection, within a timeout (never hangs),
keeps serving others, and never hands one request's bytes to another request's answer."""

from __future__ import annotations

import contextlib
import json
import re
import socket

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from canary.router.app import create_router, serve_router_in_thread
from core.serve import serve_in_thread
from core.settings import Settings
from tests.canary.router.upstreams import RawUpstream, echo_app, http_exchange

TOKEN = "t"
STATUS_LINE = re.compile(rb"^HTTP/1\.1 [1-5]\d\d [^\r\n]*\r\n")
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

pytestmark = pytest.mark.timeout(240)


class Junk:
    """What the raw upstream answers to /fuzz: set by each example."""

    answer = b""


@pytest.fixture(scope="module")
def router_url():
    raw = RawUpstream(lambda path: Junk.answer if path == "/fuzz" else ok(path.encode()))
    with contextlib.ExitStack() as stack:
        stack.callback(raw.close)
        echo = stack.enter_context(serve_in_thread(echo_app("stable")))
        url = stack.enter_context(serve_router_in_thread(create_router(Settings(admin_token=TOKEN))))
        table = {
            "version": 1,
            "services": {
                "svc": {"upstreams": {"stable": echo}},
                "raw": {"upstreams": {"stable": raw.url}, "timeout_s": 0.3, "failover": False},
            },
        }
        r = httpx.put(f"{url}/_router/table", content=json.dumps(table), headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200
        yield url


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)


def still_serving(url: str, n: int) -> None:
    r = httpx.get(f"{url}/svc/alive/{n}", timeout=10)
    assert r.status_code == 200 and r.json()["path"] == f"/alive/{n}"


def answers_are_well_formed(answer: bytes) -> None:
    event(answer[:12].decode("latin-1") or "closed")  # the spread of outcomes: --hypothesis-show-statistics
    if answer:  # else the router closed the connection, which is a fine way to refuse
        assert STATUS_LINE.match(answer), answer[:200]


token = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_", min_size=1, max_size=12)
header_byte = st.binary(min_size=0, max_size=30)
header = st.tuples(st.one_of(token.map(str.encode), header_byte), st.one_of(token.map(str.encode), header_byte))
framing = st.sampled_from(["none", "length", "wrong-length", "chunked", "bad-chunked", "both", "te-gzip"])


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"G\x00T", b"CONNECT"]))
    target = draw(st.one_of(st.just(b"/svc/x"), st.binary(max_size=40).map(lambda b: b"/svc/" + b)))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 ", b"HTXP/1.1"]))
    lines = [method + b" " + target + b" " + version, b"Host: x"]
    lines += [name + b": " + value for name, value in draw(st.lists(header, max_size=4))]
    body = draw(st.binary(max_size=200))
    kind = draw(framing)
    if kind in ("length", "both"):
        lines.append(b"Content-Length: %d" % len(body))
    if kind == "wrong-length":
        lines.append(b"Content-Length: %d" % (len(body) + draw(st.integers(-5, 5))))
    if kind in ("chunked", "bad-chunked", "both", "te-gzip"):
        lines.append(b"Transfer-Encoding: " + (b"gzip, chunked" if kind == "te-gzip" else b"chunked"))
        size = b"%x" % len(body) if kind != "bad-chunked" else draw(st.sampled_from([b"zz", b"-1", b"", b"1;\x01"]))
        body = size + b"\r\n" + body + b"\r\n0\r\n\r\n" if body else b"0\r\n\r\n"
    raw = b"\r\n".join(lines) + b"\r\n\r\n" + (body if kind != "none" else b"")
    if draw(st.booleans()):  # and a random mutation on top
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(max_size=8)) + raw[at + draw(st.integers(0, 4)) :]
    return raw


@FUZZ
@given(raw=st.one_of(requests(), st.binary(max_size=300)), pipelined=st.booleans())
def test_hostile_requests_get_well_formed_answers_or_a_close_and_never_hang(router_url, raw, pipelined):
    if pipelined:
        raw = b"GET /svc/first HTTP/1.1\r\nHost: x\r\n\r\n" + raw
    try:
        answer = http_exchange(router_url, raw, timeout_s=10)  # a hang fails here, as a timeout
    except ConnectionResetError:
        answer = b""
    answers_are_well_formed(answer)
    if pipelined:
        assert answer.startswith(b"HTTP/1.1 200 ") and b'"path":"/first"' in answer  # answered first, in order
    still_serving(router_url, len(raw))


status_line = st.one_of(
    st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK", b"HTTP/1.1 500 Boom", b"HTTP/1.1 204 No Content"]),
    st.binary(max_size=30),
)


@st.composite
def answers(draw: st.DrawFn) -> bytes:
    lines = [draw(status_line)]
    lines += [name + b": " + value for name, value in draw(st.lists(header, max_size=3))]
    body = draw(st.binary(max_size=100))
    kind = draw(framing)
    if kind in ("length", "both"):
        lines.append(b"Content-Length: %d" % len(body))
    if kind == "wrong-length":
        lines.append(b"Content-Length: %d" % (len(body) + draw(st.integers(-5, 5))))
    if kind in ("chunked", "bad-chunked", "both", "te-gzip"):
        lines.append(b"Transfer-Encoding: chunked")
        size = b"%x" % len(body) if kind != "bad-chunked" else b"zz"
        body = size + b"\r\n" + body + b"\r\n0\r\n\r\n"
    raw = b"\r\n".join(lines) + b"\r\n\r\n" + body
    raw += draw(st.sampled_from([b"", ok(b"SMUGGLED"), b"HTTP/1.1 200 OK\r\n", draw(st.binary(max_size=20))]))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(max_size=6)) + raw[at + draw(st.integers(0, 3)) :]
    return raw


@FUZZ
@given(answer=st.one_of(answers(), st.binary(max_size=200)))
def test_hostile_upstream_answers_are_relayed_well_formed_or_502_and_never_reach_another_request(router_url, answer):
    Junk.answer = answer
    with socket.create_connection(("127.0.0.1", int(router_url.rsplit(":", 1)[1])), timeout=10) as s:
        s.sendall(b"GET /raw/fuzz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        relayed = b""
        while chunk := s.recv(65536):  # a hang fails here, as a timeout
            relayed += chunk
    answers_are_well_formed(relayed)
    # the next request to the same upstream (on a pooled connection, if one was kept) gets its own answer
    n = len(answer)
    r = httpx.get(f"{router_url}/raw/check/{n}", timeout=10)
    assert r.status_code == 200 and r.content == f"/check/{n}".encode()
