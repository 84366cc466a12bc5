"""The replay's report: ``report.json``, a self-contained ``report.html`` (inline SVG charts, no
network needed) and the summary printed in the terminal."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from canary.replay import group_report
from canary.replay.plan import INCIDENT, INCIDENT_ROLLBACK_MIN
from canary.replay.recorder import GroupTrack, Track
from canary.replay.svg import COLORS, EVIDENCE, Marker, Series, line_chart


def write(
    state_dir: Path, report: dict[str, Any], tracks: list[Track], groups: Sequence[GroupTrack] = ()
) -> tuple[Path, Path]:
    state_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = state_dir / "report.json", state_dir / "report.html"
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    html_path.write_text(html(report, tracks, groups), encoding="utf-8")
    return json_path, html_path


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def summary_lines(report: dict[str, Any]) -> list[str]:
    lines = [
        f"{'service':<9}{'release':<8}{'outcome':<13}{'by':<7}{'detect':>9}{'rollback':>10}{'bake':>9}"
        f"{'canary failed':>15}{'consumer errors':>17}{'opens lost':>12}   13 April 2022"
    ]
    for service, releases in report["services"].items():
        for r in releases:
            then = f"rolled back after {INCIDENT_ROLLBACK_MIN[service]} min" if r["outcome"] != "promoted" else "-"
            lines.append(
                f"{service:<9}{r['release']:<8}{r['outcome']:<13}{r['decided_by']:<7}{_s(r['detect_s']):>9}"
                f"{_s(r['rollback_s']):>10}{_s(r['bake_s']):>9}{r['canary_failed_requests']:>15}"
                f"{r['consumer_errors']:>17}{r.get('opens_lost', '-'):>12}   {then}"
            )
    return lines + group_report.summary_lines(report.get("groups", []))


def _primary_metric(track: Track) -> str | None:
    names: list[str] = [str(name) for s in track.samples for name in s["judge"]]
    reason = track.detail.get("reason", "")
    for name in dict.fromkeys(names):
        if reason.startswith(f"{name}:"):
            return name
    return names[0] if names else None


def charts(track: Track) -> list[str]:
    samples = track.samples
    if not samples:
        return []
    t = [s["t"] - track.started for s in samples]
    markers, previous = [], None
    for x, s in zip(t, samples, strict=True):
        if s["phase"] != previous:
            markers.append(Marker(x, s["phase"]))
            previous = s["phase"]
    rates: list[Series] = []
    metric = _primary_metric(track)
    if metric:
        for side in ("canary", "stable"):
            points = [
                (x, s["judge"][metric][side]["rate"]) for x, s in zip(t, samples, strict=True) if metric in s["judge"]
            ]
            rates.append(Series(f"{metric}: {side}", points, COLORS[side]))
    base = track.baseline.get((track.service, "mirror"), {})
    mirrored = []
    for x, s in zip(t, samples, strict=True):
        compared = s["router"]["mirror"].get("compared", 0) - base.get("compared", 0)
        if compared > 0:
            mirrored.append((x, (s["router"]["mirror"].get("different", 0) - base.get("different", 0)) / compared))
    if mirrored:
        rates.append(Series("mirror: answers that differ", mirrored, COLORS["mirror"], dashed=True))
    weight = [
        Series(
            "canary weight %", [(x, s["weight"]) for x, s in zip(t, samples, strict=True)], COLORS["weight"], step=True
        ),
        Series(
            "mirror share %",
            [(x, 100 * s["mirror_share"]) for x, s in zip(t, samples, strict=True)],
            COLORS["mirror"],
            step=True,
            dashed=True,
        ),
    ]
    evidence = evidence_chart(track, t, markers)
    return [
        line_chart(
            f"{track.service} {track.release}: bad share per track (cumulative, as the judge sees it)",
            rates,
            markers=markers,
            y_format=lambda v: f"{v:.0%}" if v >= 0.1 else f"{v:.1%}",
        ),
        line_chart(f"{track.service} {track.release}: traffic to the canary", weight, markers=markers, y_max=100),
        *([evidence] if evidence else []),
    ]


MIRROR_PHASE = "mirror phase"
LOWEST_LOG_E = -3.0  # e-values under 1/1000 (strong evidence for the canary) are drawn at 1/1000


HIGHEST_LOG_E = 310.0  # the controller caps e-values at e^700 (about 1e304); "unbounded" is drawn here


def _log10_e(value: Any) -> float | None:
    if value in ("unbounded", "-unbounded"):  # how the controller's JSON says infinity
        return HIGHEST_LOG_E if value == "unbounded" else LOWEST_LOG_E
    try:
        e = float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(e):
        return None
    return LOWEST_LOG_E if e <= 10**LOWEST_LOG_E else min(math.log10(e), HIGHEST_LOG_E)


def evidence_chart(track: Track, t: list[float], markers: list[Marker]) -> str | None:
    """Each metric's e-value against 'canary no worse than stable' over the rollout, on a log scale,
    with the threshold at which the judge fails the canary (1/alpha): the judge's most telling number."""
    samples = track.samples
    names = list(dict.fromkeys(name for s in samples for name in s["judge"]))
    if any(s.get("mirror_evidence") for s in samples):
        names.append(MIRROR_PHASE)  # the mirror phase's own test, on compared answers
    series: list[Series] = []
    thresholds: dict[float, dict[str, None]] = {}
    for i, name in enumerate(names):
        points = []
        for x, s in zip(t, samples, strict=True):
            judged: dict[str, Any] | None = s.get("mirror_evidence") if name == MIRROR_PHASE else s["judge"].get(name)
            y = _log10_e(judged.get("e_value")) if judged else None
            if judged and y is not None:
                points.append((x, y))
                threshold = _log10_e(judged.get("threshold"))
                if threshold is not None:
                    thresholds.setdefault(threshold, {})[name] = None  # an ordered set of names
        if points:
            series.append(Series(f"{name}: e-value", points, EVIDENCE[i % len(EVIDENCE)]))
    if not series:
        return None
    end = max(t)
    for y, metric_names in sorted(thresholds.items()):
        label = f"fails at {_e_label(y)}" + ("" if len(thresholds) == 1 else f" ({', '.join(metric_names)})")
        series.append(Series(label, [(0.0, y), (end, y)], COLORS["threshold"], dashed=True))
    ys = [y for s in series for _, y in s.points]
    return line_chart(
        f"{track.service} {track.release}: evidence against the canary (e-value, log scale) and its threshold",
        series,
        markers=markers,
        y_min=min(0.0, math.floor(min(ys))),
        y_max=max(1.0, math.ceil(max(ys) * 1.1)),
        y_format=_e_label,
    )


def _e_label(log10_e: float) -> str:
    return f"{10**log10_e:.3g}" if abs(log10_e) < 4 else f"1e{log10_e:.0f}"


CSS = """
body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f4f4f4}td:first-child,td:nth-child(2),td:nth-child(3){text-align:left}
.cols{display:flex;gap:2em;flex-wrap:wrap}.cols>div{flex:1;min-width:320px}
.bad{color:#b02a17}.good{color:#19703a}code{background:#f4f4f4;padding:0 3px}
"""


def html(report: dict[str, Any], tracks: list[Track], groups: Sequence[GroupTrack] = ()) -> str:
    rows = []
    for service, releases in report["services"].items():
        for r in releases:
            css = "good" if r["outcome"] in ("promoted", "rolled_back") else "bad"
            rows.append(
                "<tr>"
                + "".join(
                    f"<td>{escape(str(v))}</td>"
                    for v in (
                        service,
                        r["release"],
                        r["outcome"],
                        r["decided_by"],
                        _s(r["detect_s"]),
                        _s(r["rollback_s"]),
                        _s(r["bake_s"]),
                        r["canary_failed_requests"],
                        r["consumer_errors"],
                        r.get("opens_lost", "-"),
                    )
                )
                + f'<td class="{css}">{escape(r["reason"])}</td></tr>'
            )
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "service",
            "release",
            "outcome",
            "decided by",
            "time to detect",
            "time to roll back",
            "bake",
            "canary requests failed",
            "errors consumers saw",
            "opens lost",
            "reason",
        )
    )
    sections = []
    for service in report["services"]:
        then = "".join(f"<li><b>+{e.minute:g} min</b> {escape(e.what)}</li>" for e in INCIDENT[service])
        now = "".join(
            f"<li><b>{r['release']}</b>: {escape(r['outcome'])}"
            + "".join(
                f"<br>&nbsp;&nbsp;+{d['t'] if d['t'] is not None else 0:g} s {escape(d['phase_from'])} → "
                f"{escape(d['phase_to'])} ({escape(d['decided_by'])}: {escape(d['reason'])})"
                for d in r["decisions"]
            )
            + "</li>"
            for r in report["services"][service]
        )
        pictures = "".join(chart for track in tracks if track.service == service for chart in charts(track))
        sections.append(
            f"<h2>{service}</h2><div class='cols'><div><h3>13 April 2022</h3><ul>{then}</ul></div>"
            f"<div><h3>This replay (seconds after the canary first got traffic)</h3><ul>{now}</ul></div></div>"
            f"<div>{pictures}</div>"
        )
    by_id = {g.group_id: g for g in groups}
    grouped = "".join(
        group_report.section(g, by_id.get(g["group_id"]), report.get("notes", [])) for g in report.get("groups", [])
    )
    notes = "".join(f"<li>{escape(n)}</li>" for n in report.get("notes", []))
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Replay of the 13 April 2022 release"
        f"</title><style>{CSS}</style></head><body><h1>Replay of the 13 April 2022 release</h1>"
        f"<p>Generated {escape(report['generated_at'])}; the replay took {report['duration_s']:.0f} s. "
        f"Traffic: {escape(report['load'])}.</p><ul>{notes}</ul>"
        f"<table><tr>{head}</tr>{''.join(rows)}</table>{grouped}{''.join(sections)}</body></html>\n"
    )
