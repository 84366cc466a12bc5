"""The router's protocol server on 127.0.0.1 (in a thread of this process) in front of real upstreams:
split, stickiness, override, failover, errors, headers, admin, table reload."""

from __future__ import annotations

import contextlib
import json
import socket
import time

import httpx
import pytest

from canary.router.app import create_router, serve_router_in_thread
from core.serve import serve_in_thread
from core.settings import Settings
from tests.canary.router.upstreams import echo_app

pytestmark = pytest.mark.anyio
TOKEN = "router-admin"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def upstreams():
    with contextlib.ExitStack() as stack:
        urls = {
            "stable": stack.enter_context(serve_in_thread(echo_app("stable"))),
            "canary": stack.enter_context(serve_in_thread(echo_app("canary"))),
            "broken": stack.enter_context(serve_in_thread(echo_app("broken", fail=True))),
            "slow": stack.enter_context(serve_in_thread(echo_app("slow", delay_s=2.0))),
        }
        yield urls


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once the socket closes


def table(upstreams: dict[str, str], **service: object) -> dict:
    route = {
        "upstreams": {"stable": upstreams["stable"], "canary": upstreams["canary"]},
        "releases": {"stable": "1.0", "canary": "1.1"},
        "weight": 0,
        **service,
    }
    return {"version": 1, "services": {"svc": route}}


@contextlib.asynccontextmanager
async def served(router):
    with serve_router_in_thread(router) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield client


@contextlib.asynccontextmanager
async def router_with(table_data: dict, tmp_path=None):
    router = create_router(Settings(admin_token=TOKEN))
    async with served(router) as client:
        r = await client.put("/_router/table", content=json.dumps(table_data), headers=AUTH)
        assert r.status_code == 200, r.text
        yield client, router


async def tracks_of(client, n: int, headers=None, path: str = "/svc/x") -> list[str]:
    out = []
    for i in range(n):
        h = headers(i) if callable(headers) else (headers or {})
        r = await client.get(path, headers=h)
        out.append(r.json()["track"])
    return out


async def test_split_follows_the_weight(upstreams):
    async with router_with(table(upstreams, weight=10)) as (c, _):
        seen = await tracks_of(c, 2000)
    canary = seen.count("canary")
    assert abs(canary - 200) <= 4 * (2000 * 0.1 * 0.9) ** 0.5  # within 4 standard deviations


async def test_sticky_customers_stay_and_move_only_towards_the_canary(upstreams):
    accounts = lambda i: {"X-Account-Id": f"acct-{i}"}  # noqa: E731
    async with router_with(table(upstreams, weight=10, sticky={"header": "X-Account-Id"})) as (c, _):
        first = await tracks_of(c, 500, accounts)
        assert await tracks_of(c, 500, accounts) == first  # same weight: same track, every time
        r = await c.put(
            "/_router/table",
            headers=AUTH,
            content=json.dumps(table(upstreams, weight=30, sticky={"header": "X-Account-Id"})),
        )
        assert r.status_code == 200
        later = await tracks_of(c, 500, accounts)
    assert all(b == "canary" for a, b in zip(first, later, strict=True) if a == "canary")
    assert 0.2 < later.count("canary") / 500 < 0.4 and later.count("canary") > first.count("canary")


async def test_override_header_for_testers(upstreams):
    async with router_with(table(upstreams, weight=0)) as (c, _):
        assert set(await tracks_of(c, 20, {"X-Canary": "always"})) == {"canary"}
    async with router_with(table(upstreams, weight=100)) as (c, _):
        assert set(await tracks_of(c, 20, {"X-Canary": "never"})) == {"stable"}


async def test_failover_hides_a_failing_canary_and_still_counts_it(upstreams):
    t = table(upstreams, weight=100)
    t["services"]["svc"]["upstreams"]["canary"] = upstreams["broken"]
    async with router_with(t) as (c, _router):
        r = await c.get("/svc/images/1?w=3")
        assert r.status_code == 200 and r.json()["track"] == "stable"
        assert r.headers["x-canary-failover"] == "1" and r.json()["query"] == "w=3"
        body = b"x" * 100_000
        r = await c.post("/svc/imports", content=body, headers={"Idempotency-Key": "k1"})
        assert r.status_code == 200 and r.json()["track"] == "stable" and r.json()["body_bytes"] == len(body)
        r = await c.post("/svc/imports", content=b"abc")  # not safe to repeat: the canary's 500 is the answer
        assert r.status_code == 500 and r.headers["x-canary-track"] == "canary"
        snapshot = (await c.get("/_router/stats")).json()["counters"]
    canary = [row for row in snapshot if row["track"] == "canary"]
    assert sum(row["errors"] for row in canary) == 3 and sum(row["failovers"] for row in canary) == 2
    assert {row["release"] for row in canary} == {"1.1"}


async def test_unreachable_and_slow_upstreams_get_clear_json_errors(upstreams):
    t = table(upstreams, weight=100)
    t["services"]["svc"]["upstreams"]["canary"] = closed_port_url()
    async with router_with(t) as (c, _):
        r = await c.get("/svc/x")  # the canary is down: failover
        assert r.status_code == 200 and r.json()["track"] == "stable"
    t = table(upstreams, weight=0)
    t["services"]["svc"]["upstreams"]["stable"] = closed_port_url()
    async with router_with(t) as (c, _):
        r = await c.get("/svc/x")
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unavailable"
        assert r.json()["error"]["detail"]["track"] == "stable"
    t = table(upstreams, weight=0, timeout_s=0.3)
    t["services"]["svc"]["upstreams"]["stable"] = upstreams["slow"]
    async with router_with(t) as (c, _):
        r = await c.get("/svc/x")
        assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
        assert (await c.get("/nosuch/x")).status_code == 404


async def test_headers_are_cleaned_and_forwarded(upstreams):
    async with router_with(table(upstreams)) as (c, _):
        r = await c.get(
            "/svc/x",
            headers={
                "Connection": "keep-alive, X-Secret",
                "X-Secret": "1",
                "Keep-Alive": "timeout=5",
                "X-Forwarded-For": "10.1.1.1",
                "User-Agent": "",
            },
        )
        seen = r.json()["headers"]
    assert "x-secret" not in seen and "keep-alive" not in seen
    assert seen["x-forwarded-for"] == "10.1.1.1, 127.0.0.1" and seen["x-forwarded-proto"] == "http"
    assert seen.get("user-agent", "") == ""  # a blank agent stays blank: the proxy adds none


async def test_large_bodies_stream_and_limits_hold(upstreams):
    async with router_with(table(upstreams)) as (c, router):
        big = b"y" * (5 << 20)
        r = await c.post("/svc/upload", content=big)
        assert r.status_code == 200 and r.json()["body_bytes"] == len(big)
        router.max_body = 1000
        r = await c.post("/svc/upload", content=b"z" * 5000)
        assert r.status_code == 413


async def test_admin_endpoints_need_the_token_and_refuse_bad_tables(upstreams):
    async with router_with(table(upstreams)) as (c, _):
        assert (await c.get("/_router/table")).status_code == 401
        assert (await c.put("/_router/table", content="{}")).status_code == 401
        bad = table(upstreams, weight=120)
        r = await c.put("/_router/table", content=json.dumps(bad), headers=AUTH)
        assert r.status_code == 400 and r.json()["error"]["message"] == "services.svc.weight: must be between 0 and 100"
        assert (await c.get("/_router/table", headers=AUTH)).json()["services"]["svc"]["weight"] == 0
        metrics = (await c.get("/metrics")).text
        assert "router_requests_total" in metrics


async def test_a_table_the_json_module_refuses_is_a_400_and_the_table_served_stays(upstreams):
    async with router_with(table(upstreams)) as (c, _):
        for bad in (
            "[" * 100_000 + "]" * 100_000,  # deeper than the interpreter's recursion limit
            '{"version": ' + "1" * 5000 + ', "services": {}}',  # more digits than int() converts
            b'{"version": 2, "services": {"\xff": {}}}',  # not UTF-8
        ):
            r = await c.put("/_router/table", content=bad, headers=AUTH)
            assert r.status_code == 400, (bad[:30], r.text)
            assert r.json()["error"]["message"].startswith("body must be a route table (JSON) (")
        assert (await c.get("/_router/table", headers=AUTH)).json()["version"] == 1


async def test_file_table_changes_apply_without_a_restart_and_bad_files_are_ignored(upstreams, tmp_path):
    path = tmp_path / "routes.json"
    path.write_text(json.dumps(table(upstreams, weight=0)))
    router = create_router(Settings(admin_token=TOKEN), table_source=str(path))
    async with served(router) as c:
        assert set(await tracks_of(c, 5)) == {"stable"}
        time.sleep(0.01)
        path.write_text(json.dumps({**table(upstreams, weight=100), "version": 2}))
        deadline = time.monotonic() + 30.0  # polled every half second; the deadline is for a busy machine
        while (await c.get("/svc/x")).json()["track"] != "canary":
            assert time.monotonic() < deadline, "the new table was never applied"
            await _sleep(0.05)
        path.write_text("services: [not, a, table")
        while not (status := (await c.get("/_router/table", headers=AUTH)).json()["status"])["last_error"]:
            assert time.monotonic() < deadline, "the router never reported the bad file"
            await _sleep(0.05)
        assert status["version"] == 2
        assert set(await tracks_of(c, 5)) == {"canary"}  # still serving on the last good table


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def test_router_runs_as_a_process(upstreams, tmp_path):
    from canary.platforms.processes import free_port

    path = tmp_path / "routes.yaml"
    path.write_text(json.dumps(table(upstreams, weight=0)))
    import subprocess
    import sys

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "canary.router", "--table", str(path), "--port", str(port)])
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert httpx.get(f"http://127.0.0.1:{port}/svc/hello").json()["track"] == "stable"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_idle_connections_closed_by_the_upstream_are_replaced_and_chunked_answers_pass():
    with serve_in_thread(echo_app("stable"), timeout_keep_alive=1) as short_lived:
        t = {"version": 1, "services": {"svc": {"upstreams": {"stable": short_lived}}}}
        async with router_with(t) as (c, _):
            assert (await c.get("/svc/a")).status_code == 200
            await _sleep(1.6)  # the upstream has closed our idle keep-alive connection by now
            r = await c.get("/svc/b")
            assert r.status_code == 200 and r.json()["path"] == "/b"
            r = await c.get("/svc/stream")
            assert r.status_code == 200 and r.text == "".join(f"chunk-{i};" for i in range(5))
            head = await c.head("/svc/x")
            assert head.status_code == 200 and head.content == b""


@pytest.mark.parametrize("front", ["protocol server", "asgi"])
async def test_services_named_like_an_admin_path_are_proxied_and_the_admin_paths_still_answer(upstreams, front):
    services = ("metrics-api", "healthzcheck", "readyz2", "_routerx")
    routes = {name: {"upstreams": {"stable": upstreams["stable"]}} for name in services}
    router = create_router(Settings(admin_token=TOKEN))
    with serve_router_in_thread(router) if front == "protocol server" else serve_in_thread(router) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as c:
            r = await c.put("/_router/table", content=json.dumps({"version": 1, "services": routes}), headers=AUTH)
            assert r.status_code == 200, r.text
            for name in services:
                for _ in range(2):  # the second on a pooled upstream connection (the fast path)
                    r = await c.get(f"/{name}/v1/x?q=1")
                    assert r.status_code == 200, r.text
                    assert (r.json()["track"], r.json()["path"], r.json()["query"]) == ("stable", "/v1/x", "q=1")
                assert (await c.get(f"/{name}")).json()["path"] == "/"
            assert (await c.get("/healthz")).status_code == 200
            assert (await c.get("/readyz")).status_code == 200
            metrics = await c.get("/metrics")
            assert metrics.status_code == 200 and 'service="metrics-api"' in metrics.text
            assert (await c.get("/metrics?x=1")).status_code == 200
            stats = await c.get("/_router/stats")
            assert stats.status_code == 200 and {row["service"] for row in stats.json()["counters"]} == set(services)
            r = await c.get("/_router/nothing")  # the admin app's 404, not the proxy's unknown service
            assert r.status_code == 404 and "unknown_service" not in r.text


async def test_operational_endpoints_are_never_mirrored(upstreams):
    async with router_with(table(upstreams, mirror={"share": 1.0})) as (c, router):
        for path in ("/svc/healthz", "/svc/readyz", "/svc/metrics", "/svc/data"):
            assert (await c.get(path)).status_code == 200
        deadline = time.monotonic() + 10
        while not router.mirror.report() or router.mirror.tasks or not router.stats.mirror_compared:
            assert time.monotonic() < deadline
            await _sleep(0.02)
        compared = (await c.get("/_router/stats")).json()["mirror"]
    assert [(m["route"], m["compared"]) for m in compared] == [("/data", 1)]


def status_of(url: str, path: str, authorization: bytes) -> int:
    """The status a real server answers a GET whose Authorization header is exactly these bytes (an
    HTTP client would refuse to send some of them)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: " + authorization + b"\r\n")
        s.sendall(b"Connection: close\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_the_router_and_the_controller_read_an_authorization_header_alike_the_exact_token(tmp_path):
    from canary.controller.app import create_controller_app

    settings = Settings(db_url=f"sqlite:///{tmp_path / 'c.db'}", state_dir=str(tmp_path), admin_token=TOKEN)
    controller = create_controller_app(settings, stable={}, router_url="", public_url="", tick_s=3600)
    sent = {
        b"Bearer " + TOKEN.encode(): 200,
        b"bearer " + TOKEN.encode(): 200,  # the scheme is a word of any case (RFC 9110 11.1)
        b"Bearer " + TOKEN.encode() + b" ": 200,  # spaces after a value are not part of it (RFC 9110 5.5)
        b"Bearer " + TOKEN.encode() + b"\t": 200,
        b"Bearer  " + TOKEN.encode(): 401,  # within the value: the token would be " router-admin"
        b"Bearer " + TOKEN.encode() + b" x": 401,
        b"Bearer " + TOKEN.encode()[:-1]: 401,
        b"Bearer " + TOKEN.encode() + b"x": 401,
        b"Basic " + TOKEN.encode(): 401,
    }
    with serve_router_in_thread(create_router(Settings(admin_token=TOKEN))) as router_url:
        at_router = {header: status_of(router_url, "/_router/table", header) for header in sent}
    with serve_in_thread(controller) as controller_url:
        at_controller = {header: status_of(controller_url, "/api/readers", header) for header in sent}
    assert at_router == at_controller == sent
