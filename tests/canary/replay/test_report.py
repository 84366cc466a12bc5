"""The replay's report from recorded data (no servers): the e-value chart against its threshold, and
notes that say the load generator fell behind only when it did."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from canary.replay import report, schedule
from canary.replay.recorder import Track, _sample

SVG = "{http://www.w3.org/2000/svg}"


def detail(phase: str, e_value: float | None, weight: float = 10) -> dict:
    """What GET /api/rollouts/{id} answers, in the shape the recorder reads."""
    judge = {}
    if e_value is not None:
        counts = {
            "canary": {"requests": 300, "bad": 30, "rate": 0.1},
            "stable": {"requests": 3000, "bad": 30, "rate": 0.01},
        }
        judge["errors"] = {
            "verdict": "continue",
            "evidence": {"counts": counts, "regression": {"e_value": e_value, "threshold": 100.0}},
        }
    return {"phase": phase, "weight": weight, "mirror_share": 0.0, "reason": "", "judge": judge}


def recorded(e_values: list[float | None], phases: list[str]) -> Track:
    track = Track("r1", "importer", "1.1", "1.0", started=10.0)
    for i, (e, phase) in enumerate(zip(e_values, phases, strict=True)):
        track.samples.append(_sample(11.0 + i, detail(phase, e), {}, track))
    track.detail = {"phase": phases[-1], "reason": "errors: canary worse", "decisions": []}
    return track


def polylines(svg: str) -> list[list[tuple[float, float]]]:
    root = ET.fromstring(svg)
    return [
        [tuple(map(float, p.split(","))) for p in line.get("points", "").split()]
        for line in root.iter(f"{SVG}polyline")
    ]


def test_the_e_value_grows_towards_its_threshold_on_a_log_scale():
    e_values = [1.0, 0.5, 3.0, 20.0, 150.0, None]  # the last sample: the rollout has ended, no judge
    track = recorded(e_values, ["progressing"] * 5 + ["rolled_back"])
    charts = report.charts(track)
    assert len(charts) == 3
    evidence = charts[2]
    assert "evidence against the canary (e-value, log scale)" in evidence and "fails at 100" in evidence
    curve, threshold = polylines(evidence)
    assert len(curve) == 5  # one point per sample that carried the judge's e-value
    ys = [y for _, y in curve]  # SVG y grows downwards: a growing e-value climbs
    assert ys[1] > ys[0] > ys[2] > ys[3] > ys[4]
    assert threshold[0][1] == threshold[1][1]  # a horizontal line
    assert ys[3] > threshold[0][1] > ys[4]  # 20 under the threshold of 100, 150 over it
    # log scale: equal ratios are equal distances (1 -> 3 and 20 -> 60 would be the same height)
    per_decade = (ys[0] - ys[3]) / math.log10(20.0)
    assert abs((ys[0] - threshold[0][1]) - 2 * per_decade) < 1.0
    page = report.html({"generated_at": "now", "duration_s": 1, "load": "x", "services": {"importer": []}}, [track])
    assert page.count("<svg") == 3


def test_a_rollout_without_judged_samples_has_no_e_value_chart():
    track = recorded([None, None], ["pending", "mirroring"])
    assert len(report.charts(track)) == 2


def test_a_rollout_rolled_back_in_its_mirror_phase_has_the_mirror_tests_e_value_chart():
    track = Track("r2", "resizer", "2.0", "1.0", started=10.0)
    for i, e in enumerate([1.0, 8.0, 40.0, 250.0]):
        d = detail("mirroring", None)
        d["mirror"] = {"verdict": "continue", "evidence": {"compared": 10 * i, "e_value": e, "threshold": 200.0}}
        track.samples.append(_sample(11.0 + i, d, {}, track))
    track.detail = {"phase": "mirroring", "reason": "mirror: answers differ", "decisions": []}
    charts = report.charts(track)
    assert len(charts) == 3 and "mirror phase: e-value" in charts[2] and "fails at 200" in charts[2]
    curve, _ = polylines(charts[2])
    assert len(curve) == 4


def test_huge_and_tiny_e_values_stay_on_the_chart():
    track = recorded([1e-9, 1.0, math.exp(700), "unbounded"], ["progressing"] * 4)  # type: ignore[list-item]
    (curve, _threshold) = polylines(report.charts(track)[2])
    assert len(curve) == 4 and all(math.isfinite(x) and math.isfinite(y) for x, y in curve)
    assert curve[3][1] <= curve[2][1]  # unbounded at the top


def load_report(started: int, late: int, skipped: int = 0, rate: float = 90.0, achieved: float = 89.5) -> dict:
    return {
        "rate": rate,
        "duration_s": 200.0,
        "schedule": {
            "requests_started": started,
            "achieved_rate": achieved,
            "late_starts": late,
            "max_lag_ms": 180.0,
            "skipped_too_many_in_flight": skipped,
            "fell_behind": late > 0.01 * started or skipped > 0,  # canary load's own, stricter flag
        },
    }


def test_a_rate_a_little_under_the_asked_one_is_not_falling_behind():
    # found by the replay: 89.5 of 90 arrivals/s, 2% of them a little late, was called saturation
    s = schedule.LoadSchedule.from_report(load_report(started=17_900, late=360), 90.0)
    assert s is not None and not s.fell_behind
    assert schedule.note("faulty", s) is None
    assert schedule.note("faulty", schedule.LoadSchedule.from_report({}, 90.0)) is None  # no load ran


def test_skipped_arrivals_or_many_late_starts_are_falling_behind_with_the_numbers():
    skipped = schedule.note("faulty", schedule.LoadSchedule.from_report(load_report(17_000, 10, skipped=900), 90.0))
    assert skipped is not None and "fell behind its schedule: 900 were skipped" in skipped
    assert "89.5 of 90 arrivals/s" in skipped and "saturated" not in skipped
    late = schedule.note("reworked", schedule.LoadSchedule.from_report(load_report(17_900, 2_000), 90.0))
    assert late is not None and "During the reworked releases" in late
    assert "2000 of 17900 arrivals (11%) started more than 50 ms late (up to 180 ms)" in late
