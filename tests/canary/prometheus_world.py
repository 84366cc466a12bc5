"""The Prometheus provider's test world: a real Prometheus (Debian's package) on 127.0.0.1 that
scrapes, every second, a real HTTP server exposing the router's own counters (``RouterStats``: the
same collector the router registers) and listing itself as the scrape target, as the controller
does.  The test sets the counts, so it knows what the judge must see; ``scraped``, ``settle`` and
``settle_bin`` wait until Prometheus has them.  The ``exporter`` fixture (tests/canary/conftest.py)
starts both; used by test_prometheus_provider and test_prometheus_unavailable."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from canary.providers.base import Bin, BinMaker, Counts, MetricQuery, ProviderUnavailable, TrackCounts
from canary.providers.prometheus import PrometheusProvider
from canary.router.stats import RouterStats

ERRORS = MetricQuery("importer", "errors", "1.1", "1.0")
NOTHING = TrackCounts(Counts(), Counts())


class Exporter:
    """A real server with the router's counters at /metrics and /_router/stats, and the target list."""

    def __init__(self) -> None:
        self.stats = RouterStats()
        self.registry = CollectorRegistry()  # a consumer's own counters, beside the router's
        self.url = ""
        self.targets: list[str] = []  # more to scrape (host:port): a real router, say

    def app(self) -> Starlette:
        async def metrics(request: Request) -> Response:
            registry = CollectorRegistry()
            registry.register(self.stats)
            body = generate_latest(registry) + generate_latest(self.registry)
            return Response(body, media_type="text/plain; version=0.0.4")

        async def snapshot(request: Request) -> Response:
            return JSONResponse(self.stats.snapshot())

        async def targets(request: Request) -> Response:
            assert request.headers["authorization"] == "Bearer t0ken"
            hosts = [self.url.split("//")[1], *self.targets]
            return JSONResponse([{"targets": hosts, "labels": {"component": "router"}}])

        return Starlette(
            routes=[Route("/metrics", metrics), Route("/_router/stats", snapshot), Route("/api/targets", targets)]
        )

    def serve(self, track: str, release: str, requests: int, errors: int) -> None:
        for i in range(requests):
            self.stats.record(("importer", track, release, "/imports"), i < errors, 0.01)


def scraped(provider: PrometheusProvider, promql: str, value: float, seconds: float = 60) -> None:
    """Wait until Prometheus shows ``value`` for ``promql`` at the provider's evaluation time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = asyncio.run(provider._query(promql, time.time() - provider.delay_s))
        if list(got.values()) == [value]:
            return
        time.sleep(0.3)
    raise AssertionError(f"Prometheus never showed {promql} = {value}")


def settle(
    provider: PrometheusProvider, query: MetricQuery, expected: TrackCounts, seconds: float = 60
) -> TrackCounts | None:
    """Read until Prometheus has what the test served (scrape, then the provider's delay)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            reading = asyncio.run(provider.cumulative(query))
        except ProviderUnavailable:
            reading = None
        if reading == expected or time.monotonic() > deadline:
            return reading
        time.sleep(0.5)


def settle_bin(
    provider: PrometheusProvider, query: MetricQuery, bins: BinMaker, expected: Bin, seconds: float = 60
) -> Bin:
    """The bin Prometheus gives after ``bins``' last reading, once it has what the test served."""
    deadline = time.monotonic() + seconds
    while True:
        trial = BinMaker.from_dict(bins.to_dict())  # each try from the same last reading
        got = trial.next_bin(asyncio.run(provider.cumulative(query)), expected.seconds)
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.5)
