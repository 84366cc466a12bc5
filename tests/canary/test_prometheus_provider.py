"""The Prometheus provider against a real Prometheus (Debian's package) on 127.0.0.1: the counts the
judge reads through it are the router's own (the same bins as from the builtin provider, mirror
comparisons, sticky groups, the latency histogram, customers over several routers, a router's
restart), a consumer's conservation counters and a query metric's own templates.  The world is
tests.canary.prometheus_world; when the provider cannot read, test_prometheus_unavailable."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import httpx
import pytest
from prometheus_client import Counter

from canary.catalog import load_catalog
from canary.providers.base import Bin, BinMaker, Counts, MetricQuery, ProviderUnavailable, TrackCounts
from canary.providers.builtin import BuiltinProvider
from canary.providers.prometheus import PrometheusProvider
from canary.router.stats import BUCKETS, RouterStats
from core.routes import Sticky
from core.serve import serve_in_thread
from tests.canary.prometheus_world import ERRORS, NOTHING, Exporter, scraped, settle, settle_bin
from tests.canary.router.upstreams import echo_app
from tests.canary.test_builtin_provider import router_in_front_of


def test_the_judge_sees_the_same_counts_as_from_the_builtin_provider(exporter):
    exp, prom = exporter
    provider = PrometheusProvider(prom.url, scrape_interval_s=1.0)
    exp.serve("stable", "1.0", 500, 3)  # before the rollout: the baseline, not counted
    scraped(provider, "sum(router_requests_total)", 500)
    builtin = BuiltinProvider(exp.url)
    prom_bins, builtin_bins = BinMaker(), BinMaker()
    assert prom_bins.next_bin(asyncio.run(provider.cumulative(ERRORS)), 0.0).seconds == 0.0  # the first reading
    builtin_bins.next_bin(asyncio.run(builtin.cumulative(ERRORS)), 0.0)

    exp.serve("canary", "1.1", 40, 7)  # the canary's counters appear only now (a new series)
    exp.serve("stable", "1.0", 300, 2)
    from_builtin = builtin_bins.next_bin(asyncio.run(builtin.cumulative(ERRORS)), 1.0)
    # the provider's running totals start at its first reading
    reading = settle(provider, ERRORS, TrackCounts(Counts(40, 7), Counts(300, 2)))
    assert reading is not None
    from_prometheus = prom_bins.next_bin(reading, 1.0)
    assert from_prometheus == from_builtin == Bin(Counts(40, 7), Counts(300, 2), 1.0)  # exact, not extrapolated


def test_mirror_comparisons_the_canarys_and_a_baselines_are_read_as_the_router_counts_them(exporter):
    exp, prom = exporter
    provider, builtin = PrometheusProvider(prom.url, scrape_interval_s=1.0), BuiltinProvider(exp.url)
    query = MetricQuery("resizer", "mirror", "2.0", "1.0")
    exp.stats.mirrored("resizer", "/images/{id}", True)  # before the first reading: not counted
    scraped(provider, "sum(router_mirror_compared_total)", 1)
    prom_bins, builtin_bins = BinMaker(), BinMaker()
    # no baseline yet: the stable side has no series at all, which is nothing compared, not an outage
    first = asyncio.run(provider.cumulative(query))
    assert first.stable == Counts()
    prom_bins.next_bin(first, 0.0)
    builtin_bins.next_bin(asyncio.run(builtin.cumulative(query)), 0.0)
    for i in range(20):
        exp.stats.mirrored("resizer", "/images/{id}", i < 4)
        exp.stats.mirrored("resizer", "/images/{id}", i < 1, track="baseline")  # its series new now
    expected = builtin_bins.next_bin(asyncio.run(builtin.cumulative(query)), 1.0)
    assert expected == Bin(Counts(20, 4), Counts(20, 1), 1.0)
    assert settle_bin(provider, query, prom_bins, expected) == expected


def test_sticky_groups_and_the_latency_histogram_are_the_real_routers_own(exporter):
    """A real router in front of a stable and a slow, failing canary, routing by customer with the
    rollout's salt: through Prometheus the judge gets the same bucket-group counts (so the sticky
    group test runs, not the per-request fallback) and the same histogram as from the router."""
    exp, prom = exporter
    sticky = {"header": "X-Account-Id", "salt": "r-1", "groups": [1000, 3000]}
    canary = echo_app("canary", fail=True, delay_s=0.03)
    with router_in_front_of(canary, weight=10, failover=False, sticky=sticky) as url:
        exp.targets.append(url.split("//")[1])
        provider, builtin = PrometheusProvider(prom.url, scrape_interval_s=1.0), BuiltinProvider(url)
        errors = MetricQuery("svc", "errors", "1.1", "1.0", sticky_salt="r-1", sticky_groups=(1000, 3000))
        latency = MetricQuery("svc", "latency", "1.1", "1.0", threshold_ms=25)
        queries = (errors, latency)
        customers = iter(range(10_000))

        def serve(n: int) -> None:
            with httpx.Client(timeout=5) as client:  # one kept-alive connection, as a consumer's client
                for _ in range(n):
                    client.get(f"{url}/svc/x", headers={"X-Account-Id": f"a{next(customers)}"})

        serve(60)  # before the first reading: the baseline, its groups already counted
        scraped(provider, 'sum(router_sticky_group_requests_total{salt="r-1"})', 60)
        prom_bins = {q.kind: BinMaker() for q in (errors, latency)}
        builtin_bins = {q.kind: BinMaker() for q in (errors, latency)}
        for q in (errors, latency):
            prom_bins[q.kind].next_bin(asyncio.run(provider.cumulative(q)), 0.0)
            builtin_bins[q.kind].next_bin(asyncio.run(builtin.cumulative(q)), 0.0)
        serve(300)
        expected = {
            q.kind: builtin_bins[q.kind].next_bin(asyncio.run(builtin.cumulative(q)), 1.0) for q in (errors, latency)
        }
        got = {q.kind: settle_bin(provider, q, prom_bins[q.kind], expected[q.kind]) for q in queries}
        other_rollout = asyncio.run(provider.cumulative(dataclasses.replace(errors, sticky_salt="r-2")))
    assert got == expected
    groups, slower = expected["errors"].groups, expected["latency"].slower
    assert sum(g.requests for g in groups) == 300 and groups[0].canary_requests == groups[0].bad > 0  # the canary's
    assert sum(g.customers for g in groups) == 360  # distinct customers since the salt: a level, the baseline's too
    assert len(slower) == len(BUCKETS) and {s.le_ms: s for s in slower}[25].canary == expected["latency"].canary.events
    assert expected["latency"].canary.bad == expected["latency"].canary.events > 0  # every canary answer slow
    assert other_rollout.groups == ()  # another rollout's salt: never this one's counts


def test_customers_are_the_most_one_router_has_seen_never_a_sum_over_routers(exporter):
    """Two routers count the same rollout's groups: their requests add up, but a customer who reaches
    both is one customer, so each group's customers are those of the router that has seen the most."""
    exp, prom = exporter
    second = Exporter()
    sticky = Sticky(header="x-account-id", salt="r-9", groups=(5000,))
    with serve_in_thread(second.app()) as url:
        second.url = url
        exp.targets.append(url.split("//")[1])
        for stats, customers in ((exp.stats, range(10)), (second.stats, range(6, 10))):  # 6-9 reach both
            for i in customers:
                stats.record_group("importer", sticky, i % 2, error=False, on_canary=False)
                stats.group_counts("importer", sticky).saw(f"a{i}", i % 2)
        exp.serve("canary", "1.1", 1, 0)
        exp.serve("stable", "1.0", 1, 0)
        provider = PrometheusProvider(prom.url, scrape_interval_s=1.0)
        scraped(provider, 'count(router_sticky_group_customers{salt="r-9"})', 4)  # two routers, two groups
        for stats in (exp.stats, second.stats):  # counters count from their first scrape: 3 more each
            for _ in range(3):
                stats.record_group("importer", sticky, 0, error=False, on_canary=False)
                stats.record_group("importer", sticky, 1, error=False, on_canary=False)
        query = dataclasses.replace(ERRORS, sticky_salt="r-9", sticky_groups=(5000,))
        deadline = time.monotonic() + 60
        while True:
            groups = asyncio.run(provider.cumulative(query)).groups
            if [g.requests for g in groups] == [6, 6]:
                break
            assert time.monotonic() < deadline, f"the two routers' requests never added up: {groups}"
            time.sleep(0.3)
    assert [g.customers for g in groups] == [5, 5]  # the first router's 10 customers, not 10 + 4


def test_conservation_reads_the_counters_its_consumer_s_catalog_entry_names(exporter, tmp_path):
    """A service the framework has never seen: its consumer's own counters, named in a catalog
    entry the test writes, are what the conservation metric reads through Prometheus."""
    exp, prom = exporter
    entry = tmp_path / "mail.yaml"
    entry.write_text(
        "apiVersion: releasewarden/v1\nkind: Service\nname: mail\nstable: '1'\nreleases: ['1', '2']\n"
        "kubernetes: {}\nconsumers:\n  - name: mail-worker\n    conservation:\n"
        "      acknowledged: mail_acked_total\n      accounted: [mail_sent_total, mail_dropped_total]\n"
    )
    counters = load_catalog([entry]).conservation()
    acked, sent, dropped = (
        Counter(name, "messages", ["release"], registry=exp.registry)
        for name in ("mail_acked", "mail_sent", "mail_dropped")
    )
    for release in ("1", "2"):
        acked.labels(release)  # the series exist (at zero) before the first reading
    provider = PrometheusProvider(prom.url, scrape_interval_s=1.0, conservation=counters)
    lost = MetricQuery("mail", "conservation", "2", "1")
    scraped(provider, 'count(mail_acked_total{release=~"1|2"})', 2)
    assert asyncio.run(provider.cumulative(lost)) == NOTHING
    acked.labels("2").inc(40)
    sent.labels("2").inc(30)
    dropped.labels("2").inc(4)  # 6 of the canary's 40 neither sent nor dropped on purpose: lost
    acked.labels("1").inc(100)
    sent.labels("1").inc(99)
    dropped.labels("1").inc(1)
    want = TrackCounts(Counts(40, 6), Counts(100, 0))
    assert settle(provider, lost, want) == want
    with pytest.raises(ProviderUnavailable, match="other has no queue consumer with conservation counters"):
        asyncio.run(provider.cumulative(dataclasses.replace(lost, service="other")))


def test_a_restarted_router_counts_from_zero_and_nothing_is_lost_or_doubled(exporter):
    exp, prom = exporter
    provider = PrometheusProvider(prom.url, scrape_interval_s=1.0)
    exp.serve("canary", "1.1", 100, 10)
    exp.serve("stable", "1.0", 100, 0)
    scraped(provider, "sum(router_requests_total)", 200)
    start = asyncio.run(provider.cumulative(ERRORS))
    exp.stats = RouterStats()  # the router restarted: its counters start again from zero
    exp.serve("canary", "1.1", 30, 4)
    exp.serve("stable", "1.0", 50, 1)
    want = TrackCounts(
        Counts(start.canary.events + 30, start.canary.bad + 4), Counts(start.stable.events + 50, start.stable.bad + 1)
    )
    assert settle(provider, ERRORS, want) == want


def test_a_query_metric_brings_its_own_templates_counter_or_increase(exporter):
    exp, prom = exporter
    counter = MetricQuery(
        "importer", "query", "1.1", "1.0",
        events_query='sum(router_requests_total{service="$service",track="$track"})',
        bad_query='sum(router_errors_total{service="$service",track="$track"})',
    )  # fmt: skip
    increase = MetricQuery(
        "importer", "query", "1.1", "1.0",
        events_query='sum(increase(router_requests_total{service="$service",track="$track"}[$window]))',
        bad_query='sum(increase(router_errors_total{service="$service",track="$track"}[$window]))',
    )  # fmt: skip
    provider = PrometheusProvider(prom.url, scrape_interval_s=1.0)
    exp.serve("canary", "1.1", 10, 0)
    exp.serve("stable", "1.0", 10, 0)
    scraped(provider, "sum(router_requests_total)", 20)
    assert asyncio.run(provider.cumulative(counter)) == asyncio.run(provider.cumulative(increase)) == NOTHING
    for i in range(1, 6):  # five scrapes apart: the increase() windows see a counter that moves
        exp.serve("canary", "1.1", 60, 6)
        exp.serve("stable", "1.0", 120, 0)
        scraped(provider, "sum(router_requests_total)", 20 + 180 * i)
    want = TrackCounts(Counts(300, 30), Counts(600, 0))
    assert settle(provider, counter, want) == want
    # increase() extrapolates at a window's edges: close to the truth, not exact (hence the default)
    got = asyncio.run(provider.cumulative(increase))
    assert 0.6 * 300 <= got.canary.events <= 1.4 * 300 and got.stable.bad == 0
