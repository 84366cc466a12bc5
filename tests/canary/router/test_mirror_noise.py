"""The mirror's baseline against real upstreams on 127.0.0.1: stable asked a second time
(``stable_baseline``) shows what differs between two answers of the same release (a request id
drawn per answer), that noise is learnt and never counted against the canary, and both sides'
comparisons are counted for the judge (the router's snapshot, read by the builtin provider)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from canary.providers.base import Counts, MetricQuery, TrackCounts
from canary.providers.builtin import BuiltinProvider
from tests.canary.test_builtin_provider import TOKEN, router_in_front_of

ADMIN = {"Authorization": f"Bearer {TOKEN}"}
REQUESTS = 30
MIRROR = MetricQuery("svc", "mirror", canary_release="1.1", stable_release="1.0")


def catalogue(wrong_on_odd_items: bool = False) -> Starlette:
    """An item's price, and a request id drawn for every answer (the noise two copies show)."""

    async def item(request: Request) -> JSONResponse:
        n = int(request.path_params["n"])
        price = n * 10 + (1 if wrong_on_odd_items and n % 2 else 0)
        return JSONResponse({"item": n, "price": price, "request_id": uuid.uuid4().hex})

    return Starlette(routes=[Route("/items/{n:int}", item)])


@contextlib.contextmanager
def mirrored(canary: Starlette, stable_baseline: bool = True):
    mirror = {"share": 1.0, "stable_baseline": stable_baseline}
    with router_in_front_of(canary, weight=0, stable_app=catalogue(), mirror=mirror) as url:
        for n in range(REQUESTS):
            r = httpx.get(f"{url}/svc/items/{n}")
            assert r.status_code == 200 and r.json()["price"] == n * 10  # consumers get stable's answer
        yield url, _compared(url, baseline=stable_baseline)


def _compared(url: str, baseline: bool) -> dict:
    """The router's mirror row once every request is compared (the mirror works after answering)."""
    deadline = time.monotonic() + 30
    while True:
        rows = httpx.get(f"{url}/_router/stats").json()["mirror"]
        row = rows[0] if rows else {}
        if row.get("compared") == REQUESTS and row.get("baseline_compared") == (REQUESTS if baseline else 0):
            return row
        assert time.monotonic() < deadline, rows
        time.sleep(0.05)


def test_noise_between_stable_answers_is_learnt_and_counted_on_the_baseline_side_only():
    with mirrored(catalogue()) as (url, row):
        report = httpx.get(f"{url}/_router/mirror", headers=ADMIN).json()
        # its samples are consumers' requests and answers: the admin's only
        assert httpx.get(f"{url}/_router/mirror").status_code == 401
        reading = asyncio.run(BuiltinProvider(url).cumulative(MIRROR))
    # the first request shows the request id differing between stable's two answers: the baseline's
    # one difference; learnt before the canary's answer is compared, it never counts against it
    assert (row["different"], row["baseline_different"]) == (0, 1)
    assert report["noise"] == {"svc /items/{id}": ["$.request_id"]}
    assert reading == TrackCounts(Counts(REQUESTS, 0), Counts(REQUESTS, 1))


def test_a_canary_wrong_on_a_real_field_differs_beside_the_learnt_noise():
    with mirrored(catalogue(wrong_on_odd_items=True)) as (url, row):
        samples = httpx.get(f"{url}/_router/mirror", headers=ADMIN).json()["samples"]["svc"]
    assert (row["different"], row["baseline_different"]) == (REQUESTS // 2, 1)
    assert all(d.startswith("$.price: ") for s in samples for d in s["differences"])


def test_without_a_baseline_nothing_is_learnt_and_the_noise_counts_against_the_canary():
    with mirrored(catalogue(), stable_baseline=False) as (url, row):
        reading = asyncio.run(BuiltinProvider(url).cumulative(MIRROR))
    assert row["different"] == REQUESTS  # every request id differs: the judge then needs ignore_fields
    assert reading == TrackCounts(Counts(REQUESTS, REQUESTS), Counts())
