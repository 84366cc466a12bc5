"""Which notification a controller decision makes: a pure mapping from a transition to an event.

Sits between the controller's decisions (phase from, phase to, who, why, the step) and the outbox.
The controller builds a :class:`Transition` from each decision it stores and, when
:func:`event_for` answers an event, enqueues it in the same transaction.  Phases are compared by
their string values (``"progressing"``), so an enum of phases whose values are these names works.
"""

from __future__ import annotations

from dataclasses import dataclass

from canary.notify.events import EventKind, RolloutEvent

EXPOSED = frozenset({"mirroring", "progressing"})


@dataclass(frozen=True)
class Transition:
    rollout_id: str
    sequence: int  # the decision's number within its rollout: makes the event id deterministic
    service: str
    stable: str
    canary: str
    phase_from: str
    phase_to: str
    reason: str
    step_from: int | None = None  # the controller's 0-based step index before and after the decision
    step_to: int | None = None
    held: bool = False  # the decision holds the rollout (its metrics source does not answer)
    inconclusive: bool = False  # the decision ends a step that was neither passed nor failed
    evidence: str = ""


def event_for(t: Transition) -> RolloutEvent | None:
    """The event this decision makes, or None (most decisions make none).  Its step counts from 1:
    the step that passed, or the step the rollout was in; none for the mirror phase."""
    kind = _kind(t)
    if kind is None:
        return None
    mirror_passed = kind is EventKind.STEP_PASSED and t.phase_from == "mirroring"
    step = None if mirror_passed or t.step_from is None else t.step_from + 1
    return RolloutEvent(
        kind,
        t.rollout_id,
        t.service,
        t.stable,
        t.canary,
        reason=t.reason,
        evidence=t.evidence,
        step=step,
        id=f"{t.rollout_id}-{t.sequence}",
    )


def _kind(t: Transition) -> EventKind | None:
    if t.inconclusive:
        return EventKind.INCONCLUSIVE
    if t.held:
        return EventKind.HELD
    if t.phase_from == "pending" and t.phase_to in EXPOSED:
        return EventKind.STARTED
    if t.phase_from == "mirroring" and t.phase_to == "progressing":
        return EventKind.STEP_PASSED  # the mirror phase passed
    if t.phase_from == t.phase_to == "progressing" and (t.step_to or 0) > (t.step_from or 0):
        return EventKind.STEP_PASSED
    targets = {
        "paused": EventKind.PAUSED,
        "rolled_back": EventKind.ROLLED_BACK,
        "promoting": EventKind.PROMOTED,
        "failed": EventKind.FAILED,
    }
    if t.phase_to in targets and t.phase_from != t.phase_to:
        return targets[t.phase_to]
    if t.phase_from == "watching" and t.phase_to == "succeeded":
        return EventKind.WATCH_ENDED
    return None
