"""The fast path's head recognisers (``canary.router.simple_heads``) accept only what httptools'
parser accepts, with the same meaning: fuzzed against the parser itself (hypothesis, bounded),
and the hostile cases the framing tests send to a real router are never taken as simple."""

from __future__ import annotations

import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canary.router.headers import request_headers, response_headers
from canary.router.simple_heads import simple_answer, simple_request

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


class Seen:
    """What httptools' parser reports for one message."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.begun = 0
        self.complete = 0
        self.parser: httptools.HttpRequestParser | httptools.HttpResponseParser | None = None
        self.keep: bool | None = None

    def on_message_begin(self) -> None:
        self.begun += 1

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete += 1
        assert self.parser is not None
        self.keep = self.parser.should_keep_alive()  # as the router reads it: while the message ends


token = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_!#$%&'*+.^`|~0123456789", min_size=1, max_size=10
)
visible = st.text(alphabet=" \tabcdefghijklmnopqrstuvwxyz0123456789=;,/:\"'()<>@[]{}?", max_size=20).map(str.encode)
framing_name = st.sampled_from(
    [b"Content-Length", b"Transfer-Encoding", b"Connection", b"Expect", b"Upgrade", b"Keep-Alive", b"Host"]
)
framing_value = st.sampled_from([b"0", b"12", b"chunked", b"close", b"keep-alive", b"upgrade", b"100-continue", b"h2c"])
# mostly plausible headers (so that many examples are simple and get compared), some framing, some junk
header = st.one_of(
    st.tuples(token.map(str.encode), visible),
    st.tuples(token.map(str.encode), visible),
    st.tuples(token.map(str.encode), visible),
    st.tuples(framing_name, framing_value),
    st.tuples(st.binary(min_size=1, max_size=8), st.binary(max_size=12)),
)


def often(*common: bytes) -> st.SearchStrategy[bytes]:
    """The first value three times in four, else one of the others."""
    return st.one_of(st.just(common[0]), st.just(common[0]), st.just(common[0]), st.sampled_from(common[1:]))


def mutate(draw: st.DrawFn, raw: bytes) -> bytes:
    if draw(st.integers(0, 3)) == 0:
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(max_size=6)) + raw[at + draw(st.integers(0, 3)) :]
    return raw


@st.composite
def request_heads(draw: st.DrawFn) -> bytes:
    method = draw(often(b"GET", b"HEAD", b"POST", b"get"))
    target = draw(
        st.one_of(
            st.just(b"/svc/x"),
            st.text(alphabet="abc/?=&%-._~!$'()*+,;:@#", max_size=15).map(lambda t: b"/svc/" + t.encode()),
            st.binary(max_size=20).map(lambda b: b"/svc/" + b),
        )
    )
    version = draw(often(b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.1 ", b"HTTP/2"))
    lines = [method + b" " + target + b" " + version]
    separators = often(b": ", b":", b" : ", b":\t", b": \t")
    lines += [n + draw(separators) + v for n, v in draw(st.lists(header, max_size=5))]
    raw = b"\r\n".join(lines) + b"\r\n\r\n" + draw(often(b"", b"abc", b"GET /svc/y HTTP/1.1\r\n\r\n"))
    return mutate(draw, raw)


@FUZZ
@given(raw=st.one_of(request_heads(), request_heads(), request_heads(), st.binary(max_size=120)))
def test_a_request_taken_as_simple_means_to_httptools_what_it_means_to_the_fast_path(raw: bytes) -> None:
    found = simple_request(raw, "10.0.0.1")
    if found is None:
        return
    target, request = found
    seen = Seen()
    parser = seen.parser = httptools.HttpRequestParser(seen)
    parser.feed_data(raw)  # raises if httptools would refuse it: the fast path must never take that
    assert (seen.begun, seen.complete, seen.body) == (1, 1, b"")
    assert parser.get_method() == b"GET" and parser.get_http_version() == "1.1"
    assert seen.url == target and not parser.should_upgrade()
    assert seen.keep == request.keep
    assert request.raw == seen.headers
    named, block = request_headers(seen.headers, "10.0.0.1", "http")
    assert request.named == named and request.upstream_block == block + b"\r\n"


status_line = st.one_of(
    st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found", b"HTTP/1.1 302 Found", b"HTTP/1.1 200 "]),
    st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.1 201 Created", b"HTTP/1.1 499 X", b"HTTP/1.1 200 O\tK"]),
    st.sampled_from([b"HTTP/1.0 200 OK", b"HTTP/1.1 204 No Content", b"HTTP/1.1 100 Continue", b"HTTP/1.1 500 E"]),
    st.binary(max_size=20),
)


@st.composite
def answers(draw: st.DrawFn) -> bytes:
    lines = [draw(status_line)]
    lines += [n + b": " + v for n, v in draw(st.lists(header, max_size=4))]
    body = draw(st.binary(max_size=30))
    if draw(often(b"length", b"none")) == b"length":
        lines.append(b"Content-Length: %d" % (len(body) + draw(st.sampled_from([0, 0, 0, 0, 0, -1, 1]))))
    raw = b"\r\n".join(lines) + b"\r\n\r\n" + body
    raw += draw(often(b"", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"x"))
    return mutate(draw, raw)


@FUZZ
@given(raw=st.one_of(answers(), answers(), answers(), st.binary(max_size=120)))
def test_an_answer_taken_as_simple_means_to_httptools_what_it_means_to_the_fast_path(raw: bytes) -> None:
    found = simple_answer(raw)
    if found is None:
        return
    answer, body = found
    seen = Seen()
    parser = seen.parser = httptools.HttpResponseParser(seen)
    parser.feed_data(raw)
    assert (seen.begun, seen.complete) == (1, 1)  # exactly one answer, nothing after it
    assert parser.get_status_code() == answer.status and seen.body == body and answer.length == len(body)
    assert seen.keep == answer.keep
    # the headers the parser's path relays (its content-length is written after the track's header)
    assert answer.headers == [h for h in response_headers(seen.headers) if h[0] != b"content-length"]


REFUSED_OR_FRAMED = [
    b"GET /svc/a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    b"GET /svc/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET /svc/a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
    b"GET /svc/a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"GET /svc/a HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
    b"GET /svc/a HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n",
    b"GET /svc/a HTTP/1.1\r\nHost: x\r\nX\x02A: ab\r\n\r\n",
    b"GET /svc/a HTTP/1.1\nHost: x\n\n",
    b"GET /svc/a HTTP/1.1\r\nHost: x\nX-B: c\r\n\r\n",
    b"GET /svc/a HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  b\r\n\r\n",
    b"GET http://evil/svc/a HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /svc/a#frag HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /svc/a HTTP/1.0\r\nHost: x\r\n\r\n",
    b"HEAD /svc/a HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /svc/a HTTP/1.1\r\nHost : x\r\n\r\n",
    # pipelined: answered in order, by the parser
    b"GET /svc/a HTTP/1.1\r\nHost: x\r\n\r\nGET /svc/b HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /svc/a HTTP/1.1\r\nHost: x\r\n",  # not whole yet
]


@pytest.mark.parametrize("raw", REFUSED_OR_FRAMED)
def test_framing_control_characters_upgrades_and_pipelines_are_left_to_the_parser(raw: bytes) -> None:
    assert simple_request(raw, "10.0.0.1") is None


def test_a_simple_request_is_recognised_with_its_keep_alive_and_forwarded_headers() -> None:
    found = simple_request(
        b"GET /svc/a?b=1 HTTP/1.1\r\nHost: x\r\nX-Account-Id:  42\r\nConnection: close\r\n\r\n", "10.0.0.9"
    )
    assert found is not None
    target, request = found
    assert target == b"/svc/a?b=1" and not request.keep and request.named["x-account-id"] == "42"
    assert b"x-forwarded-for: 10.0.0.9\r\n" in request.upstream_block and b"connection" not in request.upstream_block


ANSWERS_FOR_THE_PARSER = [
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",  # smuggled
    b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nok",  # not whole yet
    b"HTTP/1.1 200 OK\r\n\r\nok",  # framed by the end of the connection
    b"HTTP/1.1 500 Boom\r\nContent-Length: 0\r\n\r\n",  # counted and failed over by the parser's path
    b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 2\r\n\r\nok",
]


@pytest.mark.parametrize("raw", ANSWERS_FOR_THE_PARSER)
def test_streamed_smuggled_partial_and_odd_answers_are_left_to_the_parser(raw: bytes) -> None:
    assert simple_answer(raw) is None


def test_a_simple_answer_keeps_its_keep_alive_timeout_and_drops_hop_by_hop_headers() -> None:
    found = simple_answer(
        b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok"
    )
    assert found is not None
    answer, body = found
    assert body == b"ok" and answer.keep and answer.keep_alive_s == 5.0 and answer.headers == [(b"x-a", b"1")]
    head = answer.client_head("canary", keep=False)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"connection: close\r\n\r\n")
    assert b"x-canary-track: canary\r\n" in head and b"content-length: 2\r\n" in head


def test_what_the_fast_path_remembers_stays_bounded_whatever_clients_send() -> None:
    from canary.router import simple_heads
    from canary.router.route_plan import PATHS_CACHED, RoutePlan
    from canary.router.split import Splitter
    from core.routes import parse_table

    route = parse_table(
        {
            "version": 1,
            "services": {
                "s": {
                    "upstreams": {"stable": "http://a", "canary": "http://b"},
                    "weight": 5,
                    "sticky": {"header": "x-account-id"},
                }
            },
        }
    ).services["s"]
    splitter, plan = Splitter(route), RoutePlan(route)
    for i in range(PATHS_CACHED + 10):
        splitter.choose({"x-account-id": f"{i}" + "k" * 200}, "")  # long keys: hashed, not kept
        plan.path(f"p/{i}" + "x" * 300)  # long paths: named, not kept
        plan.path(f"q/{i}")
    assert not splitter._buckets and len(plan.paths) <= PATHS_CACHED
    assert all(not p.startswith("p/") for p in plan.paths)
    big = b"GET /s/x HTTP/1.1\r\nX-Big: " + b"v" * 5000 + b"\r\n\r\n"
    for i in range(simple_heads.CACHED + 10):
        assert simple_request(big, f"10.0.0.{i}") is not None  # analysed, not kept
        simple_request(b"GET /s/x HTTP/1.1\r\nX-N: %d\r\n\r\n" % i, "10.0.0.1")
    assert len(simple_heads._requests) <= simple_heads.CACHED
    assert all(len(block) <= simple_heads.CACHED_BYTES for block, _ in simple_heads._requests)
