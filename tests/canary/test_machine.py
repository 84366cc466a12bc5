"""The rollout state machine as pure steps over a fake clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from canary.controller import machine as m
from canary.controller.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
IMPORTER = load_spec((ROOT / "manifests/rollouts/importer.yaml").read_text())  # 3 steps, no mirror
RESIZER = load_spec((ROOT / "manifests/rollouts/resizer.yaml").read_text())  # mirror phase first
PASS = {"errors": ("pass", "ok"), "slow": ("pass", "ok")}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def tick(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now


def run(r: m.Rollout, clock: Clock, seen: m.Observation, seconds: float = 1.0) -> m.Rollout:
    new, _ = m.advance(r, seen, clock.tick(seconds))
    return new


def started(spec=IMPORTER) -> tuple[m.Rollout, Clock]:
    clock = Clock()
    r = m.Rollout("r1", spec, phase_since=clock.now)
    return run(r, clock, m.Observation(canary_ready=True)), clock


def test_a_good_canary_walks_every_step_then_is_watched_and_succeeds():
    r, clock = started()
    assert r.phase == m.PROGRESSING and m.desired(r).weight == 5
    r = run(r, clock, m.Observation(verdicts={"errors": ("pass", "ok"), "slow": ("continue", "baking")}))
    assert r.step == 0  # every metric must pass before a step passes
    weights = []
    for _ in range(3):
        weights.append(m.desired(r).weight)
        r = run(r, clock, m.Observation(verdicts=PASS))
    assert weights == [5, 25, 50] and r.phase == m.PROMOTING
    r = run(r, clock, m.Observation())
    d = m.desired(r)
    assert r.phase == m.WATCHING and d.stable_release == "1.1" and d.old_release_warm and not d.canary_running
    r = run(r, clock, m.Observation(), seconds=599)
    assert r.phase == m.WATCHING
    r = run(r, clock, m.Observation(), seconds=2)
    assert r.phase == m.SUCCEEDED and not m.desired(r).old_release_warm


def test_a_failing_metric_rolls_back_weight_first_then_stops_the_canary():
    r, clock = started()
    r = run(r, clock, m.Observation(verdicts={"errors": ("fail", "canary worse"), "slow": ("pass", "ok")}))
    assert (r.phase, r.decided_by) == (m.ROLLING_BACK, "judge") and "canary worse" in r.reason
    d = m.desired(r)
    assert d.weight == 0 and d.canary_running  # the canary keeps running until no traffic reaches it
    r = run(r, clock, m.Observation(weight_applied=5))
    assert r.phase == m.ROLLING_BACK
    r = run(r, clock, m.Observation(weight_applied=0.0))
    assert r.phase == m.ROLLED_BACK and not m.desired(r).canary_running
    assert m.advance(r, m.Observation(command="resume"), clock.tick()) == (r, [])  # terminal


def test_a_step_that_stays_inconclusive_times_out():
    r, clock = started()
    r = run(r, clock, m.Observation(verdicts={"errors": ("continue", "no data yet")}), seconds=601)
    assert (r.phase, r.decided_by) == (m.ROLLING_BACK, "timeout") and "no data yet" in r.reason


def test_mirror_phase_comes_first_and_can_fail_or_pass():
    r, clock = started(RESIZER)
    d = m.desired(r)
    assert r.phase == m.MIRRORING and (d.weight, d.mirror_share) == (0, 1.0)
    failed = run(r, clock, m.Observation(mirror=("fail", "3 of 200 images differ")))
    assert failed.phase == m.ROLLING_BACK and failed.reason == "mirror: 3 of 200 images differ"
    passed = run(r, clock, m.Observation(mirror=("pass", "200 compared, none differ")))
    assert passed.phase == m.PROGRESSING and m.desired(passed).weight == 1
    stuck = run(r, clock, m.Observation(mirror=("continue", "12 compared")), seconds=601)
    assert (stuck.phase, stuck.decided_by) == (m.ROLLING_BACK, "timeout")


def test_pause_holds_the_weight_but_not_the_safety():
    r, clock = started()
    r = run(r, clock, m.Observation(verdicts=PASS))  # now at step 2 (25%)
    r = run(r, clock, m.Observation(command="pause"))
    assert r.phase == m.PAUSED and m.desired(r).weight == 25
    r = run(r, clock, m.Observation(verdicts=PASS), seconds=5000)
    assert r.phase == m.PAUSED and r.step == 1  # no progress and no timeout while paused
    resumed = run(r, clock, m.Observation(command="resume"))
    assert resumed.phase == m.PROGRESSING and resumed.step_since == clock.now
    unsafe = run(r, clock, m.Observation(verdicts={"errors": ("fail", "worse")}))
    assert unsafe.phase == m.ROLLING_BACK


@pytest.mark.parametrize(
    ("seen", "phase", "by"),
    [
        (m.Observation(command="abort"), m.ROLLING_BACK, "person"),
        (m.Observation(alert="CanaryErrorRatioAboveStable"), m.ROLLING_BACK, "alert"),
        (m.Observation(command="promote"), m.PROMOTING, "person"),
    ],
)
def test_people_and_alerts(seen, phase, by):
    r, clock = started()
    r2, decisions = m.advance(r, seen, clock.tick())
    assert (r2.phase, r2.decided_by) == (phase, by)
    assert decisions[0].phase_from == m.PROGRESSING and decisions[0].phase_to == phase


def test_a_late_failure_while_watching_rolls_back_to_the_warm_release():
    r, clock = started()
    for _ in range(4):
        r = run(r, clock, m.Observation(verdicts=PASS))
    assert r.phase == m.WATCHING
    r = run(r, clock, m.Observation(change_detected="errors rose from 0.1% to 2%"), seconds=3600)
    assert r.phase == m.ROLLING_BACK and m.desired(r).stable_release == "1.0"


def test_a_canary_that_never_becomes_ready_fails():
    clock = Clock()
    r = m.Rollout("r", IMPORTER, phase_since=clock.now)
    r = run(r, clock, m.Observation(canary_ready=False), seconds=60)
    assert r.phase == m.PENDING
    why = "importer-canary runs 1.1: 0 of 1 replicas available; Available: MinimumReplicasUnavailable"
    r = run(r, clock, m.Observation(canary_ready=False, not_ready=why), seconds=61)
    assert (r.phase, r.decided_by) == (m.FAILED, "timeout")
    assert r.reason == f"canary not ready after 120 s: {why}"  # the platform's own words


def test_every_change_bumps_the_revision_and_nothing_else_does():
    r, clock = started()
    same, decisions = m.advance(r, m.Observation(verdicts={"errors": ("continue", "baking")}), clock.tick())
    assert same is r and decisions == []
    moved, decisions = m.advance(r, m.Observation(verdicts=PASS), clock.tick())
    assert moved.revision == r.revision + 1 and len(decisions) == 1


def test_a_metric_source_that_does_not_answer_holds_the_rollout_and_stops_its_clock():
    r, clock = started()  # step 1 may take IMPORTER.steps[0].max_seconds
    limit = IMPORTER.steps[0].max_seconds
    down = m.Observation(verdicts={"errors": ("continue", "x")}, metrics_unavailable="errors: Prometheus down")
    held, made = m.advance(r, down, clock.tick(10))
    assert (
        held.held_since == clock.now and held.phase == m.PROGRESSING and "held: errors: Prometheus down" in held.reason
    )
    assert [d.phase_to for d in made] == [m.PROGRESSING]  # recorded, so `canary status` says why
    r = held
    for _ in range(3):  # far past the step's time limit: held, not timed out, not passed
        r = run(r, clock, m.Observation(verdicts=PASS, metrics_unavailable="errors: down"), seconds=limit)
        assert r.phase == m.PROGRESSING and r.held_since == held.held_since
    back = run(r, clock, m.Observation(verdicts={"errors": ("continue", "baking"), "slow": ("continue", "baking")}))
    assert back.held_since == 0 and "metrics available again after" in back.reason
    assert back.step_since == r.step_since + (clock.now - held.held_since)  # the outage does not count
    again = run(back, clock, m.Observation(verdicts={"errors": ("continue", "baking")}), seconds=limit - 20)
    assert again.phase == m.PROGRESSING  # the time limit counts from before the outage, less the outage
    assert run(again, clock, m.Observation(), seconds=30).decided_by == "timeout"


def test_while_held_people_and_alerts_still_act():
    r, clock = started()
    r = run(r, clock, m.Observation(metrics_unavailable="down"))
    assert run(r, clock, m.Observation(metrics_unavailable="down", command="promote")).phase == m.PROMOTING
    assert run(r, clock, m.Observation(metrics_unavailable="down", alert="X")).phase == m.ROLLING_BACK
    assert run(r, clock, m.Observation(metrics_unavailable="down", command="abort")).phase == m.ROLLING_BACK
