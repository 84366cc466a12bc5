"""What the controller sees and judges each tick (``canary.controller.observing``), tick by tick:
bins of measured length, the judge's state and evidence stored and resumed after a restart, the
watch's late failure, a metrics source that is down, sticky customers, the mirror phase (the
watch's shared-rise rule: ``tests/canary/test_observing_watch.py``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from canary.controller import machine as m
from canary.providers.base import Counts, GroupTotals, MetricQuery, TrackCounts
from tests.canary.engine_world import FakeProvider, World, drive


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


def test_a_metrics_source_that_is_down_holds_and_says_so(tmp_path):
    w = World(tmp_path)
    r = w.release()
    drive(w, r, lambda r: r.phase == m.PROGRESSING)
    w.provider.down = True
    w.tick(reader="router/a")
    held = w.get(r)
    assert held.held_since and "errors: metrics unavailable" in held.reason


@dataclass
class CustomersProvider:
    """Sticky customers in three bucket groups (boundaries 1000 and 5000 of the spec's 10% and 50%
    steps, the reference last) whose bad rates differ, the same on both releases; per tick each
    group's requests go to the track its buckets are on, as the router's table says."""

    world: World | None
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


def pending_wait(tmp_path, provider: CustomersProvider, limit: float = 60) -> tuple[m.Rollout, World, list]:
    """A sticky rollout whose canary is ready at once, with ``sticky.history_seconds: limit``:
    what each tick looked like (world seconds since the release, phase, reason, canary weight)
    until the first step."""
    import numpy as np

    w = World(tmp_path)
    provider.world = w
    w.provider = provider
    w.controller = w.new_controller()
    spec = STICKY_SPEC.replace("{header: X-Account-Id}", f"{{header: X-Account-Id, history_seconds: {limit:g}}}")
    r = asyncio.run(w.controller.create_rollout(spec))
    rng, began, seen = np.random.default_rng(3), w.now, []
    for _ in range(400):
        provider.serve(rng)
        w.tick(reader="router/a")
        now = w.get(r)
        route = w.controller.table.services["importer"]
        seen.append((w.now - began, now.phase, now.reason, route.weight))
        if now.phase != m.PENDING:
            break
    return now, w, seen


def test_a_sticky_rollout_can_wait_in_pending_for_its_bucket_groups_history(tmp_path):
    # the first group's customers fail often (20%): its history is usable within seconds, and the
    # first step starts then, before the limit; meanwhile the canary, ready, takes no traffic
    started, w, seen = pending_wait(tmp_path / "a", CustomersProvider(None))
    waiting = [s for s in seen if s[1] == m.PENDING]
    assert waiting and all(s[3] == 0 for s in waiting)
    assert "gather their history on stable before the first step (at most 60 s)" in waiting[-1][2]
    assert started.phase == m.PROGRESSING and seen[-1][0] < 60
    # judged by the group test from the first canary bin, not by the request-level fallback
    for _ in range(4):
        w.tick(reader="router/a")
    evidence = w.store.judging(started.id)["last"]["errors"]["evidence"]
    assert "sticky bucket group" in evidence["regression"]["statistic"]
    # a history that does not form (too few bad events) waits out the limit, then the first step
    rare, _, seen = pending_wait(tmp_path / "b", CustomersProvider(None, rates=(0.001, 0.001, 0.001)), limit=20)
    assert rare.phase == m.PROGRESSING and seen[-1][0] >= 20
    # a source without bucket-group counts has nothing to wait for: the first real bin says so
    plain, _, seen = pending_wait(tmp_path / "c", CustomersProvider(None, with_groups=False))
    assert plain.phase == m.PROGRESSING and seen[-1][0] <= 1.5


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
    baseline_compared: int = 0  # the router's stable-vs-baseline comparisons (the stable side)
    baseline_different: int = 0

    async def cumulative(self, q: MetricQuery) -> TrackCounts:
        if q.kind == "mirror":
            canary = Counts(self.compared, self.different)
            return TrackCounts(canary, Counts(self.baseline_compared, self.baseline_different))
        return await super().cumulative(q)


@pytest.mark.parametrize(
    ("differ", "baseline"),
    [(False, None), (True, None), (True, "stable")],
    ids=["same-answers", "differ-no-baseline", "differ-as-stable-twice-does"],
)
def test_the_mirror_phase_is_judged_by_the_rollout_judge(tmp_path, differ, baseline):
    w = World(tmp_path)
    w.provider = MirrorProvider()
    w.controller = w.new_controller()
    spec = (
        MIRROR_SPEC.replace("max_seconds: 600}", f"max_seconds: 600, baseline: {baseline}}}", 1)
        if baseline
        else MIRROR_SPEC
    )
    r = asyncio.run(w.controller.create_rollout(spec))
    for _ in range(60):
        w.provider.compared += 10
        w.provider.different += 3 if differ else 0
        if w.controller.table.services["resizer"].mirror.stable_baseline:  # the router asks stable twice
            w.provider.baseline_compared += 10
            w.provider.baseline_different += 3  # a field that differs between any two answers
        w.provider.serve("resizer", "stable", "1.0", 100)
        w.tick(reader="router/a")
        now = w.get(r)
        if now.phase in (m.PROGRESSING, m.ROLLING_BACK):
            break
    mirrored = [d for d in w.store.decisions(r.id) if d.phase_from == "mirroring"]
    if differ and not baseline:  # differences and nothing to say they are noise: rolled back by the judge
        assert now.phase == m.ROLLING_BACK and now.decided_by == "judge" and now.reason.startswith("mirror:")
    else:  # no differences, or no more than stable's own two answers show
        assert now.phase == m.PROGRESSING, now.reason
        evidence = mirrored[-1].evidence["mirror"]
        assert evidence["compared"] >= 50
        assert evidence["baseline_compared"] == (evidence["compared"] if baseline else 0)


def test_a_spec_asking_stable_twice_holds_while_the_routers_count_no_baseline(tmp_path):
    """A router older than the spec (or a metrics source without the baseline's counter) counts no
    baseline: the noise is not judged against the objective (a false rollback) nor passed blind."""
    w = World(tmp_path)
    w.provider = MirrorProvider()
    w.controller = w.new_controller()
    spec = MIRROR_SPEC.replace("max_seconds: 600}", "max_seconds: 600, baseline: stable}", 1)
    r = asyncio.run(w.controller.create_rollout(spec))
    for _ in range(30):
        w.provider.compared += 10
        w.provider.different += 3  # the noise that stable's two answers would have shown
        w.provider.serve("resizer", "stable", "1.0", 100)
        w.tick(reader="router/a")
    judged = w.store.judging(r.id)["last_mirror"]  # what `canary status` and the API show as the mirror's
    assert w.get(r).phase == m.MIRRORING and judged["verdict"] == "continue"
    assert "waiting for the baseline's answers" in judged["reason"]
    assert judged["evidence"]["compared"] == judged["evidence"]["baseline_compared"] == 0
