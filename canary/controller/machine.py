"""The rollout state machine: pure, over data and an injected clock.

``advance(rollout, observation, now)`` returns the next rollout and the decisions taken (each with
its reason and evidence), and nothing else: no I/O.  What the world should look like in each phase
is ``desired(rollout)`` (canary weight, mirror share, which releases run, which release stable
serves); the controller stores the new rollout and its decisions first, then makes the world match
``desired``.  Because that is level-triggered, a controller killed at any moment resumes from the
store by applying the same desired state again: nothing is done twice.

Phases: pending -> (mirroring) -> progressing (step i) -> promoting -> watching -> succeeded, with
paused beside progressing, and rolling_back -> rolled_back from any active phase (judge, alert,
a person, or a step that ended inconclusive under ``on_inconclusive: rollback``).  ``failed`` is
for a canary that never became ready or could not be started.

A step passes only once the data plane confirms it serves the step's weight (``weight_applied``);
a rollback ends (and the canary stops) only once it confirms weight zero.  A step that reaches
its ``max_seconds`` without a verdict is *inconclusive*: it does what ``on_inconclusive`` says
(default: pause for a person), and is recorded as such (decided by ``inconclusive``), never as a
judge's rollback.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from canary.controller.spec import OnInconclusive, RolloutSpec


class Phase(StrEnum):
    PENDING = "pending"
    MIRRORING = "mirroring"
    PROGRESSING = "progressing"
    PAUSED = "paused"
    PROMOTING = "promoting"
    WATCHING = "watching"
    SUCCEEDED = "succeeded"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


class Verdict(StrEnum):
    CONTINUE = "continue"
    PASS = "pass"
    FAIL = "fail"


class DecidedBy(StrEnum):
    CONTROLLER = "controller"
    JUDGE = "judge"
    ALERT = "alert"
    PERSON = "person"
    TIMEOUT = "timeout"  # a canary that never became ready
    INCONCLUSIVE = "inconclusive"  # a step or the mirror phase ended without a verdict
    PLATFORM = "platform"  # the platform refused (a release it cannot start)


PENDING, MIRRORING, PROGRESSING, PAUSED = Phase.PENDING, Phase.MIRRORING, Phase.PROGRESSING, Phase.PAUSED
PROMOTING, WATCHING, SUCCEEDED = Phase.PROMOTING, Phase.WATCHING, Phase.SUCCEEDED
ROLLING_BACK, ROLLED_BACK, FAILED = Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.FAILED
TERMINAL = frozenset({SUCCEEDED, ROLLED_BACK, FAILED})
ACTIVE = frozenset({PENDING, MIRRORING, PROGRESSING, PAUSED, PROMOTING, WATCHING})
PAUSABLE = frozenset({MIRRORING, PROGRESSING})  # where a pause or a promote by hand takes
TAKES = {  # the phases in which each person's command takes (the API refuses it in any other)
    "pause": PAUSABLE,
    "resume": frozenset({PAUSED}),
    "promote": PAUSABLE | {PAUSED},
    "abort": ACTIVE,
}
READY_DEADLINE_S = 120.0
HISTORY_WAIT = "canary ready: the bucket groups gather their history"  # how a pending wait's reason starts


@dataclass(frozen=True)
class Rollout:
    id: str
    spec: RolloutSpec
    phase: Phase = PENDING
    step: int = 0
    phase_since: float = 0.0
    step_since: float = 0.0
    resume_to: str = ""  # the phase a pause returns to
    reason: str = ""
    decided_by: str = ""  # a DecidedBy
    held_since: float = 0.0  # metrics unavailable since then: no verdict, and the step's clock stops
    promotion_held: bool = False  # its last step passed; a group (promote: together) holds it there
    # rolled back, its entry's after_rollback hooks not known to have passed: stored with the
    # rollback, so a controller killed before they ran runs them when it starts again
    after_rollback_owed: bool = False
    revision: int = 0  # bumped on every change: the store refuses stale writes

    def with_(self, now: float, **changes: Any) -> Rollout:
        if "phase" in changes and changes["phase"] != self.phase:
            changes.setdefault("phase_since", now)
            if changes["phase"] == ROLLED_BACK:
                changes.setdefault("after_rollback_owed", True)
        return dataclasses.replace(self, revision=self.revision + 1, **changes)


@dataclass(frozen=True)
class Judgement:
    """One metric's answer from the judge this tick, with the numbers behind it."""

    verdict: Verdict
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


NO_DATA = Judgement(Verdict.CONTINUE, "no data yet")


@dataclass(frozen=True)
class Observation:
    """What the controller saw this tick."""

    canary_ready: bool = False
    verdicts: dict[str, Judgement] = field(default_factory=dict)  # metric name -> the judge's answer
    mirror: Judgement | None = None  # the mirror phase's answer
    # the weight every live router confirms it serves (None: not yet confirmed by all of them)
    weight_applied: float | None = None
    unconfirmed: str = ""  # readers that were seen but do not confirm the table, named (the rollout holds)
    change_detected: Judgement | None = None  # watch phase: the reversed test or change detector fired
    command: str = ""  # pause, resume, promote, abort
    alert: str = ""  # the name of an alert that names this rollout, and why it fired
    metrics_unavailable: str = ""  # the metric source did not answer: why (the rollout holds)
    not_ready: str = ""  # why the canary is not ready yet, in the platform's words
    platform_error: str = ""  # the platform refused to run the canary, in its words: the rollout fails
    hold_promotion: bool = False  # its group promotes together and not every member is ready yet
    history_wait: str = ""  # the canary is ready, but the sticky bucket groups still gather history: why


@dataclass(frozen=True)
class Decision:
    at: float
    phase_from: str
    phase_to: str
    decided_by: str
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Desired:
    weight: float  # percent of traffic on the "canary" track (during the watch: the old release)
    mirror_share: float
    canary_running: bool
    stable_release: str
    old_release_warm: bool

    @property
    def holdback(self) -> bool:
        """During the watch the roles are reversed: the old release takes the canary track."""
        return self.old_release_warm and self.weight > 0


def desired(r: Rollout) -> Desired:
    s = r.spec
    phase = r.resume_to if r.phase == PAUSED else r.phase
    if phase == PENDING:
        return Desired(0.0, 0.0, True, s.stable, False)
    if phase == MIRRORING:
        return Desired(0.0, s.mirror.share if s.mirror else 1.0, True, s.stable, False)
    if phase == PROGRESSING:
        return Desired(s.steps[r.step].weight, 0.0, True, s.stable, False)
    if phase == PROMOTING:
        return Desired(0.0, 0.0, False, s.canary, True)
    if phase == WATCHING:
        return Desired(s.watch_holdback, 0.0, False, s.canary, True)
    if phase == SUCCEEDED:
        return Desired(0.0, 0.0, False, s.canary, False)
    if phase == ROLLING_BACK:  # weight to zero first; the canary stops once the router confirms it
        return Desired(0.0, 0.0, True, s.stable, False)
    return Desired(0.0, 0.0, False, s.stable, False)  # rolled back, failed


def advance(r: Rollout, seen: Observation, now: float) -> tuple[Rollout, list[Decision]]:
    if r.phase in TERMINAL:
        return r, []
    out: list[Decision] = []

    def go(phase: Phase, by: str, reason: str, evidence: dict[str, Any] | None = None, **changes: Any) -> Rollout:
        out.append(Decision(now, r.phase, phase, by, reason, evidence or {}))
        return r.with_(now, phase=phase, decided_by=by, reason=reason, **changes)

    # What rolls back from any active phase comes first: a person, an alert.
    if r.phase in ACTIVE and seen.command == "abort":
        return go(ROLLING_BACK, DecidedBy.PERSON, "aborted"), out
    if r.phase in ACTIVE and seen.alert:
        return go(ROLLING_BACK, DecidedBy.ALERT, f"alert {seen.alert} fired"), out
    if r.phase == ROLLING_BACK:
        if seen.weight_applied == 0.0:
            return go(ROLLED_BACK, r.decided_by, r.reason), out
        if seen.unconfirmed and not r.reason.endswith(f"; waiting for {seen.unconfirmed}"):
            why = r.reason.split("; waiting for ")[0]  # the rollback's own reason, then who it waits for now
            return go(ROLLING_BACK, r.decided_by, f"{why}; waiting for {seen.unconfirmed}"), out
        return r, out
    if seen.platform_error and r.phase == PENDING:  # it never served: nothing to move back
        return go(FAILED, DecidedBy.PLATFORM, seen.platform_error), out
    if seen.platform_error and r.phase in (MIRRORING, PROGRESSING, PAUSED):
        return go(ROLLING_BACK, DecidedBy.PLATFORM, seen.platform_error), out
    if r.phase == PENDING:
        if seen.canary_ready and seen.history_wait:  # no traffic yet: the first step waits
            if r.reason == seen.history_wait:
                return r, out
            return go(PENDING, DecidedBy.CONTROLLER, seen.history_wait), out
        if seen.canary_ready:
            if r.spec.mirror:
                return go(MIRRORING, DecidedBy.CONTROLLER, "canary ready: mirroring"), out
            return go(PROGRESSING, DecidedBy.CONTROLLER, "canary ready: first step", step=0, step_since=now), out
        if r.reason.startswith(HISTORY_WAIT):  # it was ready, waiting for history: the deadline starts again
            why = f": {seen.not_ready}" if seen.not_ready else ""
            return go(PENDING, DecidedBy.CONTROLLER, f"canary not ready again while waiting{why}", phase_since=now), out
        if now - r.phase_since > READY_DEADLINE_S:
            why = f": {seen.not_ready}" if seen.not_ready else ""
            return go(FAILED, DecidedBy.TIMEOUT, f"canary not ready after {READY_DEADLINE_S:.0f} s{why}"), out
        return r, out
    if r.phase == PAUSED:
        if seen.command == "resume":
            return go(Phase(r.resume_to), DecidedBy.PERSON, "resumed", step_since=now, resume_to=""), out
        if seen.command == "promote":
            return go(PROMOTING, DecidedBy.PERSON, "promoted by hand (remaining steps skipped)", resume_to=""), out
        failing = _failing(seen)
        if failing:  # a pause holds the weight, never the safety
            return go(ROLLING_BACK, DecidedBy.JUDGE, failing[0], failing[1]), out
        return r, out
    if seen.command == "pause" and r.phase in PAUSABLE:
        return go(PAUSED, DecidedBy.PERSON, "paused", resume_to=r.phase, held_since=0.0), out
    if seen.command == "promote" and r.phase in PAUSABLE:
        return go(PROMOTING, DecidedBy.PERSON, "promoted by hand (remaining steps skipped)"), out
    if r.phase in (MIRRORING, PROGRESSING):
        held = _held(r, seen, now, go)
        if held is not None:
            return held, out
    if r.phase == MIRRORING:
        return _mirroring(r, seen, now, go), out
    if r.phase == PROGRESSING:
        return _progressing(r, seen, now, go), out
    if r.phase == PROMOTING:
        return go(WATCHING, DecidedBy.CONTROLLER, f"stable now serves {r.spec.canary}; {r.spec.stable} kept warm"), out
    if r.phase == WATCHING:
        if seen.change_detected is not None:
            late = seen.change_detected
            return go(ROLLING_BACK, DecidedBy.JUDGE, f"late failure after promotion: {late.reason}", late.evidence), out
        held = _held(r, seen, now, go)  # a watch without its metrics is no watch: its clock stops
        if held is not None:
            return held, out
        if now - r.phase_since >= r.spec.watch_seconds:
            return go(SUCCEEDED, DecidedBy.CONTROLLER, f"watched {r.spec.watch_seconds:.0f} s without a change"), out
    return r, out


def _held(r: Rollout, seen: Observation, now: float, go: Callable[..., Rollout]) -> Rollout | None:
    """A metric source that does not answer, or a router that does not confirm the table, holds the
    rollout: no verdict, no time limit (its clock stops and restarts where it stopped).  Rolling
    back or promoting on a missing answer would be a guess."""
    why = "; ".join(filter(None, (seen.metrics_unavailable, seen.unconfirmed and f"waiting for {seen.unconfirmed}")))
    if why:
        if r.held_since and r.reason == f"held: {why}":
            return r
        return go(r.phase, DecidedBy.CONTROLLER, f"held: {why}", held_since=r.held_since or now)
    if r.held_since:
        paused = now - r.held_since
        return go(
            r.phase,
            DecidedBy.CONTROLLER,
            f"held no more after {paused:.0f} s: the step's time limit is moved on by as much",
            held_since=0.0,
            step_since=r.step_since + paused,
            phase_since=r.phase_since + paused,
        )
    return None


def _failing(seen: Observation) -> tuple[str, dict[str, Any]] | None:
    for metric, j in sorted(seen.verdicts.items()):
        if j.verdict == Verdict.FAIL:
            return f"{metric}: {j.reason}", {metric: j.evidence}
    return None


def _inconclusive(r: Rollout, go: Callable[..., Rollout], what: str, evidence: dict[str, Any], now: float) -> Rollout:
    action = r.spec.on_inconclusive
    reason = f"{what}: on_inconclusive is {action.value}"
    if action == OnInconclusive.ROLLBACK:
        return go(ROLLING_BACK, DecidedBy.INCONCLUSIVE, reason, evidence)
    if action == OnInconclusive.PROMOTE:
        return go(PROMOTING, DecidedBy.INCONCLUSIVE, reason, evidence)
    return go(
        PAUSED,
        DecidedBy.INCONCLUSIVE,
        reason + " (a person decides: resume, promote or abort)",
        evidence,
        resume_to=r.phase,
        held_since=0.0,
    )


def _mirroring(r: Rollout, seen: Observation, now: float, go: Callable[..., Rollout]) -> Rollout:
    j = seen.mirror or NO_DATA
    if j.verdict == Verdict.FAIL:
        return go(ROLLING_BACK, DecidedBy.JUDGE, f"mirror: {j.reason}", {"mirror": j.evidence})
    if j.verdict == Verdict.PASS:
        return go(PROGRESSING, DecidedBy.JUDGE, f"mirror: {j.reason}", {"mirror": j.evidence}, step=0, step_since=now)
    limit = r.spec.mirror.max_seconds if r.spec.mirror else 600.0
    if now - r.phase_since > limit:
        what = f"mirror phase inconclusive after {limit:.0f} s ({j.reason})"
        return _inconclusive(r, go, what, {"mirror": j.evidence}, now)
    return r


def _progressing(r: Rollout, seen: Observation, now: float, go: Callable[..., Rollout]) -> Rollout:
    failing = _failing(seen)
    if failing:
        return go(ROLLING_BACK, DecidedBy.JUDGE, failing[0], failing[1])
    if r.promotion_held:  # passed already: it waits for its group, judged still, with no time limit
        if seen.hold_promotion:
            return r
        return go(PROMOTING, DecidedBy.CONTROLLER, "every member of its group is ready: promoted together")
    step = r.spec.steps[r.step]
    metrics = [m.name for m in r.spec.metrics]
    evidence = {m: j.evidence for m, j in seen.verdicts.items()}
    confirmed = seen.weight_applied == step.weight
    if confirmed and metrics and all(seen.verdicts.get(m, NO_DATA).verdict == Verdict.PASS for m in metrics):
        reason = f"step {r.step + 1} ({step.weight:g}%) passed: " + "; ".join(seen.verdicts[m].reason for m in metrics)
        if r.step + 1 < len(r.spec.steps):
            return go(PROGRESSING, DecidedBy.JUDGE, reason, evidence, step=r.step + 1, step_since=now)
        if seen.hold_promotion:
            why = f"{reason}; its group promotes together: held until every member is ready"
            return go(PROGRESSING, DecidedBy.JUDGE, why, evidence, promotion_held=True)
        return go(PROMOTING, DecidedBy.JUDGE, reason, evidence)
    if now - r.step_since > step.max_seconds:
        waiting = "; ".join(f"{m}: {j.reason}" for m, j in sorted(seen.verdicts.items()) if j.verdict != Verdict.PASS)
        what = f"step {r.step + 1} inconclusive after {step.max_seconds:.0f} s ({waiting or 'no data'})"
        return _inconclusive(r, go, what, evidence, now)
    return r
