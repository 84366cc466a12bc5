"""What a notification says: one typed event of a rollout's life, as the controller records it.

Sits between the controller (which makes events at its transitions) and the outbox (which stores
them as JSON until each webhook has them).  The event's ``id`` is what a receiver dedupes on: give
a deterministic one (for example the rollout id and the decision's sequence number) and an event
enqueued twice, by a controller that crashed between acting and remembering it acted, is stored
and sent once.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MAX_TEXT = 2000


class EventKind(enum.StrEnum):
    STARTED = "started"
    STEP_PASSED = "step_passed"
    HELD = "held"
    PAUSED = "paused"
    ROLLED_BACK = "rolled_back"
    PROMOTED = "promoted"
    WATCH_ENDED = "watch_ended"
    INCONCLUSIVE = "inconclusive"
    FAILED = "failed"  # the rollout could not run (a canary never ready, a platform error): nothing to roll back


@dataclass(frozen=True)
class RolloutEvent:
    kind: EventKind
    rollout_id: str
    service: str
    stable: str  # the release serving before the rollout
    canary: str  # the release being rolled out
    reason: str = ""  # why (a rollback's reason, what holds it, who paused it)
    evidence: str = ""  # a one-line summary of the judge's numbers at the time, if any
    step: int | None = None  # the step that passed, or the step the rollout was in
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, EventKind):
            object.__setattr__(self, "kind", EventKind(self.kind))
        for name in ("reason", "evidence"):  # bounded: a chat message and a stored row stay small
            value = getattr(self, name)
            if len(value) > MAX_TEXT:
                object.__setattr__(self, name, value[: MAX_TEXT - 1] + "…")
        if self.at.tzinfo is None:
            raise ValueError("RolloutEvent.at must be timezone-aware (UTC)")
        if not self.id or len(self.id) > 64:
            raise ValueError("RolloutEvent.id must be 1 to 64 characters")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind.value,
            "rollout_id": self.rollout_id,
            "service": self.service,
            "stable": self.stable,
            "canary": self.canary,
            "reason": self.reason,
            "evidence": self.evidence,
            "step": self.step,
            "at": self.at.astimezone(UTC).isoformat(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutEvent:
        return cls(
            kind=EventKind(data["kind"]),
            rollout_id=str(data["rollout_id"]),
            service=str(data["service"]),
            stable=str(data["stable"]),
            canary=str(data["canary"]),
            reason=str(data.get("reason", "")),
            evidence=str(data.get("evidence", "")),
            step=None if data.get("step") is None else int(data["step"]),
            at=datetime.fromisoformat(data["at"]),
            id=str(data["id"]),
        )

    def headline(self) -> str:
        """One line a person reads in chat."""
        what = {
            EventKind.STARTED: "started",
            EventKind.STEP_PASSED: f"passed step {self.step}" if self.step is not None else "passed a step",
            EventKind.HELD: "is held",
            EventKind.PAUSED: "is paused",
            EventKind.ROLLED_BACK: "was rolled back",
            EventKind.PROMOTED: "was promoted",
            EventKind.WATCH_ENDED: "finished its watch after promotion",
            EventKind.INCONCLUSIVE: "ended a step inconclusive",
            EventKind.FAILED: "failed",
        }[self.kind]
        return f"{self.service} {self.stable} -> {self.canary} {what}"
