"""The router's count of distinct customers per sticky bucket group (the judge's sample-ratio check
on customers): each customer once per rollout, across the tables of one rollout; afresh for a new
salt; a bounded memory."""

from __future__ import annotations

import bisect

from canary.router import stats as stats_module
from canary.router.split import Splitter, sticky_bucket
from canary.router.stats import RouterStats
from core.routes import ServiceRoute, Sticky

GROUPS = (500, 2500, 5000)


def route(weight: float, salt: str = "r-1") -> ServiceRoute:
    sticky = Sticky(header="x-account-id", salt=salt, groups=GROUPS)
    return ServiceRoute("svc", {"stable": "http://a", "canary": "http://b"}, weight=weight, sticky=sticky)


def counted(stats: RouterStats) -> list[int]:
    return [row[3] for row in stats.groups["svc"].counts]


def test_each_customer_counts_once_in_its_group_across_the_tables_of_one_rollout():
    stats = RouterStats()
    keys = [f"acct-{i}" for i in range(600)] + ["x" * 300]  # a key too long to cache is still one customer
    expected = [0, 0, 0, 0]
    for key in keys:
        expected[bisect.bisect_right(GROUPS, sticky_bucket(route(5), key))] += 1
    for weight in (5, 25, 50):  # each step a new table, so a new split, the same salt
        r = route(weight)
        split = Splitter(r, stats.group_counts("svc", r.sticky))
        for key in keys * 3:
            split.choose({"x-account-id": key}, "x")
    assert counted(stats) == expected and sum(expected) == len(keys)
    fresh = route(5, salt="r-2")  # the next rollout: its own salt, counted afresh
    Splitter(fresh, stats.group_counts("svc", fresh.sticky)).choose({"x-account-id": "acct-1"}, "x")
    assert sum(counted(stats)) == 1


def test_the_count_stops_at_its_cap(monkeypatch):
    monkeypatch.setattr(stats_module, "CUSTOMERS_TRACKED", 50)
    stats = RouterStats()
    r = route(5)
    split = Splitter(r, stats.group_counts("svc", r.sticky))
    for i in range(200):
        split.choose({"x-account-id": f"acct-{i}"}, "x")
    assert sum(counted(stats)) == 50 and len(stats.groups["svc"].seen) == 50
