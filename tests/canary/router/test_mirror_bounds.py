"""The mirror's bounds, against real upstreams on 127.0.0.1 behind a real router: a baseline that
does not answer is load, not noise (not counted); comparisons in flight are bounded per router (the
rest skipped and counted); a mirrored answer trickled past its deadline is a failed answer."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from canary.router import mirror as mirror_module
from tests.canary.router.test_mirror_noise import catalogue
from tests.canary.test_builtin_provider import TOKEN, router_in_front_of

ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mirror_row(url: str, done) -> dict:
    deadline = time.monotonic() + 30
    while True:
        rows = httpx.get(f"{url}/_router/stats").json()["mirror"]
        if rows and done(rows[0]):
            return rows[0]
        assert time.monotonic() < deadline, rows
        time.sleep(0.05)


def test_a_baseline_that_does_not_answer_is_neither_counted_nor_learnt_from():
    dead = f"http://127.0.0.1:{_closed_port()}"
    with router_in_front_of(catalogue(), 0, stable_app=catalogue(), baseline=dead, mirror={"share": 1.0}) as url:
        for n in range(10):
            assert httpx.get(f"{url}/svc/items/{n}").status_code == 200
        row = _mirror_row(url, lambda r: r["compared"] == 10)
        noise = httpx.get(f"{url}/_router/mirror", headers=ADMIN).json()["noise"]
    # stable's copy refused every connection: no baseline comparison, nothing learnt, so the
    # request ids (which differ between any two answers) count against the canary, as without one
    assert (row["baseline_compared"], row["baseline_different"], row["different"]) == (0, 0, 10)
    assert noise == {}


def _held_canary(release: threading.Event) -> Starlette:
    async def item(request: Request) -> JSONResponse:
        await asyncio.to_thread(release.wait, 30)
        return JSONResponse({"item": int(request.path_params["n"])})

    return Starlette(routes=[Route("/items/{n:int}", item)])


def _items() -> Starlette:
    return Starlette(routes=[Route("/items/{n:int}", lambda r: JSONResponse({"item": int(r.path_params["n"])}))])


def test_comparisons_in_flight_are_bounded_and_the_rest_skipped_and_counted(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(mirror_module, "MAX_IN_FLIGHT", 2)  # the router runs in this process
    release = threading.Event()
    with router_in_front_of(_held_canary(release), 0, stable_app=_items(), mirror={"share": 1.0}) as url:
        with httpx.Client() as client:
            for n in range(10):  # consumers are answered while the canary holds every mirrored request
                assert client.get(f"{url}/svc/items/{n}").status_code == 200
        skipped = _mirror_row(url, lambda r: r["skipped"] == 8)
        release.set()
        row = _mirror_row(url, lambda r: r["compared"] == 2)
    assert skipped["compared"] == 0
    assert (row["compared"], row["different"], row["skipped"]) == (2, 0, 8)


def _trickling_canary() -> Starlette:
    async def item(request: Request) -> StreamingResponse:
        async def chunks():
            yield b'{"item": '
            for _ in range(8):
                await asyncio.sleep(0.3)  # each chunk within the route's timeout, the whole far past it
                yield b" "
            yield b"%d}" % request.path_params["n"]

        return StreamingResponse(chunks(), media_type="application/json")

    return Starlette(routes=[Route("/items/{n:int}", item)])


def test_a_mirrored_answer_trickled_past_its_deadline_is_a_failed_answer():
    with router_in_front_of(_trickling_canary(), 0, stable_app=_items(), mirror={"share": 1.0}, timeout_s=0.5) as url:
        assert httpx.get(f"{url}/svc/items/7").status_code == 200
        row = _mirror_row(url, lambda r: r["compared"] == 1)
        samples = httpx.get(f"{url}/_router/mirror", headers=ADMIN).json()["samples"]["svc"]
    assert row["different"] == 1
    assert samples[0]["differences"] == [f"status 200 != {mirror_module.FAILED}"]
