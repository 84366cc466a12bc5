"""The controller's engine tick by tick: an injected clock, a real SQLite store, and in-process
fakes at the project's own Protocols (a platform that runs nothing, a provider whose counters the
test drives), the table's readers simulated by polling with their headers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field

import pytest

from canary.controller import machine as m
from canary.controller.bootstrap import bootstrap
from canary.controller.engine import Controller
from canary.controller.store import Store, metadata
from canary.platforms.base import Instance
from canary.providers.base import Counts, GroupTotals, MetricQuery, ProviderUnavailable, TrackCounts
from core.db import create_schema, make_engine
from core.errors import DependencyUnavailable, ServiceUnavailable, Unprocessable
from core.routes import parse_table
from core.settings import Settings

RELEASES = {"importer": ["1.0", "1.1", "1.2"], "resizer": ["1.0", "2.0", "2.1"]}


class FakePlatform:
    """Releases 'run' as entries; ``broken`` releases refuse to start, as a missing one would."""

    warm_old_release = True

    def __init__(self) -> None:
        self.running_: dict[tuple[str, str], str] = {}
        self.broken: set[str] = set()
        self.starts = 0

    async def start(self, service: str, release: str, track: str) -> Instance:
        if release in self.broken:
            raise DependencyUnavailable(f"{service} {release} exited at start: unknown release {release!r}")
        if (service, release) not in self.running_:
            self.starts += 1
        self.running_[(service, release)] = track
        return Instance(service, release, track, f"http://127.0.0.1:1/{service}/{release}")

    async def healthy(self, service: str, release: str) -> bool:
        return (service, release) in self.running_

    async def stop(self, service: str, release: str) -> None:
        self.running_.pop((service, release), None)

    async def running(self) -> list[Instance]:
        return [Instance(s, r, t, "") for (s, r), t in self.running_.items()]

    async def set_weight(self, service: str, weight: float) -> None:
        pass

    async def retire_canary(self, service: str) -> None:
        pass

    async def known_releases(self, service: str) -> list[str] | None:
        return RELEASES.get(service)

    async def not_ready_reason(self, service: str, release: str) -> str:
        return ""

    async def close(self) -> None:
        pass


@dataclass
class Track:
    events: int = 0
    bad: int = 0


@dataclass
class FakeProvider:
    """Cumulative counters per (service, track, release), as the router keeps them."""

    counts: dict[tuple[str, str, str], Track] = field(default_factory=dict)
    down: bool = False

    def serve(self, service: str, track: str, release: str, events: int, bad: int = 0) -> None:
        t = self.counts.setdefault((service, track, release), Track())
        t.events, t.bad = t.events + events, t.bad + bad

    async def cumulative(self, q: MetricQuery) -> TrackCounts:
        if self.down:
            raise ProviderUnavailable("the router's stats did not answer")
        c = self.counts.get((q.service, "canary", q.canary_release), Track())
        s = self.counts.get((q.service, "stable", q.stable_release), Track())
        return TrackCounts(Counts(c.events, c.bad), Counts(s.events, s.bad))


SPEC = """
apiVersion: releasewarden/v1
kind: Rollout
spec:
  service: {service}
  stable: "1.0"
  canary: "{canary}"
  steps:
    - {{weight: 10, min_requests: 20, min_seconds: 2, max_seconds: 600}}
    - {{weight: 50, min_requests: 20, min_seconds: 2, max_seconds: 600}}
  metrics:
    - {{name: errors, kind: errors, rate_floor: 0.2, min_regression: 3}}
  watch: {{seconds: {watch}, holdback: 10}}
"""


class World:
    def __init__(self, tmp_path, stable=None) -> None:
        self.engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
        create_schema(self.engine, metadata)
        self.store = Store(self.engine)
        self.now = 1000.0
        self.platform = FakePlatform()
        self.provider = FakeProvider()
        self.stable = stable or {"importer": "1.0", "resizer": "1.0"}
        self.controller = self.new_controller()

    def new_controller(self) -> Controller:
        c = bootstrap(
            Settings(admin_token="t"),
            store=self.store,
            platform=self.platform,
            provider=self.provider,
            clock=lambda: self.now,
            stable=self.stable,
        )
        asyncio.run(c.start_stable())
        return c

    def release(self, service="importer", canary="1.1", watch=30) -> m.Rollout:
        return asyncio.run(self.controller.create_rollout(SPEC.format(service=service, canary=canary, watch=watch)))

    def tick(self, seconds: float = 0.5, reader: str | None = None, lag: int = 0) -> None:
        self.now += seconds
        if reader:  # a router polls with the version it serves (lag: that many versions behind)
            served = self.controller.table.version - lag if lag >= 0 else 0
            with contextlib.suppress(ServiceUnavailable):  # before the first tick with the lease: kept table
                self.controller.poll_table((reader, served))
        asyncio.run(self.controller.tick())

    def get(self, r: m.Rollout) -> m.Rollout:
        return self.store.get(r.id)

    def traffic(self, service: str, canary: str, canary_bad: int = 0, stable_release: str = "1.0") -> None:
        self.provider.serve(service, "canary", canary, 20, canary_bad)
        self.provider.serve(service, "stable", stable_release, 200, 0)


def drive(world: World, r: m.Rollout, until, reader: str | None = "router/a", ticks: int = 200, **traffic) -> m.Rollout:
    for _ in range(ticks):
        world.traffic(r.spec.service, r.spec.canary, **traffic)
        world.tick(reader=reader)
        now = world.get(r)
        if until(now):
            return now
    raise AssertionError(f"never reached the condition: {world.get(r)}")


def test_the_route_table_is_typed_and_salted_per_rollout(tmp_path):
    w = World(tmp_path)
    one = w.release()
    w.tick(reader="router/a")
    w.tick(reader="router/a")
    route = w.controller.table.services["importer"]
    assert route.releases == {"stable": "1.0", "canary": "1.1"} and route.weight == 10
    assert route.sticky.header == "x-account-id" and route.sticky.salt == one.id[:16]
    asyncio.run(w.controller.tick())
    w.controller.command(one.id, "abort")
    drive(w, one, lambda r: r.phase == m.ROLLED_BACK)
    two = w.release(canary="1.2")
    w.tick(reader="router/a")
    assert w.controller.table.services["importer"].sticky.salt == two.id[:16] != one.id[:16]
    # what routers and consumers read back is the same table (services without a rollout included)
    served = w.controller.poll_table(("router/a", 0))
    assert parse_table(json.loads(json.dumps(served))) == w.controller.table


def test_a_step_passes_only_once_every_live_router_confirms_its_weight(tmp_path):
    w = World(tmp_path)
    r = w.release()
    w.tick(reader="router/a")
    w.tick(reader="router/b")
    for _ in range(20):  # router/b keeps serving an old table: step 1 never passes
        w.traffic("importer", "1.1")
        w.tick(reader="router/a")
        w.controller.poll_table(("router/b", 1))
    held = w.get(r)
    assert held.phase == m.PROGRESSING and held.step == 0
    assert "router/b (serving table 1" in held.reason and held.held_since
    readers = {x["reader"]: x["version"] for x in w.controller.reader_status()}
    assert readers["router/b"] == 1 and readers["router/a"] == w.controller.table.version
    w.controller.poll_table(("router/b", w.controller.table.version))
    r = drive(w, r, lambda r: r.step == 1)  # confirmed: the step passes
    assert "held no more" in w.store.decisions(r.id)[-2].reason


def test_a_silent_router_holds_the_rollback_and_the_canary_keeps_running(tmp_path):
    w = World(tmp_path)
    r = w.release()
    drive(w, r, lambda r: r.phase == m.PROGRESSING)
    w.controller.command(r.id, "abort")
    for _ in range(10):  # router/a polled once, then went silent: it may still send traffic to 1.1
        w.tick(reader=None)
    r2 = w.get(r)
    assert r2.phase == m.ROLLING_BACK and "router/a (silent for over 3 s" in r2.reason
    assert ("importer", "1.1") in w.platform.running_
    w.tick(reader="router/a")
    w.tick(reader="router/a")
    assert w.get(r).phase == m.ROLLED_BACK and ("importer", "1.1") not in w.platform.running_


def test_without_readers_the_platform_confirms_the_weight(tmp_path):
    w = World(tmp_path)  # e.g. Gateway API weights set by the platform: no router polls
    r = w.release()
    done = drive(w, r, lambda r: r.phase == m.WATCHING, reader=None)
    assert done.decided_by == "controller"


def test_bins_carry_their_measured_length_and_the_judge_resumes_after_a_restart(tmp_path):
    w = World(tmp_path)
    r = w.release()
    drive(w, r, lambda r: r.phase == m.PROGRESSING)
    for _ in range(4):
        w.traffic("importer", "1.1")
        w.tick(seconds=0.25, reader="router/a")
    stored = w.store.judging(r.id)
    # the first reading (while pending) starts the bins; then 4 bins of 0.25 s each (not "1 s per bin")
    assert stored["observed"] == 5 and stored["seconds"] == pytest.approx(1.0)
    assert stored["judge"]["state"]["metrics"][0]["canary_n"] == [80]
    w.controller = w.new_controller()  # a restart: same store, new process
    w.traffic("importer", "1.1")
    w.tick(seconds=0.25, reader="router/a")
    after = w.store.judging(r.id)
    assert after["observed"] == 6 and after["judge"]["state"]["metrics"][0]["canary_n"] == [100]  # carried on


def test_every_decision_keeps_its_evidence_and_why_has_the_numbers_after_a_restart(tmp_path):
    w = World(tmp_path)
    r = w.release()
    done = drive(w, r, lambda r: r.phase == m.ROLLED_BACK, canary_bad=10)
    judged = next(d for d in w.store.decisions(r.id) if d.decided_by == "judge")
    assert judged.phase_to == m.ROLLING_BACK and "worse than stable" in judged.reason
    counts = judged.evidence["errors"]["counts"]
    assert counts["canary"]["bad"] >= 3 and counts["stable"]["bad"] == 0
    assert judged.evidence["errors"]["regression"]["e_value"] >= 100
    w.controller = w.new_controller()
    latest = asyncio.run(w.controller.latest_judgements(done.id)).last
    assert latest["errors"].verdict == m.Verdict.FAIL and latest["errors"].evidence["counts"]["canary"]["bad"] >= 3


def test_a_late_failure_after_promotion_rolls_back_to_the_warm_release(tmp_path):
    w = World(tmp_path)
    r = w.release(watch=600)
    r = drive(w, r, lambda r: r.phase == m.WATCHING)
    route = w.controller.table.services["importer"]
    # roles reversed: the promoted release is stable, the old one holds back 10% on the canary track
    assert route.releases == {"stable": "1.1", "canary": "1.0"} and route.weight == 10
    assert ("importer", "1.0") in w.platform.running_
    for _ in range(10):  # healthy for a while
        w.provider.serve("importer", "stable", "1.1", 200, 0)
        w.provider.serve("importer", "canary", "1.0", 20, 0)
        w.tick(reader="router/a")
    assert w.get(r).phase == m.WATCHING
    for _ in range(60):  # then 1.1 begins to fail
        w.provider.serve("importer", "stable", "1.1", 200, 40)
        w.provider.serve("importer", "canary", "1.0", 20, 0)
        w.tick(reader="router/a")
        if w.get(r).phase != m.WATCHING:
            break
    late = w.get(r)
    assert late.phase in (m.ROLLING_BACK, m.ROLLED_BACK) and "late failure after promotion" in late.reason
    assert m.desired(late).stable_release == "1.0"
    w.tick(reader="router/a")
    w.tick(reader="router/a")
    assert w.get(r).phase == m.ROLLED_BACK
    assert w.controller.table.services["importer"].releases == {"stable": "1.0"}


def test_an_unknown_release_is_refused_at_once_naming_the_known_ones(tmp_path):
    w = World(tmp_path)
    with pytest.raises(Unprocessable, match=r"importer has no release '9\.9'.*1\.0, 1\.1, 1\.2"):
        w.release(canary="9.9")
    assert w.store.list_rollouts() == []


def test_a_release_that_cannot_start_fails_alone_and_the_loop_goes_on(tmp_path, caplog):
    w = World(tmp_path)
    w.platform.broken.add("1.1")  # known to the catalog, but it will not start
    bad = w.release("importer", "1.1")
    good = w.release("resizer", "2.1")
    caplog.set_level(logging.INFO)
    for _ in range(6):
        w.traffic("resizer", "2.1")
        w.tick(reader="router/a")
    failed = w.get(bad)
    assert (failed.phase, failed.decided_by) == (m.FAILED, "platform") and "unknown release" in failed.reason
    assert w.get(good).phase == m.PROGRESSING
    assert "Traceback" not in caplog.text and all(r.exc_info is None for r in caplog.records)


def test_abort_always_takes_even_while_the_platform_fails(tmp_path):
    w = World(tmp_path)
    r = w.release()
    drive(w, r, lambda r: r.phase == m.PROGRESSING)
    w.platform.broken.add("1.0")  # stable cannot be (re)started: every apply fails
    w.platform.running_.pop(("importer", "1.0"))
    w.controller.command(r.id, "abort")
    w.tick(reader="router/a")
    assert w.get(r).phase == m.ROLLING_BACK


def test_a_metrics_source_that_is_down_holds_and_says_so(tmp_path):
    w = World(tmp_path)
    r = w.release()
    drive(w, r, lambda r: r.phase == m.PROGRESSING)
    w.provider.down = True
    w.tick(reader="router/a")
    held = w.get(r)
    assert held.held_since and "errors: metrics unavailable" in held.reason


def test_a_queue_consumer_confirms_its_own_service_and_is_forgotten_when_its_release_stops(tmp_path):
    w = World(tmp_path)
    r = w.release()
    drive(w, r, lambda r: r.phase == m.PROGRESSING)
    w.controller.poll_table(("consumer/opens-processor@1.1", 1))  # behind, but it reads opens, not importer
    assert drive(w, r, lambda r: r.step == 1).held_since == 0
    w.controller.readers.seen("consumer/importer-worker@1.1", 1, w.now)  # one of importer's own: it holds
    for _ in range(8):
        w.traffic("importer", "1.1")
        w.tick(reader="router/a")
    held = w.get(r)
    assert held.reason == "held: waiting for consumer/importer-worker@1.1 (silent for over 3 s, last serving table 1)"
    assert len([d for d in w.store.decisions(r.id) if "silent" in d.reason]) == 1  # said once, not every tick
    w.controller.readers.forget("consumer/importer-worker@1.1")  # what stopping its release does
    w.controller.command(r.id, "abort")
    assert drive(w, r, lambda r: r.phase == m.ROLLED_BACK).phase == m.ROLLED_BACK


class Flaky(FakePlatform):
    async def healthy(self, service: str, release: str) -> bool:
        if release == "1.1":
            raise RuntimeError("the platform's API answered nonsense")
        return await super().healthy(service, release)


def test_a_platform_that_errors_while_observing_holds_with_words_and_abort_still_takes(tmp_path, caplog):
    w = World(tmp_path)
    r = w.release()
    drive(w, r, lambda r: r.phase == m.PROGRESSING)
    w.platform.__class__ = Flaky
    w.tick(reader="router/a")
    held = w.get(r)
    assert held.reason == "held: observing failed: RuntimeError: the platform's API answered nonsense"
    w.controller.command(r.id, "abort")
    w.tick(reader="router/a")
    assert w.get(r).phase == m.ROLLING_BACK
    assert all(rec.exc_info is None for rec in caplog.records)


class BrokenStore(Store):
    """The real store, whose writes for one rollout fail (a locked or full database)."""

    broken = ""

    def save(self, new, expected_revision, made):
        if new.id == self.broken:
            raise OSError("disk I/O error")
        super().save(new, expected_revision, made)


def test_a_store_error_holds_that_rollout_only_and_it_resumes_once_the_store_writes(tmp_path, caplog):
    w = World(tmp_path)
    w.store.__class__ = BrokenStore
    a, b = w.release("importer", "1.1"), w.release("resizer", "2.1")
    BrokenStore.broken = a.id
    for _ in range(4):
        w.tick(reader="router/a")
    assert (w.get(a).phase, w.get(b).phase) == (m.PENDING, m.PROGRESSING)
    assert "disk I/O error" in caplog.text and all(rec.exc_info is None for rec in caplog.records)
    BrokenStore.broken = ""
    w.tick(reader="router/a")
    assert w.get(a).phase == m.PROGRESSING


def test_a_restarted_controller_waits_for_the_readers_before_it_stops_a_canary(tmp_path):
    w = World(tmp_path)
    r = w.release()
    drive(w, r, lambda r: r.phase == m.PROGRESSING)
    w.controller.command(r.id, "abort")
    w.tick(reader=None)  # rolling back; the router has not confirmed weight 0 yet
    assert w.get(r).phase == m.ROLLING_BACK
    w.controller = w.new_controller()  # restarted: it knows no reader yet
    w.tick(reader=None)
    assert w.get(r).phase == m.ROLLING_BACK and ("importer", "1.1") in w.platform.running_
    w.tick(reader="router/a")  # the router polls the new controller and gets the table
    w.tick(reader="router/a")
    assert w.get(r).phase == m.ROLLED_BACK


def test_a_restarted_controller_serves_no_table_until_a_tick_with_the_lease_built_it(tmp_path):
    w = World(tmp_path)
    r = w.release()
    drive(w, r, lambda r: r.phase == m.PROGRESSING and r.step == 1)  # a 50% canary
    w.controller = w.new_controller()  # restarted: it knows the stored rollout, not yet its upstreams
    asyncio.run(w.controller.start_stable())
    with pytest.raises(ServiceUnavailable) as refused:
        w.controller.poll_table(("router/a", 0))  # a table of stable releases only would starve the canary
    assert refused.value.status == 503 and refused.value.code == "table_not_ready"
    w.tick()
    table = parse_table(w.controller.poll_table(("router/a", 0)))
    assert table.services["importer"].weight == 50 and "canary" in table.services["importer"].upstreams


@dataclass
class CustomersProvider:
    """Sticky customers in three bucket groups (boundaries 1000 and 5000 of the spec's 10% and 50%
    steps, the reference last) whose bad rates differ, the same on both releases; per tick each
    group's requests go to the track its buckets are on, as the router's table says."""

    world: World
    with_groups: bool = True
    rates: tuple[float, ...] = (0.2, 0.05, 0.05)  # the first group's customers fail 4x as often
    per_tick: tuple[int, ...] = (20, 80, 100)
    boundaries: tuple[int, ...] = (1000, 5000)
    groups: list[list[int]] = field(default_factory=lambda: [[0, 0, 0] for _ in range(3)])
    tracks: dict[str, list[int]] = field(default_factory=lambda: {"canary": [0, 0], "stable": [0, 0]})

    def serve(self, rng) -> None:
        route = self.world.controller.table.services.get("importer")
        weight = route.weight if route is not None and "canary" in route.upstreams else 0.0
        for g, (rate, n) in enumerate(zip(self.rates, self.per_tick, strict=True)):
            on_canary = g < len(self.boundaries) and self.boundaries[g] <= weight * 100
            bad = int(rng.binomial(n, rate))
            row = self.groups[g]
            row[0], row[1], row[2] = row[0] + n, row[1] + bad, row[2] + (n if on_canary else 0)
            t = self.tracks["canary" if on_canary else "stable"]
            t[0], t[1] = t[0] + n, t[1] + bad

    async def cumulative(self, q: MetricQuery) -> TrackCounts:
        c, s = self.tracks["canary"], self.tracks["stable"]
        groups = ()
        if self.with_groups and q.sticky_groups == self.boundaries and q.sticky_salt:
            groups = tuple(GroupTotals(*row) for row in self.groups)
        return TrackCounts(Counts(*c), Counts(*s), groups)


STICKY_SPEC = """
apiVersion: releasewarden/v1
kind: Rollout
spec:
  service: importer
  stable: "1.0"
  canary: "1.1"
  sticky: {header: X-Account-Id}
  steps:
    - {weight: 10, min_requests: 20, min_seconds: 5, max_seconds: 600}
    - {weight: 50, min_requests: 20, min_seconds: 5, max_seconds: 600}
  metrics:
    - {name: errors, kind: errors}
  watch: {seconds: 5, holdback: 10}
"""


def sticky_run(
    tmp_path, with_groups: bool, ticks: int = 240, rates: tuple[float, ...] = (0.2, 0.05, 0.05)
) -> tuple[m.Rollout, World]:
    import numpy as np

    w = World(tmp_path)
    w.provider = CustomersProvider(w, with_groups=with_groups, rates=rates)
    w.controller = w.new_controller()
    starting = {"ticks": 40}  # the canary starts for 20 s: the groups gather their history on stable
    healthy = w.platform.healthy

    async def slow_start(service: str, release: str) -> bool:
        starting["ticks"] -= release == "1.1"
        return starting["ticks"] < 0 and await healthy(service, release)

    w.platform.healthy = slow_start
    rng = np.random.default_rng(7)
    r = asyncio.run(w.controller.create_rollout(STICKY_SPEC))
    for _ in range(ticks):
        w.provider.serve(rng)
        w.tick(reader="router/a")
        now = w.get(r)
        if now.phase in (m.ROLLING_BACK, m.WATCHING):
            return now, w
    return w.get(r), w


def test_sticky_customers_who_differ_do_not_roll_back_an_identical_release(tmp_path):
    # judged per request (no group counts), the canary's customers may fail up to 4x as often
    # as the others (canary.analysis.sticky_fallback): with 10x on both releases an identical
    # release looks 10x worse and is rolled back
    per_request, _ = sticky_run(tmp_path / "a", with_groups=False, rates=(0.5, 0.05, 0.05))
    assert per_request.phase == m.ROLLING_BACK and per_request.decided_by == "judge"
    # with the routers' bucket-group counts, each group is judged against its own history
    sticky, w = sticky_run(tmp_path / "b", with_groups=True)
    assert sticky.phase != m.ROLLING_BACK, sticky.reason
    assert sticky.phase == m.WATCHING or sticky.step == 1
    route = w.controller.table.services["importer"]
    assert route.sticky.groups == () if sticky.phase == m.WATCHING else route.sticky.groups == (1000, 5000)
    evidence = w.store.judging(sticky.id)["last"]["errors"]["evidence"]
    assert "sticky bucket group" in evidence["regression"]["statistic"]


def test_a_restart_mid_rollout_resumes_the_same_e_process_through_the_store(tmp_path):
    def run(where, restart_at: int | None) -> dict:
        w = World(where)
        r = w.release()
        drive(w, r, lambda r: r.phase == m.PROGRESSING)
        for i in range(6):
            if i == restart_at:
                w.controller = w.new_controller()  # a new process: only the store carries the judge
            w.traffic("importer", "1.1", canary_bad=1 if i % 3 == 0 else 0)
            w.tick(reader="router/a")
        assert w.get(r).phase == m.PROGRESSING
        return w.store.judging(r.id)["judge"]["state"]["metrics"][0]

    straight, restarted = run(tmp_path / "a", None), run(tmp_path / "b", 3)
    assert restarted["canary_bad"] == straight["canary_bad"] == [2]
    assert restarted["regression"] == straight["regression"]  # the same e-process, not a fresh one
    assert max(straight["regression"]["log_m0"]) != 0.0  # evidence was gathered (not an empty state)


MIRROR_SPEC = """
apiVersion: releasewarden/v1
kind: Rollout
spec:
  service: resizer
  stable: "1.0"
  canary: "2.0"
  mirror: {share: 1.0, min_compared: 50, min_seconds: 2, max_seconds: 600}
  steps:
    - {weight: 10, min_requests: 20, min_seconds: 2, max_seconds: 600}
  metrics:
    - {name: errors, kind: errors, rate_floor: 0.2}
"""


@dataclass
class MirrorProvider(FakeProvider):
    compared: int = 0
    different: int = 0

    async def cumulative(self, q: MetricQuery) -> TrackCounts:
        if q.kind == "mirror":
            return TrackCounts(Counts(self.compared, self.different), Counts())
        return await super().cumulative(q)


@pytest.mark.parametrize("differ_every", [0, 1])
def test_the_mirror_phase_is_judged_by_the_rollout_judge(tmp_path, differ_every):
    w = World(tmp_path)
    w.provider = MirrorProvider()
    w.controller = w.new_controller()
    r = asyncio.run(w.controller.create_rollout(MIRROR_SPEC))
    for i in range(60):
        w.provider.compared += 10
        w.provider.different += 3 if differ_every and i % differ_every == 0 else 0
        w.provider.serve("resizer", "stable", "1.0", 100)
        w.tick(reader="router/a")
        now = w.get(r)
        if now.phase in (m.PROGRESSING, m.ROLLING_BACK):
            break
    mirrored = [d for d in w.store.decisions(r.id) if d.phase_from == "mirroring"]
    if differ_every:  # a canary whose answers differ (no baseline): rolled back by the judge
        assert now.phase == m.ROLLING_BACK and now.decided_by == "judge" and now.reason.startswith("mirror:")
    else:
        assert now.phase == m.PROGRESSING and mirrored[-1].evidence["mirror"]["compared"] >= 50
