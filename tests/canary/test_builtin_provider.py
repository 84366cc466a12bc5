"""The builtin provider against a real router and real opens processors on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from pathlib import Path

import httpx
import pytest

from canary.catalog import load_catalog
from canary.providers.base import (
    Bin,
    BinMaker,
    Counts,
    GroupTotals,
    MetricQuery,
    ProviderUnavailable,
    SlowTotals,
    TrackCounts,
)
from canary.providers.builtin import BuiltinProvider
from canary.router.app import create_router
from canary.router.split import sticky_bucket
from canary.router.stats import BUCKETS
from core.routes import ServiceRoute, Sticky
from core.serve import serve_in_thread
from core.settings import Settings
from services.opens.app import create_opens_app
from services.opens.processor import create_processor_app
from tests.canary.router.test_router import closed_port_url
from tests.canary.router.upstreams import echo_app

TOKEN = "t"
SHIPPED = load_catalog([Path(__file__).resolve().parents[2] / "manifests" / "services"])
ERRORS = MetricQuery("svc", "errors", canary_release="1.1", stable_release="1.0")


@contextlib.contextmanager
def router_in_front_of(
    canary_app,
    weight: float,
    failover: bool = True,
    sticky: dict | None = None,
    stable_app=None,
    baseline: str = "",
    **route: object,
):
    """A real router with the service ``svc`` on 1.0 (an echo by default) and 1.1; ``baseline``: the
    URL of a baseline copy of stable; ``route``: more of the service's table fields (``mirror``, say)."""
    with contextlib.ExitStack() as stack:
        stable = stack.enter_context(serve_in_thread(stable_app or echo_app("stable")))
        canary = stack.enter_context(serve_in_thread(canary_app))
        url = stack.enter_context(serve_in_thread(create_router(Settings(admin_token=TOKEN))))
        table = {
            "version": 1,
            "services": {
                "svc": {
                    "upstreams": {"stable": stable, "canary": canary, **({"baseline": baseline} if baseline else {})},
                    "releases": {"stable": "1.0", "canary": "1.1", **({"baseline": "1.0"} if baseline else {})},
                    "weight": weight,
                    "failover": failover,
                    **({"sticky": sticky} if sticky else {}),
                    **route,
                }
            },
        }
        httpx.put(
            f"{url}/_router/table", content=json.dumps(table), headers={"Authorization": f"Bearer {TOKEN}"}
        ).raise_for_status()
        yield url


def test_errors_per_track_and_bins_from_cumulative_counts():
    with router_in_front_of(echo_app("canary", fail=True), weight=50) as url:
        provider = BuiltinProvider(url)
        bins = BinMaker()
        assert bins.next_bin(asyncio.run(provider.cumulative(ERRORS)), 100.0) == Bin(Counts(), Counts(), 0.0)
        for _ in range(40):
            assert httpx.get(f"{url}/svc/x").status_code == 200  # failover: consumers see no error
        reading = asyncio.run(provider.cumulative(ERRORS))
        one = bins.next_bin(reading, 102.5)
    assert one.canary.events == one.canary.bad > 5  # every canary answer was a 500
    assert one.stable.bad == 0 and one.stable.events == 40  # stable served all 40, failovers included
    assert one.seconds == 2.5  # the bin's length, measured by the caller's clock


def test_latency_counts_requests_slower_than_the_threshold():
    with router_in_front_of(echo_app("canary", delay_s=0.3), weight=50) as url:
        for _ in range(20):
            httpx.get(f"{url}/svc/x", timeout=5)
        q = MetricQuery("svc", "latency", "1.1", "1.0", threshold_ms=200)
        counts = asyncio.run(BuiltinProvider(url).cumulative(q))
    assert counts.canary.events == counts.canary.bad > 0 and counts.stable.bad == 0


def test_sticky_bucket_groups_are_counted_for_the_rollouts_salt_whatever_track_served():
    sticky = {"header": "X-Account-Id", "salt": "r-1", "groups": [1000, 3000]}
    route = ServiceRoute("svc", {"stable": "http://x"}, sticky=Sticky(header="x-account-id", salt="r-1"))
    expected, customers = [0, 0, 0], [0, 0, 0]
    with (
        router_in_front_of(echo_app("canary", fail=True), weight=10, failover=False, sticky=sticky) as url,
        httpx.Client() as client,  # one connection, kept alive, as a consumer's client does
    ):
        for i in range(300):
            b = sticky_bucket(route, f"a{i}")
            group = 0 if b < 1000 else 1 if b < 3000 else 2
            customers[group] += 1
            for _ in range(1 + i % 3):  # customers ask once, twice or three times: each is one customer
                client.get(f"{url}/svc/x", headers={"X-Account-Id": f"a{i}"})
                expected[group] += 1
        # no key: no customer, no group; routed by chance (10%), the canary's answer a 500
        keyless_on_canary = httpx.get(f"{url}/svc/x").status_code == 500
        q = MetricQuery("svc", "errors", "1.1", "1.0", sticky_salt="r-1", sticky_groups=(1000, 3000))
        provider = BuiltinProvider(url)
        counts = asyncio.run(provider.cumulative(q))
        other_salt = asyncio.run(provider.cumulative(dataclasses.replace(q, sticky_salt="r-2")))
        metrics = httpx.get(f"{url}/metrics").text
    assert [g.requests for g in counts.groups] == expected
    assert [g.customers for g in counts.groups] == customers
    first, second, reference = counts.groups
    # weight 10%: group 0 (buckets below 1000) is the canary's, every answer of it a 500
    assert first.canary_requests == first.requests == first.bad == counts.canary.events - keyless_on_canary
    assert second.canary_requests == reference.canary_requests == 0 and second.bad == reference.bad == 0
    assert other_salt.groups == ()  # another rollout's counts are never taken for this one's
    line = 'router_sticky_group_requests_total{boundaries="1000,3000",group="2",salt="r-1",service="svc"}'
    assert f"{line} {float(expected[2])}" in metrics  # the salt and boundaries: which rollout's groups
    gauge = 'router_sticky_group_customers{boundaries="1000,3000",group="0",salt="r-1",service="svc"}'
    assert f"{gauge} {float(customers[0])}" in metrics


def test_latency_gives_the_whole_histogram():
    # margins for a busy machine: the canary sleeps 0.6 s (never under 500 ms, far under 2.5 s);
    # stable's echo answers in milliseconds (under 500 ms however busy the machine)
    with router_in_front_of(echo_app("canary", delay_s=0.6), weight=50) as url:
        for _ in range(20):
            httpx.get(f"{url}/svc/x", timeout=5)
        q = MetricQuery("svc", "latency", "1.1", "1.0", threshold_ms=200)
        counts = asyncio.run(BuiltinProvider(url).cumulative(q))
    slower = {s.le_ms: s for s in counts.slower}
    assert len(slower) == len(BUCKETS) and counts.canary.events > 0 and counts.stable.events > 0
    assert slower[500].canary == counts.canary.events and slower[500].stable == 0
    assert slower[2500].canary == 0 and slower[5].stable <= counts.stable.events


def test_a_source_that_is_down_is_unavailable_never_zero():
    with pytest.raises(ProviderUnavailable, match="ConnectError"):
        asyncio.run(BuiltinProvider(closed_port_url()).cumulative(ERRORS))


def test_counter_restart_counts_from_zero():
    bins = BinMaker()
    bins.next_bin(TrackCounts(Counts(100, 5), Counts(1000, 10)), 10.0)
    assert bins.next_bin(TrackCounts(Counts(7, 1), Counts(1010, 10)), 10.5) == Bin(Counts(7, 1), Counts(10, 0), 0.5)


def test_bins_of_bucket_groups_and_of_the_histogram_are_increments():
    g = lambda *v: tuple(GroupTotals(*x) for x in v)  # noqa: E731
    bins = BinMaker()
    bins.next_bin(TrackCounts(Counts(), Counts(), g((10, 1, 10, 4), (90, 2, 0, 30)), (SlowTotals(250, 3, 4),)), 1.0)
    stored = BinMaker.from_dict(json.loads(json.dumps(bins.to_dict())))
    now = g((15, 1, 15, 5), (100, 5, 0, 33))
    b = stored.next_bin(TrackCounts(Counts(), Counts(), now, (SlowTotals(250, 4, 9),)), 2.0)
    # requests are increments; the distinct customers seen are a level, passed on as read
    assert b.groups == g((5, 0, 5, 5), (10, 3, 0, 33)) and b.slower == (SlowTotals(250, 1, 5),)
    old = bins.to_dict()
    old["groups"] = [row[:3] for row in old["groups"]]  # stored before customers were counted
    assert BinMaker.from_dict(old).last.groups == g((10, 1, 10, 0), (90, 2, 0, 0))
    # groups that appear (a salt now in the table) give no bin yet: they count from here on
    fresh = BinMaker()
    fresh.next_bin(TrackCounts(Counts(), Counts()), 1.0)
    assert fresh.next_bin(TrackCounts(Counts(), Counts(), g((1, 0, 0), (2, 0, 0))), 2.0).groups == ()


def test_a_bin_maker_resumes_from_its_stored_form():
    bins = BinMaker()
    bins.next_bin(TrackCounts(Counts(100, 5), Counts(1000, 10)), 10.0)
    resumed = BinMaker.from_dict(json.loads(json.dumps(bins.to_dict())))
    assert resumed.next_bin(TrackCounts(Counts(110, 6), Counts(1100, 10)), 12.0) == Bin(
        Counts(10, 1), Counts(100, 0), 2.0
    )


def test_conservation_from_the_processors_of_each_track(tmp_path):
    url = f"sqlite:///{tmp_path / 'opens.db'}"
    common = {"db_url": url, "state_dir": str(tmp_path), "admin_token": TOKEN}
    with (
        serve_in_thread(create_opens_app(Settings(**common))) as opens,
        serve_in_thread(create_processor_app(Settings(**common, release="1.1"))) as canary,
    ):
        sends = [{"campaign_id": 1, "contact_id": i, "send_id": i} for i in range(30)]
        tokens = httpx.post(
            f"{opens}/admin/tokens", json={"sends": sends}, headers={"Authorization": f"Bearer {TOKEN}"}
        ).json()["tokens"]
        for i, t in enumerate(tokens):  # every third hit has no user agent: 1.1 loses those
            httpx.get(f"{opens}{t['url']}", headers={"User-Agent": "" if i % 3 == 0 else "Mozilla/5.0"})
        for _ in range(100):
            if httpx.get(f"{opens}/stats").json()["events_pending"] == 0:
                break
            asyncio.run(asyncio.sleep(0.05))
        q = MetricQuery("opens", "conservation", canary_release="1.1", stable_release="1.0")
        urls = {("opens-processor", "1.1"): canary, ("opens-processor", "1.0"): canary}
        # the counters it reads are the opens entry's (catalog data), not the provider's
        provider = BuiltinProvider("", lambda consumer, release: urls.get((consumer, release)), SHIPPED.conservation())
        counts = asyncio.run(provider.cumulative(q))
        with pytest.raises(ProviderUnavailable, match="svc has no queue consumer with conservation counters"):
            asyncio.run(provider.cumulative(dataclasses.replace(q, service="svc")))
    assert counts.canary == Counts(30, 10)  # 30 acknowledged, 10 neither recorded nor filtered
    assert counts.stable == Counts(0, 0)  # no stable (1.0) processing was reported by that processor
