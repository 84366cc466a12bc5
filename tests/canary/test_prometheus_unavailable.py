"""When Prometheus cannot give the counts the judge needs, the provider says so (``ProviderUnavailable``,
with the query and Prometheus's words: the rollout holds) and never answers zero: a foreign latency
histogram, a bad query, a query with no series past its grace, Prometheus down or too slow.  Where
no series is expected (the watch's old release, not kept warm), it counts as nothing served.  The
world (a real Prometheus scraping the router's counters) is tests.canary.prometheus_world; the counts
read right are in test_prometheus_provider."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import pytest
from prometheus_client import Histogram
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from canary.providers.base import Counts, MetricQuery, ProviderUnavailable
from canary.providers.prometheus import PrometheusProvider
from core.serve import serve_in_thread
from tests.canary.prometheus_world import ERRORS, NOTHING, scraped


def refusal(
    provider: PrometheusProvider, query: MetricQuery, seconds: float, pause_s: float
) -> ProviderUnavailable | None:
    """Read ``query`` every ``pause_s`` until the provider refuses it: its refusal, or None if it
    still answered after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            asyncio.run(provider.cumulative(query))
        except ProviderUnavailable as exc:
            return exc
        if time.monotonic() >= deadline:
            return None
        time.sleep(pause_s)


def test_a_latency_histogram_that_is_not_the_router_s_holds_naming_the_missing_bucket(exporter):
    exp, prom = exporter
    other = Histogram(
        "router_request_duration_seconds", "not the router's", ["service", "track", "release"],
        buckets=(0.1, 1.0), registry=exp.registry,
    )  # fmt: skip
    other.labels("importer", "canary", "1.1").observe(0.05)
    other.labels("importer", "stable", "1.0").observe(0.05)
    provider = PrometheusProvider(prom.url, scrape_interval_s=1.0)
    latency = MetricQuery("importer", "latency", "1.1", "1.0", threshold_ms=250)
    scraped(provider, "count(router_request_duration_seconds_count)", 2)
    asyncio.run(provider.cumulative(latency))  # the first reading: the baseline
    other.labels("importer", "canary", "1.1").observe(0.05)
    refused = refusal(provider, latency, seconds=30, pause_s=0.3)
    assert refused is not None, "took a foreign histogram for the router's"
    assert "has no bucket le=0.005: not the router's latency histogram" in str(refused)


def test_a_bad_query_is_reported_with_the_query_and_prometheus_s_words(exporter):
    _exp, prom = exporter
    provider = PrometheusProvider(prom.url, scrape_interval_s=1.0)
    bad = MetricQuery("importer", "query", "1.1", "1.0", events_query="sum(rate(x[", bad_query="y")
    with pytest.raises(ProviderUnavailable) as caught:
        asyncio.run(provider.cumulative(bad))
    assert "sum(rate(x[" in str(caught.value) and "bad_data" in str(caught.value)


def test_no_series_holds_with_the_query_named_once_the_grace_is_over(exporter):
    _exp, prom = exporter
    provider = PrometheusProvider(prom.url, scrape_interval_s=1.0)
    provider.no_series_grace_s = 1.0
    missing = MetricQuery("importer", "query", "1.1", "1.0", events_query="no_such_metric_total", bad_query="x")
    # not yet: a new canary's first requests may not have been scraped
    assert asyncio.run(provider.cumulative(missing)) == NOTHING
    # past the grace (by the provider's own clock), it says so, with the query
    refused = refusal(provider, missing, seconds=30, pause_s=0.2)
    assert refused is not None, "never reported the missing series"
    assert "no series for no_such_metric_total" in str(refused)


def test_during_a_watch_with_no_old_release_kept_warm_its_empty_track_counts_as_nothing_served(exporter):
    """The watch after a promotion on a platform that keeps no warm copy of the old release: the
    canary track (the old release) has no series, and that is no outage; stable's is still needed."""
    exp, prom = exporter
    provider = PrometheusProvider(prom.url, scrape_interval_s=1.0)
    provider.no_series_grace_s = 0.0
    exp.serve("stable", "1.1", 50, 1)  # the promoted release serves on stable
    scraped(provider, 'sum(router_requests_total{track="stable",release="1.1"})', 50)
    watch = MetricQuery("importer", "errors", "1.0", "1.1", canary_optional=True)
    for _ in range(3):  # the first readings mark where the bins start; then past the grace
        got = asyncio.run(provider.cumulative(watch))
        time.sleep(0.6)
    assert got.canary == Counts()
    with pytest.raises(ProviderUnavailable):  # the same query with the track required is an outage
        asyncio.run(provider.cumulative(dataclasses.replace(watch, canary_optional=False)))


def test_prometheus_down_is_unavailable_never_zero(exporter):
    _exp, prom = exporter
    provider = PrometheusProvider(prom.url, scrape_interval_s=1.0, timeout_s=2.0)
    prom.stop()
    with pytest.raises(ProviderUnavailable, match=r"did not answer \(connection refused\)$"):
        asyncio.run(provider.cumulative(ERRORS))
    prom.start()


def test_a_slow_prometheus_holds_instead_of_blocking_the_controller():
    """A server on 127.0.0.1 that answers the query API only once the test has its verdict (no
    Prometheus needed for this): the provider must give up at its own timeout."""
    answered = threading.Event()

    async def slow(request: Request) -> Response:
        await asyncio.to_thread(answered.wait, 30)
        return JSONResponse({"status": "success", "data": {"resultType": "vector", "result": []}})

    with serve_in_thread(Starlette(routes=[Route("/api/v1/query", slow)])) as url:
        provider = PrometheusProvider(url, scrape_interval_s=1.0, timeout_s=0.5)
        try:
            with pytest.raises(ProviderUnavailable, match=r"did not answer within 0.5 s$"):
                asyncio.run(provider.cumulative(ERRORS))
            assert not answered.is_set()  # it gave up before any answer came, not after one
        finally:
            answered.set()
