"""What the controller sees and judges each tick (``canary.controller.observing``), tick by tick:
bins of measured length, the judge's state and evidence stored and resumed after a restart, the
watch's late failure, a metrics source that is down, sticky customers, the mirror phase."""

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


def test_a_watch_whose_metrics_are_down_holds_its_clock_and_never_passes_blind(tmp_path):
    w, r = watching(tmp_path)  # watched for 600 s
    w.provider.down = True
    for _ in range(70):  # 700 s without a reading: past the watch, but nothing was watched
        w.tick(seconds=10, reader="router/a")
    held = w.get(r)
    assert held.phase == m.WATCHING and held.held_since and "errors: metrics unavailable" in held.reason
    w.provider.down = False
    w.tick(reader="router/a")
    assert "held no more after" in w.get(r).reason
    back_at = w.now
    while w.get(r).phase == m.WATCHING:
        assert w.now - back_at < 1200, "the watch never ended"
        w.provider.serve("importer", "stable", "1.1", 200, 0)
        w.provider.serve("importer", "canary", "1.0", 20, 0)
        w.tick(seconds=10, reader="router/a")
    assert w.get(r).phase == m.SUCCEEDED
    assert w.now - back_at >= 500  # the watch's 600 s counted without the outage


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


def test_a_rise_the_held_back_old_release_shares_after_promotion_is_not_a_late_failure(tmp_path):
    """A loaded machine or a shared database makes both releases fail more: the change detector's
    absolute rate alone would roll the promoted release back; the held-back old one says it is
    not the release, and the watch goes on (then ends in success once the world is well)."""
    w = World(tmp_path)
    r = w.release(watch=30)
    r = drive(w, r, lambda r: r.phase == m.WATCHING)
    for _ in range(20):  # both releases fail 60% of their requests for 10 s (the floor is 20%)
        w.provider.serve("importer", "stable", "1.1", 200, 120)
        w.provider.serve("importer", "canary", "1.0", 20, 12)
        w.tick(reader="router/a")
        assert w.get(r).phase == m.WATCHING, w.get(r).reason
    watch = w.store.judging(r.id)["last_watch"]["errors"]
    assert "held-back old release's with it" in watch["reason"], watch["reason"]
    done = drive(w, r, lambda r: r.phase not in (m.WATCHING,), stable_release="1.1")
    assert done.phase == m.SUCCEEDED, done.reason


# The shared-rise rule's limits (canary.controller.judging.shared_rise).  In these worlds stable
# had no bad events before promotion, so the change detector's reference rate is the spec's floor,
# 20%; 1.1 is promoted and 1.0 holds back 10%.  Each bin below is one tick: the detector alarms on
# the first, so the rule alone says whether the watch goes on, while the reversed test (relative)
# has too little evidence yet to decide.


def watching(tmp_path) -> tuple[World, m.Rollout]:
    """1.1 promoted and watched for 600 s; the watch's first reading has started its bins."""
    w = World(tmp_path)
    r = drive(w, w.release(watch=600), lambda r: r.phase == m.WATCHING)
    w.tick(reader="router/a")
    return w, r


def watch_bin(w: World, r: m.Rollout, promoted: tuple[int, int], old: tuple[int, int]) -> tuple[m.Rollout, dict]:
    """One tick of (requests, bad) on the promoted release and the held-back old one: the rollout
    after it and the watch's latest answer."""
    w.provider.serve("importer", "stable", "1.1", *promoted)
    w.provider.serve("importer", "canary", "1.0", *old)
    w.tick(reader="router/a")
    return w.get(r), w.store.judging(r.id)["last_watch"]["errors"]


def assert_alarmed_alone(watch: dict) -> None:
    """The change detector fired on a 20% reference; the reversed test did not."""
    detector, rev = watch["evidence"]["change_detector"], watch["evidence"]["reversed"]
    assert detector["reference_rate"] == 0.2 and detector["log_statistic"] >= detector["log_threshold"]
    assert rev["regression"]["e_value"] < rev["regression"]["threshold"], rev


def assert_late_failure_by_the_change_detector(w: World, r: m.Rollout, watch: dict) -> None:
    late = w.get(r)
    assert late.phase == m.ROLLING_BACK and late.decided_by == "judge", late.reason
    assert late.reason.startswith("late failure after promotion: errors: bad rate rose to"), late.reason
    assert late.reason.endswith("change detector fired"), late.reason
    assert m.desired(late).stable_release == "1.0"
    assert_alarmed_alone(watch)


@pytest.mark.parametrize("old_bad", [20, 21])  # of 80: 25% (exactly half of 50%), 26.25%
def test_an_old_release_failing_at_least_half_as_often_shares_the_rise(tmp_path, old_bad):
    w, r = watching(tmp_path)
    now, watch = watch_bin(w, r, promoted=(720, 360), old=(80, old_bad))
    assert now.phase == m.WATCHING, now.reason
    assert f"held-back old release's with it ({old_bad} of 80)" in watch["reason"], watch["reason"]
    assert_alarmed_alone(watch)


def test_an_old_release_failing_just_under_half_as_often_does_not_excuse_the_rise(tmp_path):
    w, r = watching(tmp_path)
    _, watch = watch_bin(w, r, promoted=(720, 360), old=(80, 19))  # 23.75%: 0.475 of 50%, above 20%
    assert_late_failure_by_the_change_detector(w, r, watch)


# the old release fails 50% of its requests, as the promoted one does
@pytest.mark.parametrize(("old", "shared"), [((4, 2), False), ((6, 3), True)], ids=["2 bad", "3 bad"])
def test_the_shared_rise_needs_three_bad_events_on_the_old_release(tmp_path, old, shared):
    w, r = watching(tmp_path)
    now, watch = watch_bin(w, r, promoted=(90, 45), old=old)
    if shared:
        assert now.phase == m.WATCHING, now.reason
        assert f"held-back old release's with it ({old[1]} of {old[0]})" in watch["reason"], watch["reason"]
        assert_alarmed_alone(watch)
    else:
        assert_late_failure_by_the_change_detector(w, r, watch)


@pytest.mark.parametrize(("old_bad", "shared"), [(16, False), (17, True)])  # of 80: 20% (the reference), 21.25%
def test_the_shared_rise_needs_the_old_release_above_the_reference_rate(tmp_path, old_bad, shared):
    w, r = watching(tmp_path)
    now, watch = watch_bin(w, r, promoted=(720, 288), old=(80, old_bad))  # 40%: half of it is 20%
    if shared:
        assert now.phase == m.WATCHING, now.reason
        assert_alarmed_alone(watch)
    else:
        assert_late_failure_by_the_change_detector(w, r, watch)


def test_a_promoted_release_five_times_worse_during_a_shared_rise_is_rolled_back_by_the_reversed_test(tmp_path):
    """Both fail 50% for 4 ticks (a shared rise), then the old release recovers to 10% while the
    promoted one stays at 50%: the reversed test rolls it back while the old release's share since
    promotion is still over half the promoted one's (the change detector's alarm still excused)."""
    w, r = watching(tmp_path)
    for _ in range(4):
        now, watch = watch_bin(w, r, promoted=(360, 180), old=(40, 20))
        assert now.phase == m.WATCHING and "held-back old release's with it" in watch["reason"], now.reason
    for _ in range(6):  # after 6 such ticks the old release's share would still be 104 of 400 (26%)
        now, watch = watch_bin(w, r, promoted=(360, 180), old=(40, 4))
        if now.phase != m.WATCHING:
            break
        assert "held-back old release's with it" in watch["reason"], watch["reason"]
    assert now.phase == m.ROLLING_BACK and now.decided_by == "judge", now.reason
    assert "late failure after promotion: errors: promoted release worse than the held-back old one" in now.reason
    assert m.desired(now).stable_release == "1.0"
    old_n, old_bad = w.store.judging(r.id)["held_back"]["errors"]
    detector = watch["evidence"]["change_detector"]
    old_share, new_share = old_bad / old_n, detector["bad"] / detector["requests"]
    assert old_bad >= 3 and old_share >= 0.5 * new_share and old_share > detector["reference_rate"]
    assert detector["log_statistic"] >= detector["log_threshold"]
