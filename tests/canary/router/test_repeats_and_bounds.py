"""The router over real sockets: what it sends twice (only requests safe to repeat), the bodies it
holds for failover (within one budget across requests), the headers an upstream names hop-by-hop
(never relayed), and the route labels it counts (bounded, whatever paths consumers ask for)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from canary.router.app import Router, create_router, serve_router_in_thread
from canary.router.stats import OTHER_ROUTE, ROUTES_PER_SERVICE
from core.serve import serve_in_thread
from core.settings import Settings, load_settings
from tests.canary.router.upstreams import CloseSecondUpstream, RawUpstream, echo_app

TOKEN = "t"


@contextlib.contextmanager
def routed(route: dict[str, object], router: Router | None = None) -> Iterator[tuple[str, Router]]:
    router = router or create_router(Settings(admin_token=TOKEN))
    with serve_router_in_thread(router) as url:
        table = {"version": 1, "services": {"svc": route}}
        r = httpx.put(f"{url}/_router/table", content=json.dumps(table), headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200, r.text
        yield url, router


def wait_for(condition, what: str, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"still not {what}"
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("name", "content", "headers", "times", "status"),
    [
        ("small chunked POST", [b"charge-card-42"], {}, 1, 502),
        ("empty POST", b"", {}, 1, 502),
        ("Content-Length POST", b"charge-card-42", {}, 1, 502),
        ("chunked POST with an Idempotency-Key", [b"charge-card-42"], {"Idempotency-Key": "k1"}, 2, 201),
        ("empty POST with an Idempotency-Key", b"", {"Idempotency-Key": "k2"}, 2, 201),
    ],
)
def test_a_reused_connection_closed_unanswered_resends_only_a_request_safe_to_repeat(
    name, content, headers, times, status
):
    upstream = CloseSecondUpstream()
    try:
        with routed({"upstreams": {"stable": upstream.url}}) as (url, _), httpx.Client(base_url=url) as client:
            assert client.post("/svc/warmup", content=b"w").status_code == 201  # leaves a pooled connection
            sent = iter(content) if isinstance(content, list) else content  # a list: chunked
            r = client.post("/svc/charge", content=sent, headers=headers)
            assert r.status_code == status, r.text
            if status == 502:
                assert r.json()["error"]["code"] == "upstream_unavailable"
        charges = [body for target, body in upstream.received if target == "/charge"]
        assert len(charges) == times, f"{name}: the upstream got it {len(charges)} times"
        assert all(body == (b"charge-card-42" if content else b"") for body in charges)
    finally:
        upstream.close()


def _stats_rows(url: str) -> list[dict[str, object]]:
    return httpx.get(f"{url}/_router/stats").json()["counters"]


def test_bodies_held_for_failover_stay_within_one_budget_and_the_rest_stream_without_failover():
    budget = 1 << 20
    router = create_router(Settings(admin_token=TOKEN, router_failover_buffer_bytes=budget))
    with (
        serve_in_thread(echo_app("stable")) as stable,
        serve_in_thread(echo_app("canary", fail=True, delay_s=0.5)) as canary,
        routed({"upstreams": {"stable": stable, "canary": canary}, "weight": 100, "failover": True}, router) as (
            url,
            _,
        ),
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        key = {"Idempotency-Key": "k"}
        held: list[int] = []
        # one body within the budget is held while the (slow, failing) canary takes it: failover
        small = b"s" * (600 << 10)
        with httpx.Client(base_url=url, timeout=30) as other:
            answers: list[httpx.Response] = []
            first = threading.Thread(target=lambda: answers.append(other.post("/svc/a", content=small, headers=key)))
            first.start()
            wait_for(lambda: router.proxy.held.held > 0, "holding the first body")
            held.append(router.proxy.held.held)
            # a second that does not fit what is left is streamed to its track: no failover
            r = client.post("/svc/b", content=small, headers=key)
            first.join(30)
        assert held == [len(small)]
        assert answers[0].status_code == 200 and answers[0].headers["x-canary-failover"] == "1"
        assert r.status_code == 500 and r.headers["x-canary-track"] == "canary"
        assert r.json()["track"] == "canary" and r.json()["body_bytes"] == len(small)
        # a chunked body over the whole budget: read up to it, then streamed on with what was read
        big = b"c" * (budget + (300 << 10))
        r = client.post("/svc/c", content=iter([big[i : i + 65536] for i in range(0, len(big), 65536)]), headers=key)
        assert r.status_code == 500 and r.json()["body_bytes"] == len(big)
        wait_for(lambda: router.proxy.held.held == 0, "every reservation given back")
        rows = {(row["route"], row["track"]): row for row in _stats_rows(url)}
        assert rows[("/a", "canary")]["failovers"] == 1 and rows[("/a", "canary")]["unbuffered"] == 0
        assert rows[("/b", "canary")]["unbuffered"] == 1 and rows[("/b", "canary")]["failovers"] == 0
        assert rows[("/c", "canary")]["unbuffered"] == 1
        assert "router_failover_unbuffered_total" in httpx.get(f"{url}/metrics").text
        # a client that leaves in the middle of its body gives its reservation back too
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10) as s:
            s.sendall(b"POST /svc/d HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k\r\nContent-Length: 500000\r\n\r\n")
            s.sendall(b"x" * 100_000)
            wait_for(lambda: router.proxy.held.held == 500_000, "holding the body being sent")
        wait_for(lambda: router.proxy.held.held == 0, "the reservation of a client gone given back")


@pytest.mark.parametrize("connection", [b"x-private", b"keep-alive, X-Private", b"close, x-private"])
def test_headers_the_upstream_names_in_connection_never_reach_the_client(connection):
    answer = (
        b"HTTP/1.1 200 OK\r\nConnection: %b\r\nX-Private: secret\r\nX-Public: yes\r\nContent-Length: 2\r\n\r\nok"
        % connection
    )
    upstream = RawUpstream(lambda path: answer)
    try:
        with routed({"upstreams": {"stable": upstream.url}}) as (url, _):
            for _ in range(2):  # the second: remembered header sets
                r = httpx.get(f"{url}/svc/x")
                assert r.status_code == 200 and r.text == "ok"
                assert "x-private" not in r.headers and r.headers["x-public"] == "yes"
                assert "x-private" not in r.headers.get("connection", "").lower()
    finally:
        upstream.close()


def test_route_labels_stay_bounded_and_known_routes_keep_theirs():
    with (
        serve_in_thread(echo_app("stable")) as stable,
        routed({"upstreams": {"stable": stable}, "routes": ["/items/{item}"]}) as (url, router),
        httpx.Client(base_url=url) as client,
    ):
        for i in range(3):
            assert client.get(f"/svc/items/{i}").status_code == 200
            assert client.get(f"/svc/users/{i}/orders").status_code == 200  # ids folded: one label
        probes = ROUTES_PER_SERVICE + 50
        for i in range(probes):
            assert client.get(f"/svc/probe-{i}").status_code == 200
        assert client.get("/svc/items/9").status_code == 200
        counts = {row["route"]: row["requests"] for row in _stats_rows(url)}
        assert counts["/items/{item}"] == 4 and counts["/users/{id}/orders"] == 3
        # the configured template, ROUTES_PER_SERVICE others as they came, and the one overflow label
        assert len(counts) == ROUTES_PER_SERVICE + 2
        assert counts[OTHER_ROUTE] == probes - (ROUTES_PER_SERVICE - 1)
        assert sum(counts.values()) == 7 + probes
        assert len(router.stats.requests) == ROUTES_PER_SERVICE + 2


def test_the_failover_budget_is_a_setting_and_a_bad_one_is_a_one_line_error(capsys, monkeypatch):
    from canary.router.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(["--failover-buffer-bytes", "lots"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.endswith("error: argument --failover-buffer-bytes: invalid int value: 'lots'\n")
    monkeypatch.setenv("CANARY_ROUTER_FAILOVER_BUFFER_BYTES", "1e9")
    assert main([]) == 2
    assert "CANARY_ROUTER_FAILOVER_BUFFER_BYTES: router_failover_buffer_bytes must be int" in capsys.readouterr().err
    monkeypatch.setenv("CANARY_ROUTER_FAILOVER_BUFFER_BYTES", "4096")
    assert create_router(load_settings()).proxy.held.limit == 4096
