"""When did every member's stable track fail at once?  The report's note on a shared failure.

Sits between the recorder's samples (the router's cumulative counts for each member's stable
release, once a second) and the report's notes.  A burst on a dependency the members share (a
database down for all of them) makes stable fail as much as the canary; the judge compares each
member's canary with its *own* stable, so such a burst weighs on neither side and is no reason to
roll a member back.  The note says when it happened, so that a reader does not take the errors of
that window for the canaries' (and sees that no member was rolled back for them).

A member's stable is *failing* between two samples when at least ``MIN_ERRORS`` of its answers
there failed and they were at least ``FAILING_SHARE`` of its answers; failing stretches of one
member closer than ``GAP_S`` are one stretch (a request that waits for a dead database answers
late, so errors come in clumps).  The note covers the times every member's stable was failing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from canary.replay.recorder import GroupTrack, Track

FAILING_SHARE = 0.2
MIN_ERRORS = 2
GAP_S = 3.0


@dataclass(frozen=True)
class Window:
    start: float  # seconds since the group's release
    end: float


def failing_windows(track: Track, origin: float) -> list[Window]:
    """The stretches in which ``track``'s stable release was failing, in seconds since ``origin``."""
    windows: list[Window] = []
    previous: tuple[float, int, int] | None = None
    for s in track.samples:
        stable = s["router"].get("stable", {})
        now = (s["t"] - origin, int(stable.get("requests", 0)), int(stable.get("errors", 0)))
        if previous is not None:
            requests, errors = now[1] - previous[1], now[2] - previous[2]
            if errors >= MIN_ERRORS and errors >= FAILING_SHARE * max(requests, 1):
                if windows and previous[0] - windows[-1].end <= GAP_S:
                    windows[-1] = Window(windows[-1].start, now[0])
                else:
                    windows.append(Window(previous[0], now[0]))
        previous = now
    return windows


def together(per_member: Sequence[list[Window]]) -> list[Window]:
    """The times inside a window of every member (empty with fewer than two members)."""
    if len(per_member) < 2:
        return []
    common = list(per_member[0])
    for windows in per_member[1:]:
        common = [
            Window(max(a.start, b.start), min(a.end, b.end))
            for a in common
            for b in windows
            if max(a.start, b.start) < min(a.end, b.end)
        ]
    return common


def notes(group: GroupTrack) -> list[str]:
    """One note per stretch in which the stable tracks of all the group's members failed together."""
    members = [t for t in group.members if t.samples]
    out = []
    for w in together([failing_windows(t, group.started) for t in members]):
        names = ", ".join(t.service for t in members)
        back = [t.service for t in members if _rolled_back_within(t, group, w)]
        then = f"; rolled back then: {', '.join(back)}" if back else "; none of them was rolled back then"
        out.append(
            f"Group {group.name}: the stable tracks of {names} failed together from +{w.start:.0f} s to "
            f"+{w.end:.0f} s after the release: members judged against their own stable (the judge compares "
            f"each member's canary with its own stable release, so a failure they share weighs on neither "
            f"side){then}."
        )
    return out


def _rolled_back_within(track: Track, group: GroupTrack, w: Window) -> bool:
    """The member's rollback was decided during the window or within ``GAP_S`` after it."""
    for d in track.detail.get("decisions", []):
        if d["phase_to"] == "rolling_back":
            t = float(d["at"]) - group.created_at
            return w.start <= t <= w.end + GAP_S
    return False
