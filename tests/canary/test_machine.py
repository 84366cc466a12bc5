"""The rollout state machine as pure steps over a fake clock."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from canary.controller import machine as m
from canary.controller.spec import OnInconclusive, load_spec

ROOT = Path(__file__).resolve().parents[2]
IMPORTER = load_spec((ROOT / "manifests/rollouts/importer.yaml").read_text())  # 3 steps, no mirror
RESIZER = load_spec((ROOT / "manifests/rollouts/resizer.yaml").read_text())  # mirror phase first


def J(verdict: str, reason: str) -> m.Judgement:
    return m.Judgement(m.Verdict(verdict), reason, {"reason": reason})


PASS = {"errors": J("pass", "ok"), "slow": J("pass", "ok")}


def passed(r: m.Rollout) -> m.Observation:
    """Every metric passes, and the data plane confirms the step's weight."""
    return m.Observation(verdicts=PASS, weight_applied=m.desired(r).weight)


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
    r = run(r, clock, m.Observation(verdicts={"errors": J("pass", "ok"), "slow": J("continue", "baking")}))
    assert r.step == 0  # every metric must pass before a step passes
    weights = []
    for _ in range(3):
        weights.append(m.desired(r).weight)
        unconfirmed = run(r, clock, m.Observation(verdicts=PASS, weight_applied=None))
        assert unconfirmed is r  # every metric passes, but no router confirms the weight yet: no step
        r = run(r, clock, passed(r))
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
    r = run(r, clock, m.Observation(verdicts={"errors": J("fail", "canary worse"), "slow": J("pass", "ok")}))
    assert (r.phase, r.decided_by) == (m.ROLLING_BACK, "judge") and "canary worse" in r.reason
    d = m.desired(r)
    assert d.weight == 0 and d.canary_running  # the canary keeps running until no traffic reaches it
    r = run(r, clock, m.Observation(weight_applied=5))
    assert r.phase == m.ROLLING_BACK
    r = run(r, clock, m.Observation(weight_applied=0.0))
    assert r.phase == m.ROLLED_BACK and not m.desired(r).canary_running
    assert m.advance(r, m.Observation(command="resume"), clock.tick()) == (r, [])  # terminal


def test_a_step_that_stays_inconclusive_pauses_for_a_person_by_default():
    r, clock = started()
    r = run(r, clock, m.Observation(verdicts={"errors": J("continue", "no data yet")}), seconds=601)
    assert (r.phase, r.decided_by) == (m.PAUSED, "inconclusive") and "no data yet" in r.reason
    assert "inconclusive" in r.reason and m.desired(r).weight == 5  # held where it was, never a rollback
    assert run(r, clock, m.Observation(command="resume")).phase == m.PROGRESSING
    promoted = run(r, clock, m.Observation(command="promote"))  # or a person promotes what they checked
    assert (promoted.phase, promoted.decided_by) == (m.PROMOTING, "person")


@pytest.mark.parametrize(("action", "phase"), [("rollback", m.ROLLING_BACK), ("promote", m.PROMOTING)])
def test_on_inconclusive_says_what_a_step_that_ends_without_a_verdict_does(action, phase):
    spec = dataclasses.replace(IMPORTER, on_inconclusive=OnInconclusive(action))
    r, clock = started(spec)
    new, made = m.advance(r, m.Observation(verdicts={"errors": J("continue", "baking")}), clock.tick(901))
    assert (new.phase, new.decided_by) == (phase, "inconclusive")  # recorded as inconclusive, not a judge's
    assert made[0].evidence == {"errors": {"reason": "baking"}}


def test_a_router_that_does_not_confirm_holds_the_step_with_its_name_and_its_clock_stops():
    r, clock = started()
    waiting = "router/127.0.0.1:8080 (serving table 4, needs 5)"
    held = run(r, clock, m.Observation(verdicts=PASS, unconfirmed=waiting), seconds=30)
    assert held.phase == m.PROGRESSING and held.step == 0 and waiting in held.reason and held.held_since
    r = run(held, clock, m.Observation(verdicts=PASS, unconfirmed=waiting), seconds=5000)
    assert r.phase == m.PROGRESSING  # neither passed nor inconclusive while a router is behind
    back = run(r, clock, passed(r))
    assert back.held_since == 0 and back.step == 0  # first the hold ends (and the clock moves on) ...
    assert run(back, clock, passed(back)).step == 1  # ... then the confirmed step passes


def test_a_rollback_ends_only_once_the_routers_confirm_weight_zero():
    r, clock = started()
    r = run(r, clock, m.Observation(command="abort"))
    waiting = "router/a (silent for over 3 s, last serving table 4)"
    r = run(r, clock, m.Observation(weight_applied=None, unconfirmed=waiting))
    assert r.phase == m.ROLLING_BACK and waiting in r.reason and m.desired(r).canary_running
    r = run(r, clock, m.Observation(weight_applied=None, unconfirmed="router/b (serving table 4, needs 5)"))
    assert r.reason == "aborted; waiting for router/b (serving table 4, needs 5)"  # who it waits for now
    assert run(r, clock, m.Observation(weight_applied=0.0)).phase == m.ROLLED_BACK


def test_a_canary_the_platform_cannot_start_fails_and_one_that_ran_rolls_back():
    clock = Clock()
    r = m.Rollout("r", IMPORTER, phase_since=clock.now)
    why = "importer 9.9 cannot start: importer: unknown release '9.9'"
    failed = run(r, clock, m.Observation(platform_error=why))
    assert (failed.phase, failed.decided_by, failed.reason) == (m.FAILED, "platform", why)
    r, clock = started()
    assert run(r, clock, m.Observation(platform_error=why)).phase == m.ROLLING_BACK


def test_mirror_phase_comes_first_and_can_fail_or_pass():
    r, clock = started(RESIZER)
    d = m.desired(r)
    assert r.phase == m.MIRRORING and (d.weight, d.mirror_share) == (0, 1.0)
    failed = run(r, clock, m.Observation(mirror=J("fail", "3 of 200 images differ")))
    assert failed.phase == m.ROLLING_BACK and failed.reason == "mirror: 3 of 200 images differ"
    passed = run(r, clock, m.Observation(mirror=J("pass", "200 compared, none differ")))
    assert passed.phase == m.PROGRESSING and m.desired(passed).weight == 1
    stuck = run(r, clock, m.Observation(mirror=J("continue", "12 compared")), seconds=601)
    assert (stuck.phase, stuck.decided_by) == (m.PAUSED, "inconclusive")


def test_pause_holds_the_weight_but_not_the_safety():
    r, clock = started()
    r = run(r, clock, passed(r))  # now at step 2 (25%)
    r = run(r, clock, m.Observation(command="pause"))
    assert r.phase == m.PAUSED and m.desired(r).weight == 25
    r = run(r, clock, m.Observation(verdicts=PASS), seconds=5000)
    assert r.phase == m.PAUSED and r.step == 1  # no progress and no timeout while paused
    resumed = run(r, clock, m.Observation(command="resume"))
    assert resumed.phase == m.PROGRESSING and resumed.step_since == clock.now
    unsafe = run(r, clock, m.Observation(verdicts={"errors": J("fail", "worse")}))
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
        r = run(r, clock, passed(r))
    assert r.phase == m.WATCHING
    late = m.Judgement(m.Verdict.FAIL, "errors rose from 0.1% to 2%", {"change_detector": {"bad": 9}})
    r2, made = m.advance(r, m.Observation(change_detected=late), clock.tick(3600))
    assert r2.phase == m.ROLLING_BACK and m.desired(r2).stable_release == "1.0" and r2.decided_by == "judge"
    assert made[0].evidence == {"change_detector": {"bad": 9}}


def test_during_the_watch_the_old_release_holds_back_a_share_on_the_canary_track():
    spec = dataclasses.replace(IMPORTER, watch_holdback=5.0)
    r, clock = started(spec)
    for _ in range(4):
        r = run(r, clock, passed(r))
    d = m.desired(r)
    assert r.phase == m.WATCHING and (d.stable_release, d.weight, d.holdback) == ("1.1", 5.0, True)


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
    same, decisions = m.advance(r, m.Observation(verdicts={"errors": J("continue", "baking")}), clock.tick())
    assert same is r and decisions == []
    moved, decisions = m.advance(r, passed(r), clock.tick())
    assert moved.revision == r.revision + 1 and len(decisions) == 1


def test_a_metric_source_that_does_not_answer_holds_the_rollout_and_stops_its_clock():
    r, clock = started()  # step 1 may take IMPORTER.steps[0].max_seconds
    limit = IMPORTER.steps[0].max_seconds
    down = m.Observation(verdicts={"errors": J("continue", "x")}, metrics_unavailable="errors: Prometheus down")
    held, made = m.advance(r, down, clock.tick(10))
    assert (
        held.held_since == clock.now and held.phase == m.PROGRESSING and "held: errors: Prometheus down" in held.reason
    )
    assert [d.phase_to for d in made] == [m.PROGRESSING]  # recorded, so `canary status` says why
    r = held
    for _ in range(3):  # far past the step's time limit: held, not timed out, not passed
        r = run(r, clock, m.Observation(verdicts=PASS, metrics_unavailable="errors: down"), seconds=limit)
        assert r.phase == m.PROGRESSING and r.held_since == held.held_since
    back = run(r, clock, m.Observation(verdicts={"errors": J("continue", "baking"), "slow": J("continue", "baking")}))
    assert back.held_since == 0 and "held no more after" in back.reason
    assert back.step_since == r.step_since + (clock.now - held.held_since)  # the outage does not count
    again = run(back, clock, m.Observation(verdicts={"errors": J("continue", "baking")}), seconds=limit - 20)
    assert again.phase == m.PROGRESSING  # the time limit counts from before the outage, less the outage
    assert run(again, clock, m.Observation(), seconds=30).decided_by == "inconclusive"


def test_while_held_people_and_alerts_still_act():
    r, clock = started()
    r = run(r, clock, m.Observation(metrics_unavailable="down"))
    assert run(r, clock, m.Observation(metrics_unavailable="down", command="promote")).phase == m.PROMOTING
    assert run(r, clock, m.Observation(metrics_unavailable="down", alert="X")).phase == m.ROLLING_BACK
    assert run(r, clock, m.Observation(metrics_unavailable="down", command="abort")).phase == m.ROLLING_BACK


def test_a_canary_that_stops_being_ready_while_waiting_for_history_gets_its_own_ready_deadline():
    clock = Clock()
    r = m.Rollout("r", IMPORTER, phase_since=clock.now)
    wait = f"{m.HISTORY_WAIT} on stable before the first step (at most 600 s)"
    r = run(r, clock, m.Observation(canary_ready=True, history_wait=wait), seconds=300)
    assert (r.phase, r.reason) == (m.PENDING, wait)
    why = "importer-canary runs 1.1: 0 of 1 replicas available"
    r = run(r, clock, m.Observation(canary_ready=False, not_ready=why))  # 300 s into pending: not a timeout
    assert (r.phase, r.decided_by) == (m.PENDING, "controller")
    assert r.reason == f"canary not ready again while waiting: {why}" and r.phase_since == clock.now
    r = run(r, clock, m.Observation(canary_ready=False, not_ready=why), seconds=119)
    assert r.phase == m.PENDING
    r = run(r, clock, m.Observation(canary_ready=False, not_ready=why), seconds=2)
    assert (r.phase, r.reason) == (m.FAILED, f"canary not ready after 120 s: {why}")  # true this time
