"""The rollout state machine: pure, over data and an injected clock.

``advance(rollout, observation, now)`` returns the next rollout and the decisions taken (each with
its reason and evidence), and nothing else: no I/O.  What the world should look like in each phase
is ``desired(rollout)`` (canary weight, mirror share, which releases run, which release stable
serves); the controller stores the new rollout and its decisions first, then makes the world match
``desired``.  Because that is level-triggered, a controller killed at any moment resumes from the
store by applying the same desired state again: nothing is done twice.

Phases: pending -> (mirroring) -> progressing (step i) -> promoting -> watching -> succeeded, with
paused beside progressing, and rolling_back -> rolled_back from any active phase (judge, alert,
timeout or a person).  ``failed`` is for a canary that never became ready.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from canary.controller.spec import RolloutSpec

PENDING, MIRRORING, PROGRESSING, PAUSED = "pending", "mirroring", "progressing", "paused"
PROMOTING, WATCHING, SUCCEEDED = "promoting", "watching", "succeeded"
ROLLING_BACK, ROLLED_BACK, FAILED = "rolling_back", "rolled_back", "failed"
TERMINAL = frozenset({SUCCEEDED, ROLLED_BACK, FAILED})
ACTIVE = frozenset({PENDING, MIRRORING, PROGRESSING, PAUSED, PROMOTING, WATCHING})
READY_DEADLINE_S = 120.0


@dataclass(frozen=True)
class Rollout:
    id: str
    spec: RolloutSpec
    phase: str = PENDING
    step: int = 0
    phase_since: float = 0.0
    step_since: float = 0.0
    resume_to: str = ""  # the phase a pause returns to
    reason: str = ""
    decided_by: str = ""  # judge, alert, timeout, person
    held_since: float = 0.0  # metrics unavailable since then: no verdict, and the step's clock stops
    revision: int = 0  # bumped on every change: the store refuses stale writes

    def with_(self, now: float, **changes: Any) -> Rollout:
        if "phase" in changes and changes["phase"] != self.phase:
            changes.setdefault("phase_since", now)
        return dataclasses.replace(self, revision=self.revision + 1, **changes)


@dataclass(frozen=True)
class Observation:
    """What the controller saw this tick.  Verdicts come from the judge (``continue|pass|fail``)."""

    canary_ready: bool = False
    verdicts: dict[str, tuple[str, str]] = field(default_factory=dict)  # metric -> (verdict, reason)
    mirror: tuple[str, str] | None = None  # (verdict, reason) for the mirror phase
    weight_applied: float | None = None  # the weight the router reports it serves
    change_detected: str = ""  # watch phase: the change detector's reason, if it fired
    command: str = ""  # pause, resume, promote, abort
    alert: str = ""  # the name of an alert that names this rollout, and why it fired
    metrics_unavailable: str = ""  # the metric source did not answer: why (the rollout holds)
    not_ready: str = ""  # why the canary is not ready yet, in the platform's words


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
    weight: float
    mirror_share: float
    canary_running: bool
    stable_release: str
    old_release_warm: bool


def desired(r: Rollout) -> Desired:
    s = r.spec
    phase = r.resume_to if r.phase == PAUSED else r.phase
    if phase == PENDING:
        return Desired(0.0, 0.0, True, s.stable, False)
    if phase == MIRRORING:
        return Desired(0.0, float((s.mirror or {}).get("share", 1.0)), True, s.stable, False)
    if phase == PROGRESSING:
        return Desired(s.steps[r.step].weight, 0.0, True, s.stable, False)
    if phase in (PROMOTING, WATCHING):
        return Desired(0.0, 0.0, False, s.canary, True)
    if phase == SUCCEEDED:
        return Desired(0.0, 0.0, False, s.canary, False)
    if phase == ROLLING_BACK:  # weight to zero first; the canary stops once the router confirms it
        return Desired(0.0, 0.0, True, s.stable, False)
    return Desired(0.0, 0.0, False, s.stable, False)  # rolled back, failed


def advance(r: Rollout, seen: Observation, now: float) -> tuple[Rollout, list[Decision]]:
    if r.phase in TERMINAL:
        return r, []
    out: list[Decision] = []

    def go(phase: str, by: str, reason: str, evidence: dict[str, Any] | None = None, **changes: Any) -> Rollout:
        out.append(Decision(now, r.phase, phase, by, reason, evidence or {}))
        return r.with_(now, phase=phase, decided_by=by, reason=reason, **changes)

    # What rolls back from any active phase comes first: a person, an alert.
    if r.phase in ACTIVE and seen.command == "abort":
        return go(ROLLING_BACK, "person", "aborted"), out
    if r.phase in ACTIVE and seen.alert:
        return go(ROLLING_BACK, "alert", f"alert {seen.alert} fired"), out
    if r.phase == ROLLING_BACK:
        if seen.weight_applied == 0.0:
            return go(ROLLED_BACK, r.decided_by, r.reason), out
        return r, out
    if r.phase == PENDING:
        if seen.canary_ready:
            if r.spec.mirror:
                return go(MIRRORING, "controller", "canary ready: mirroring"), out
            return go(PROGRESSING, "controller", "canary ready: first step", step=0, step_since=now), out
        if now - r.phase_since > READY_DEADLINE_S:
            why = f": {seen.not_ready}" if seen.not_ready else ""
            return go(FAILED, "timeout", f"canary not ready after {READY_DEADLINE_S:.0f} s{why}"), out
        return r, out
    if r.phase == PAUSED:
        if seen.command == "resume":
            return go(r.resume_to, "person", "resumed", step_since=now, resume_to=""), out
        failing = _failing(seen)
        if failing:  # a pause holds the weight, never the safety
            return go(ROLLING_BACK, "judge", failing), out
        return r, out
    if seen.command == "pause" and r.phase in (MIRRORING, PROGRESSING):
        return go(PAUSED, "person", "paused", resume_to=r.phase, held_since=0.0), out
    if seen.command == "promote" and r.phase in (MIRRORING, PROGRESSING):
        return go(PROMOTING, "person", "promoted by hand (remaining steps skipped)"), out
    if r.phase in (MIRRORING, PROGRESSING):
        held = _held(r, seen, now, go)
        if held is not None:
            return held, out
    if r.phase == MIRRORING:
        return _mirroring(r, seen, now, go), out
    if r.phase == PROGRESSING:
        return _progressing(r, seen, now, go), out
    if r.phase == PROMOTING:
        return go(WATCHING, "controller", f"stable now serves {r.spec.canary}; {r.spec.stable} kept warm"), out
    if r.phase == WATCHING:
        if seen.change_detected:
            return go(ROLLING_BACK, "judge", f"late failure after promotion: {seen.change_detected}"), out
        if now - r.phase_since >= r.spec.watch_seconds:
            return go(SUCCEEDED, "controller", f"watched {r.spec.watch_seconds:.0f} s without a change"), out
    return r, out


def _held(r: Rollout, seen: Observation, now: float, go: Callable[..., Rollout]) -> Rollout | None:
    """A metric source that does not answer holds the rollout: no verdict, no timeout (its clock stops
    and restarts where it stopped).  Rolling back or promoting on a missing answer would be a guess."""
    if seen.metrics_unavailable:
        if r.held_since:
            return r
        return go(r.phase, "controller", f"held: {seen.metrics_unavailable}", held_since=now)
    if r.held_since:
        paused = now - r.held_since
        return go(
            r.phase,
            "controller",
            f"metrics available again after {paused:.0f} s: the step's time limit is moved on by as much",
            held_since=0.0,
            step_since=r.step_since + paused,
            phase_since=r.phase_since + paused,
        )
    return None


def _failing(seen: Observation) -> str:
    for metric, (verdict, reason) in sorted(seen.verdicts.items()):
        if verdict == "fail":
            return f"{metric}: {reason}"
    return ""


def _mirroring(r: Rollout, seen: Observation, now: float, go: Callable[..., Rollout]) -> Rollout:
    verdict, reason = seen.mirror or ("continue", "no comparisons yet")
    if verdict == "fail":
        return go(ROLLING_BACK, "judge", f"mirror: {reason}")
    if verdict == "pass":
        return go(PROGRESSING, "judge", f"mirror: {reason}", step=0, step_since=now)
    limit = float((r.spec.mirror or {}).get("max_seconds", 600))
    if now - r.phase_since > limit:
        return go(ROLLING_BACK, "timeout", f"mirror phase not conclusive after {limit:.0f} s: {reason}")
    return r


def _progressing(r: Rollout, seen: Observation, now: float, go: Callable[..., Rollout]) -> Rollout:
    failing = _failing(seen)
    if failing:
        return go(ROLLING_BACK, "judge", failing)
    step = r.spec.steps[r.step]
    metrics = [m.name for m in r.spec.metrics]
    if metrics and all(seen.verdicts.get(m, ("continue", ""))[0] == "pass" for m in metrics):
        reason = f"step {r.step + 1} ({step.weight:g}%) passed: " + "; ".join(seen.verdicts[m][1] for m in metrics)
        if r.step + 1 < len(r.spec.steps):
            return go(PROGRESSING, "judge", reason, step=r.step + 1, step_since=now)
        return go(PROMOTING, "judge", reason)
    if now - r.step_since > step.max_seconds:
        waiting = "; ".join(f"{m}: {v[1]}" for m, v in sorted(seen.verdicts.items()) if v[0] != "pass")
        return go(
            ROLLING_BACK,
            "timeout",
            f"step {r.step + 1} not conclusive after {step.max_seconds:.0f} s ({waiting or 'no data'})",
        )
    return r
