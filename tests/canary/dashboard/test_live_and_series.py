"""The live stream and the chart series on a real store (SQLite): a saved decision reaches an open
stream once committed; a bin's judgement becomes one chart point (and the same figures again
none); the series stays bounded, keeps its first and last points, and outlives a restart."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from sqlalchemy import create_engine

from canary.controller import machine
from canary.controller.dashboard.live import Live
from canary.controller.dashboard.series import Series, point_figures
from canary.controller.evidence_figures import figures
from canary.controller.store import Store, metadata
from core.db import create_schema
from tests.canary.test_controller_api import SPEC

pytestmark = pytest.mark.anyio
PER_METRIC = {  # the per-metric judge's evidence shape
    "counts": {"canary": {"requests": 50, "bad": 5}, "stable": {"requests": 100, "bad": 1}},
    "regression": {"e_value": 12.5, "threshold": 100.0},
}
ROLLOUT_JUDGE = {"e_value": "unbounded", "threshold": 40.0, "canary": {"requests": 10, "bad": 0}}


@dataclass
class Judged:  # the shape of Controller.latest_judgements' answer that the dashboard reads
    last: dict[str, machine.Judgement] = field(default_factory=dict)
    last_watch: dict[str, machine.Judgement] = field(default_factory=dict)


class Judge:
    """Stands in for the controller's judge only: its latest answer per rollout (the store is real)."""

    def __init__(self) -> None:
        self.answer = Judged()

    async def latest_judgements(self, rollout_id: str) -> Judged:
        return self.answer

    def clock(self) -> float:
        return 1000.0


def store(tmp_path) -> Store:
    engine = create_engine(f"sqlite:///{tmp_path / 'c.db'}")
    create_schema(engine, metadata)
    return Store(engine)


def test_figures_read_both_judges_evidence():
    a = figures(PER_METRIC)
    assert a is not None and (a.e_value, a.threshold, a.canary_bad, a.stable_requests) == (12.5, 100.0, 5, 100)
    assert a.rate("canary") == 0.1
    b = figures(ROLLOUT_JUDGE)
    assert b is not None and b.e_value == float("inf") and b.stable_requests is None and b.rate("stable") is None
    assert figures({"compared": 10}) is None and figures("nope") is None


async def test_a_saved_decision_reaches_an_open_stream(tmp_path):
    s = store(tmp_path)
    live = Live(Judge(), Series(s.engine), asyncio.get_running_loop())
    s.hooks.append(live)
    events = await live.stream()
    assert "event: hello" in await anext(events)
    r = await asyncio.to_thread(s.create, SPEC, 1.0)
    assert '"what": "created"' in await asyncio.wait_for(anext(events), 10)
    moved = r.with_(2.0, phase=machine.PROGRESSING)
    decision = machine.Decision(2.0, "pending", "progressing", "controller", "canary ready")
    await asyncio.to_thread(s.save, moved, r.revision, [decision])
    got = await asyncio.wait_for(anext(events), 10)
    assert got == f'id: 2\nevent: decision\ndata: {{"rollout": "{r.id}", "what": "decision"}}\n\n'
    await events.aclose()
    assert not live.subscribers  # a closed page is forgotten


async def test_a_bin_makes_one_point_and_the_same_figures_again_none(tmp_path):
    s = store(tmp_path)
    judge = Judge()
    live = Live(judge, Series(s.engine), asyncio.get_running_loop())
    events = await live.stream()
    await anext(events)
    judge.answer = Judged({"errors": machine.Judgement(machine.Verdict.CONTINUE, "judging", PER_METRIC)})
    live.committed("r1", "judged")
    assert "judged" in await asyncio.wait_for(anext(events), 10)
    live.committed("r1", "judged")  # nothing new: no point, no event
    await asyncio.wait_for(_settled(live), 10)
    live.committed("r1", "decision")
    assert "decision" in await asyncio.wait_for(anext(events), 10)  # the next event, not a second "judged"
    (point,) = live.series.get("r1")
    assert point.metrics["errors"]["e"] == 12.5 and point.metrics["errors"]["canary_rate"] == 0.1
    await events.aclose()


async def _settled(live: Live) -> None:
    await asyncio.sleep(0)  # let the loop take the change handed over
    while live._tasks:
        await asyncio.sleep(0.01)


def test_the_series_is_bounded_keeps_its_ends_and_outlives_a_restart(tmp_path):
    s = store(tmp_path)
    series = Series(s.engine, max_points=20)
    for i in range(100):
        assert series.add("r1", float(i), {"errors": {"e": float(i)}})
    kept = series.get("r1")
    assert len(kept) <= 20
    assert kept[0].at == 0.0 and kept[-1].at == 99.0
    assert [p.at for p in kept] == sorted(p.at for p in kept)
    again = Series(s.engine, max_points=20).get("r1")  # a restarted controller
    assert [p.at for p in again] == [p.at for p in kept]
    assert point_figures({"errors": {"evidence": {"compared": 3}}}) == {}  # the mirror's answer draws nothing
    default = Series(s.engine)  # as the controller keeps it: at most 400 points per rollout
    for i in range(900):
        default.add("r2", float(i), {"errors": {"e": float(i)}})
    assert 200 <= len(default.get("r2")) <= 400
