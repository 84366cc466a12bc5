"""The router's protocol server against hostile clients and odd upstreams, over real sockets:
ambiguous framing refused with 400 and never forwarded, malformed upstream answers as 502s counted
against their track, no answer ever reaching another request, idle upstream connections expired
before the upstream closes them, https upstreams verified against a CA bundle or refused."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import time

import httpx
import pytest

from canary.router.app import create_router, serve_router_in_thread
from core.errors import ConfigError
from core.serve import serve_in_thread
from core.settings import Settings
from tests.canary.router.upstreams import RawUpstream, echo_app, http_exchange

TOKEN = "t"


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)


@contextlib.contextmanager
def routed(upstreams: dict[str, str], settings: Settings | None = None, **route: object):
    router = create_router(settings or Settings(admin_token=TOKEN))
    with serve_router_in_thread(router) as url:
        table = {"version": 1, "services": {"svc": {"upstreams": upstreams, **route}}}
        r = httpx.put(f"{url}/_router/table", content=json.dumps(table), headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200, r.text
        yield url, router


AMBIGUOUS = {
    "both lengths": b"POST /svc/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\n",
    "two lengths": b"POST /svc/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "gzip then chunked": b"POST /svc/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "bad chunk size": b"POST /svc/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "control char in value": b"GET /svc/a HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
    "DEL in value": b"GET /svc/a HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n",
    "control char in name": b"GET /svc/a HTTP/1.1\r\nHost: x\r\nX\x02A: ab\r\n\r\n",
    "bare LF": b"GET /svc/a HTTP/1.1\nHost: x\n\n",
    "obs-fold": b"GET /svc/a HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  b\r\n\r\n",
    "upgrade": b"GET /svc/a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    "absolute target": b"GET http://evil/svc/a HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(AMBIGUOUS))
def test_ambiguous_or_malformed_requests_get_400_and_are_never_forwarded(name):
    upstream = RawUpstream(lambda path: ok(path.encode()))
    try:
        with routed({"stable": upstream.url}) as (url, _):
            answer = http_exchange(url, AMBIGUOUS[name])
            assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
            assert b'"bad_request"' in answer and answer.count(b"HTTP/1.1 ") == 1
            assert http_exchange(url, b"GET /svc/fine HTTP/1.1\r\nHost: x\r\n\r\n").endswith(b"/fine")
        assert [r.split(b" ")[1] for r in upstream.requests] == [b"/fine"]  # nothing else got through
    finally:
        upstream.close()


def test_a_refused_request_in_a_pipeline_ends_the_connection_after_the_answers_before_it():
    upstream = RawUpstream(lambda path: ok(path.encode()))
    try:
        with routed({"stable": upstream.url}) as (url, _):
            good = b"GET /svc/one HTTP/1.1\r\nHost: x\r\n\r\n"
            answer = http_exchange(url, good + AMBIGUOUS["both lengths"] + good)
        assert answer.count(b"HTTP/1.1 200 ") == 1 and answer.count(b"HTTP/1.1 400 ") == 1
        assert answer.index(b"/one") < answer.index(b"400 Bad Request")
    finally:
        upstream.close()


MALFORMED_ANSWERS = {
    "garbage": b"hello there\r\n\r\n",
    "both lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "bad status": b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
    "control char": b"HTTP/1.1 200 OK\r\nX-A: \x01\r\nContent-Length: 0\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(MALFORMED_ANSWERS))
def test_a_malformed_upstream_answer_is_a_502_counted_against_its_track(name):
    bad = RawUpstream(lambda path: MALFORMED_ANSWERS[name])
    good = RawUpstream(lambda path: ok(b"stable:" + path.encode()))
    try:
        with routed({"stable": bad.url}) as (url, router):
            r = httpx.get(f"{url}/svc/x")
            assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_bad_response"
            assert router.stats.errors[("svc", "stable", "", "/x")] == 1
        with routed({"stable": good.url, "canary": bad.url}, weight=100) as (url, router):
            r = httpx.get(f"{url}/svc/x")  # safe to repeat: failover to stable, the canary counted
            assert r.status_code == 200 and r.text == "stable:/x" and r.headers["x-canary-failover"] == "1"
            assert router.stats.errors[("svc", "canary", "", "/x")] == 1
    finally:
        bad.close()
        good.close()


def test_bytes_after_an_answer_never_become_the_next_requests_answer():
    def answer(path: str) -> bytes:
        if path == "/junk":  # a too-short Content-Length: the rest looks like a whole second answer
            return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nWRONG"
        return ok(path.encode())

    upstream = RawUpstream(answer)
    try:
        with routed({"stable": upstream.url}) as (url, _), httpx.Client(base_url=url) as client:
            for i in range(20):
                assert client.get("/svc/junk").text == "ok"
                assert client.get(f"/svc/n{i}").text == f"/n{i}"
    finally:
        upstream.close()


def test_a_connection_answered_before_it_took_the_whole_request_body_is_never_reused():
    # A service with a body limit answers 413 at once and goes on taking the body it still expects:
    # a next request sent on that connection would be taken for the rest of that body (and hang).
    too_large = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n\r\ntoo big!"
    upstream = RawUpstream(lambda path: too_large if path == "/upload" else ok(path.encode()), read_bodies=True)
    first = b"x" * 65536
    try:
        with routed({"stable": upstream.url}, timeout_s=1) as (url, _):
            host, port = url.removeprefix("http://").split(":")
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(b"POST /svc/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n" + first)
                deadline = time.monotonic() + 5
                while upstream.body_bytes < len(first):  # taken after the 413 went out
                    assert time.monotonic() < deadline, "the start of the body never reached the upstream"
                    time.sleep(0.01)
                s.sendall(first)  # more of the body: the router finds the answer in and stops sending it
                assert read_answer(s).startswith(b"HTTP/1.1 413 ")
            r = httpx.get(f"{url}/svc/after", timeout=5)
            assert r.status_code == 200 and r.text == "/after", r.text
            assert upstream.connections == 2  # on a new connection: the cut-short one was dropped
    finally:
        upstream.close()


def test_idle_upstream_connections_expire_before_the_upstreams_keep_alive():
    upstream = RawUpstream(lambda path: b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=2\r\nContent-Length: 2\r\n\r\nok")
    try:
        with routed({"stable": upstream.url}, Settings(admin_token=TOKEN, router_upstream_idle_s=30)) as (url, router):
            assert httpx.get(f"{url}/svc/a").text == "ok"
            idle = router.client.idle[("http", "127.0.0.1", int(upstream.url.rsplit(":", 1)[1]))]
            assert len(idle) == 1
            deadline = time.monotonic() + 3  # the upstream said 2 s: the router lets go a second ahead
            while idle:
                assert time.monotonic() < deadline, "the idle connection was kept past the upstream's timeout"
                time.sleep(0.05)
            assert httpx.get(f"{url}/svc/b").text == "ok" and upstream.connections == 2
    finally:
        upstream.close()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", "/CN=test CA")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")  # fmt: skip
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")  # fmt: skip
    return d


def test_https_upstreams_are_verified_against_the_ca_bundle_or_refused(tls_files):
    tls = {"ssl_certfile": str(tls_files / "server.pem"), "ssl_keyfile": str(tls_files / "server.key")}
    with serve_in_thread(echo_app("stable"), **tls) as plain_url:
        https_url = plain_url.replace("http://", "https://")
        trusted = Settings(admin_token=TOKEN, router_ca_bundle=str(tls_files / "ca.pem"))
        with routed({"stable": https_url}, trusted) as (url, _):
            for _ in range(3):  # the second and third reuse the pooled TLS connection
                r = httpx.get(f"{url}/svc/over-tls")
                assert r.status_code == 200 and r.json()["path"] == "/over-tls"
        with routed({"stable": https_url}) as (url, _):  # the system's CAs do not know this one
            r = httpx.get(f"{url}/svc/x")
            assert r.status_code == 502 and r.json()["error"]["detail"]["error"] == "tls"
            assert "certificate verification failed" in r.json()["error"]["message"]
    with pytest.raises(ConfigError, match="router_ca_bundle"):
        create_router(Settings(router_ca_bundle=str(tls_files / "missing.pem")))


def test_on_a_pooled_connection_timeouts_failures_and_failover_behave_as_on_a_fresh_one():
    # After a first request, the next ones go out on a pooled connection (the router's fast path).
    def answer(path: str) -> bytes:
        if path == "/hang":
            return b""  # never answers
        if path == "/boom":
            return b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nboom"
        return ok(path.encode())

    upstream = RawUpstream(answer)
    stable = RawUpstream(lambda path: ok(b"stable:" + path.encode()))
    try:
        with routed({"stable": upstream.url}, timeout_s=0.3) as (url, router), httpx.Client(base_url=url) as c:
            assert c.get("/svc/warm").text == "/warm"
            r = c.get("/svc/hang")
            assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
            assert c.get("/svc/warm").text == "/warm"  # the hung connection was dropped, a fresh one used
            assert c.get("/svc/boom").status_code == 500
            assert router.stats.errors[("svc", "stable", "", "/hang")] == 1
            assert router.stats.errors[("svc", "stable", "", "/boom")] == 1
        canary_first = {"stable": stable.url, "canary": upstream.url}
        with routed(canary_first, weight=100) as (url, router), httpx.Client(base_url=url) as c:
            assert c.get("/svc/warm").headers["x-canary-track"] == "canary"
            r = c.get("/svc/boom")  # a 500 from the canary on a pooled connection: failover
            assert r.text == "stable:/boom" and r.headers["x-canary-failover"] == "1"
            assert router.stats.failovers[("svc", "canary", "", "/boom")] == 1
    finally:
        upstream.close()
        stable.close()


def test_a_shorter_timeout_applies_at_once_on_a_connection_armed_for_a_longer_one():
    # The fast path keeps one head timer per upstream connection; a table that shortens the
    # timeout must not leave the next request waiting for the old, longer deadline.
    upstream = RawUpstream(lambda path: b"" if path == "/hang" else ok(path.encode()))
    try:
        with routed({"stable": upstream.url}, timeout_s=30) as (url, _), httpx.Client(base_url=url) as c:
            assert c.get("/svc/warm").text == "/warm"  # opens the upstream connection
            assert c.get("/svc/warm").text == "/warm"  # on it, pooled: its timer is set 30 s ahead
            table = {"version": 2, "services": {"svc": {"upstreams": {"stable": upstream.url}, "timeout_s": 0.3}}}
            r = c.put("/_router/table", content=json.dumps(table), headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 200, r.text
            r = c.get("/svc/hang", timeout=10)  # the old deadline would be 30 s away: httpx gives up at 10
            assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
            assert c.get("/svc/warm").text == "/warm"
    finally:
        upstream.close()


def test_remembered_header_blocks_never_carry_one_requests_headers_into_another():
    # Header blocks are remembered both ways (a keep-alive client repeats its headers, an upstream
    # its answer's); alternating header sets on one connection must each arrive as sent.
    def answer(path: str) -> bytes:
        return b"HTTP/1.1 200 OK\r\nX-Answer: %b\r\nContent-Length: 2\r\n\r\nok" % path.encode()

    upstream = RawUpstream(answer)
    try:
        with routed({"stable": upstream.url}) as (url, _), httpx.Client(base_url=url) as client:
            for i in range(30):
                r = client.get(f"/svc/p{i % 3}", headers={"X-Account-Id": f"acct-{i % 2}"})
                assert r.headers["x-answer"] == f"/p{i % 3}"
        seen = [line for head in upstream.requests for line in head.split(b"\r\n") if line.startswith(b"x-account-id")]
        assert seen == [b"x-account-id: acct-%d" % (i % 2) for i in range(30)]
    finally:
        upstream.close()


def read_answer(s: socket.socket) -> bytes:
    """One answer framed by its Content-Length, from a keep-alive connection; its head."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    found = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
    assert found, head
    while len(body) < int(found.group(1)):
        body += s.recv(65536)
    return head


def test_the_fast_path_and_the_parser_send_the_same_request_lines_upstream():
    # One keep-alive request at a time takes the fast path (pooled connection, simple head); the
    # same requests pipelined go through the parser and the connection's task.
    targets = [b"/svc", b"/svc/", b"/svc?q=1", b"/svc/x?", b"/svc/a/b?c=d&e", b"/svc/a%20b"]
    upstream = RawUpstream(lambda path: ok(path.encode()))
    try:
        with routed({"stable": upstream.url}) as (url, _):
            pipelined = b"".join(b"GET %b HTTP/1.1\r\nHost: x\r\n\r\n" % t for t in targets)
            answers = http_exchange(url, pipelined + b"GET /svc/end HTTP/1.1\r\nConnection: close\r\n\r\n")
            assert answers.count(b"HTTP/1.1 200 ") == len(targets) + 1
            host, port = url.removeprefix("http://").split(":")
            with socket.create_connection((host, int(port)), timeout=10) as s:
                for t in targets:
                    s.sendall(b"GET %b HTTP/1.1\r\nHost: x\r\n\r\n" % t)
                    assert read_answer(s).startswith(b"HTTP/1.1 200 ")
        lines = [r.split(b"\r\n")[0] for r in upstream.requests]
        by_parser, by_fast_path = lines[: len(targets)], lines[len(targets) + 1 :]
        assert by_parser == [
            b"GET / HTTP/1.1",
            b"GET / HTTP/1.1",
            b"GET /?q=1 HTTP/1.1",
            b"GET /x HTTP/1.1",
            b"GET /a/b?c=d&e HTTP/1.1",
            b"GET /a%20b HTTP/1.1",
        ]
        assert by_fast_path == by_parser
    finally:
        upstream.close()
