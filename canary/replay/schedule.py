"""Did the load generator keep its schedule?  The replay's note says "fell behind" only when it did.

Sits between ``canary load``'s report (its ``schedule`` figures) and the replay's notes.  The load
is open loop: every scheduled arrival either starts (on time or late) or is skipped, so an achieved
rate a little under the asked one (89.5 of 90 arrivals/s) is the Poisson schedule's own chance, not
a sign of trouble.  The generator fell behind when it skipped arrivals (too many in flight) or when
a sizeable share of them started late (more than ``LATE_SHARE``): then consumers' figures come from
fewer or bunched requests, and the note says so with the numbers.  A few late starts (a pause of
the machine) are not falling behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LATE_SHARE = 0.05  # above this share of late starts the schedule was not kept
LATE_MS = 50  # what canary load counts as a late start (canary/traffic/load.py LATE_S)


@dataclass(frozen=True)
class LoadSchedule:
    asked_rate: float
    started: int
    achieved_rate: float
    late_starts: int
    max_lag_ms: float
    skipped: int

    @classmethod
    def from_report(cls, load_report: dict[str, Any], asked_rate: float) -> LoadSchedule | None:
        s = load_report.get("schedule")
        if not s:
            return None
        return cls(
            asked_rate=float(load_report.get("rate", asked_rate)),
            started=int(s.get("requests_started", 0)),
            achieved_rate=float(s.get("achieved_rate", 0.0)),
            late_starts=int(s.get("late_starts", 0)),
            max_lag_ms=float(s.get("max_lag_ms", 0.0)),
            skipped=int(s.get("skipped_too_many_in_flight", 0)),
        )

    @property
    def late_share(self) -> float:
        return self.late_starts / max(self.started, 1)

    @property
    def fell_behind(self) -> bool:
        return self.skipped > 0 or self.late_share > LATE_SHARE


def note(round_name: str, schedule: LoadSchedule | None) -> str | None:
    """The replay's note about the load of one round, or None when it kept its schedule."""
    if schedule is None or not schedule.fell_behind:
        return None
    s = schedule
    parts = []
    if s.late_share > LATE_SHARE:
        parts.append(
            f"{s.late_starts} of {s.started} arrivals ({s.late_share:.0%}) started more than {LATE_MS} ms late "
            f"(up to {s.max_lag_ms:.0f} ms)"
        )
    if s.skipped:
        parts.append(f"{s.skipped} were skipped with too many requests in flight")
    rate = f"{s.achieved_rate:g} of {s.asked_rate:g} arrivals/s started"
    return (
        f"During the {round_name} releases the load generator fell behind its schedule: {'; '.join(parts)} "
        f"({rate}); consumers' figures come from fewer or bunched requests."
    )
