"""The groups in the replay's report: each group's timeline beside its members', a chart of every
member's canary weight on the group's clock, and the summary's lines (from ``figures.group_figures``)."""

from __future__ import annotations

from html import escape
from typing import Any

from canary.replay.recorder import GroupTrack
from canary.replay.svg import EVIDENCE, Marker, Series, line_chart


def _t(value: float | None) -> str:
    return "-" if value is None else f"+{value:g} s"


def summary_lines(groups: list[dict[str, Any]]) -> list[str]:
    lines = []
    for g in groups:
        ends = ", ".join(f"{m['service']} {m['release']} {m['outcome']} at {_t(m['ended_s'])}" for m in g["members"])
        settled = g["release_to_settled_s"]
        lines.append(
            f"group {g['name']} ({g['policy']}): {g['outcome']}, "
            + (f"settled {settled:g} s after its release" if settled is not None else "not settled")
            + f"; {ends}; consumer errors {g['consumer_errors']}"
            + (f", opens lost {g['opens_lost']}" if g["opens_lost"] is not None else "")
        )
    return lines


def weight_chart(group: GroupTrack) -> str | None:
    """Each member's canary weight (and mirror share) since the group's release, with the group's
    phase changes as markers: the members' timelines on one clock."""
    series = []
    for i, track in enumerate(group.members):
        color, name = EVIDENCE[i % len(EVIDENCE)], f"{track.service} {track.release}"
        points = [(s["t"] - group.started, float(s["weight"])) for s in track.samples]
        mirror = [(s["t"] - group.started, 100 * float(s["mirror_share"])) for s in track.samples]
        if points:
            series.append(Series(f"{name} weight %", points, color, step=True))
        if any(y for _, y in mirror):
            series.append(Series(f"{name} mirror %", mirror, color, step=True, dashed=True))
    if not series:
        return None
    markers, previous = [], None
    for s in group.samples:
        if s["phase"] != previous:
            markers.append(Marker(s["t"] - group.started, f"group {s['phase']}"))
            previous = s["phase"]
    return line_chart(f"group {group.name}: each member's traffic to its canary", series, markers=markers, y_max=100)


def section(g: dict[str, Any], track: GroupTrack | None, notes: list[str]) -> str:
    """One group: its decisions on the left, its members' phases on the right, both in seconds
    since the group was released; the notes about it; the weight chart."""
    own = "".join(
        f"<li><b>{_t(d['t'])}</b> {escape(d['member'] or '(group)')} {escape(d['action'])}: {escape(d['reason'])}</li>"
        for d in g["decisions"]
    )
    settled = g["release_to_settled_s"]
    at = f", settled at {_t(settled)}" if settled is not None else ""
    own += f"<li><b>{escape(g['outcome'])}</b>{at}</li>"
    members = "".join(
        f"<li><b>{escape(m['service'])} {escape(m['release'])}</b>: {escape(m['outcome'])}"
        + "".join(f"<br>&nbsp;&nbsp;{_t(x['t'])} {escape(x['phase'])} ({escape(x['by'])})" for x in m["timeline"])
        + "</li>"
        for m in g["members"]
    )
    said = "".join(f"<p>{escape(n)}</p>" for n in notes if f"Group {g['name']}:" in n)
    chart = weight_chart(track) if track is not None else None
    return (
        f"<h2>group {escape(g['name'])} (policy {escape(g['policy'])})</h2>"
        f"<p>consumer errors {g['consumer_errors']}"
        + (f", opens lost {g['opens_lost']}" if g["opens_lost"] is not None else "")
        + f"; settled at {_t(settled)}</p>{said}"
        f"<div class='cols'><div><h3>The group (seconds since its release)</h3><ul>{own}</ul></div>"
        f"<div><h3>Its members</h3><ul>{members}</ul></div></div>" + (f"<div>{chart}</div>" if chart else "")
    )
