"""The router as `canary up` runs it: a real ``python -m canary.router`` process on 127.0.0.1,
restarted when it dies, serving the table it kept on disk, adopted by the next run after a crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from canary.platforms.local_router import LocalRouter
from canary.platforms.processes import free_port, pid_alive
from core.serve import serve_in_thread


@pytest.fixture
def upstream() -> Iterator[str]:
    async def hello(request: Request) -> JSONResponse:
        return JSONResponse({"served": "stable"})

    with serve_in_thread(Starlette(routes=[Route("/{path:path}", hello)])) as url:
        yield url


def answers(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def wait_for(condition, seconds: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_a_dead_router_is_restarted_and_serves_the_table_it_kept_while_the_source_is_gone(tmp_path, upstream):
    table = tmp_path / "routes.json"
    table.write_text(json.dumps({"version": 3, "services": {"svc": {"upstreams": {"stable": upstream}}}}))
    router = LocalRouter(tmp_path, str(table), free_port(), admin_token="tok")
    router.start()
    try:
        assert answers(f"{router.url}/svc/x") == 200
        wait_for(lambda: (tmp_path / "router-table.json").exists())
        table.unlink()  # the table's source is gone: only the kept copy has it now
        first = router.pid
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: router.restarts == 1 and answers(f"{router.url}/healthz") == 200)
        assert router.pid != first
        assert answers(f"{router.url}/svc/x") == 200  # never unknown_service for a service it served
    finally:
        router.stop()
    assert not pid_alive(router.pid)


def test_a_router_left_by_a_killed_run_is_adopted_and_a_stop_stops_it(tmp_path, upstream):
    table = tmp_path / "routes.json"
    table.write_text(json.dumps({"version": 1, "services": {"svc": {"upstreams": {"stable": upstream}}}}))
    port = free_port()
    first = LocalRouter(tmp_path, str(table), port, admin_token="tok")
    first.start()
    first._stopping.set()  # the run that started it dies: its supervisor is gone, the router is not
    second = LocalRouter(tmp_path, str(table), port, admin_token="tok")
    try:
        second.start()
        assert second.adopted and second.pid == first.pid  # the same process: consumers saw nothing
        os.kill(second.pid, signal.SIGKILL)  # an adopted router is supervised too
        wait_for(lambda: second.restarts == 1 and answers(f"{second.url}/svc/x") == 200)
    finally:
        second.stop()
    assert not pid_alive(first.pid) and not pid_alive(second.pid)
    other = LocalRouter(tmp_path, str(table), free_port(), admin_token="tok")  # a stale record: another port
    other.start()
    try:
        assert not other.adopted and answers(f"{other.url}/svc/x") == 200
    finally:
        other.stop()


def test_a_spare_router_waits_ready_and_exits_when_whoever_started_it_is_gone(tmp_path, upstream):
    table = tmp_path / "routes.json"
    table.write_text(json.dumps({"version": 1, "services": {"svc": {"upstreams": {"stable": upstream}}}}))
    router = LocalRouter(tmp_path, str(table), free_port(), admin_token="tok")
    router.start()
    try:
        wait_for(lambda: router._spare is not None)
        spare = router._spare
        assert spare is not None and spare.poll() is None
        assert answers(f"{router.url}/svc/x") == 200  # the spare has not taken the port: the router has
        os.kill(router.pid, signal.SIGKILL)
        wait_for(lambda: router.restarts == 1 and answers(f"{router.url}/svc/x") == 200)
        assert router.pid == spare.pid  # the spare became the router
        wait_for(lambda: router._spare is not None and router._spare.poll() is None)  # and a new spare waits
        orphan = router._spare
    finally:
        router.stop()
    assert orphan is not None and orphan.poll() is not None
    # a spare whose starter died (its stdin closes) exits instead of lingering
    lonely = router._popen_of("canary.platforms.router_standby", stdin=subprocess.PIPE)
    assert lonely.stdin is not None
    lonely.stdin.close()
    assert lonely.wait(60) == 0
