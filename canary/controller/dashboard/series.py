"""The judge's figures over a rollout's time, for the dashboard's charts: a bounded series per rollout.

Sits beside the store: each time the controller stores the judge's state (once per bin), the
dashboard reads the judge's latest answers (``Controller.latest_judgements``, the evidence that
``GET /api/rollouts/{id}`` shows) and keeps one point per new bin: per metric its e-value, its
threshold and the counts per track.  Points are stored (table ``dashboard_series``), so a restarted
controller still draws a rollout's whole history; at most ``MAX_POINTS`` per rollout, the older half
thinned to every second point when it overflows, so a long rollout keeps its shape in bounded room.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Engine, Float, Integer, MetaData, String, Table, Text, delete, insert, select

from canary.controller.evidence_figures import figures
from core.db import create_schema, write_transaction

MAX_POINTS = 400
metadata = MetaData()

points = Table(
    "dashboard_series",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rollout_id", String(32), nullable=False, index=True),
    Column("at", Float, nullable=False),
    Column("figures", Text, nullable=False),
)


def _key(result: Any) -> int:
    """The id an insert gave its row."""
    key = result.inserted_primary_key
    assert key is not None  # an insert into a table with a primary key always has one
    return int(key[0])


@dataclass(frozen=True)
class Point:
    id: int
    at: float
    metrics: dict[str, dict[str, Any]]  # metric -> Figures.to_dict()

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "metrics": self.metrics}


def point_figures(judgements: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per metric (the watch's prefixed ``watch:``), the figures of ``{metric: {"evidence": ...}}``."""
    out = {}
    for name, j in judgements.items():
        f = figures(j.get("evidence") if isinstance(j, dict) else None)
        if f is not None:
            out[name] = f.to_dict()
    return out


class Series:
    def __init__(self, engine: Engine, max_points: int = MAX_POINTS) -> None:
        self.engine = engine
        self.max_points = max_points
        self._cache: dict[str, list[Point]] = {}
        create_schema(engine, metadata)

    def get(self, rollout_id: str) -> list[Point]:
        if rollout_id not in self._cache:
            with self.engine.connect() as conn:
                rows = conn.execute(select(points).where(points.c.rollout_id == rollout_id).order_by(points.c.id))
                self._cache[rollout_id] = [Point(r.id, r.at, json.loads(r.figures)) for r in rows]
        return self._cache[rollout_id]

    def add(self, rollout_id: str, at: float, metrics: dict[str, dict[str, Any]]) -> bool:
        """Keep a point unless it says what the last one said (no new bin); True if kept."""
        kept = self.get(rollout_id)
        if not metrics or (kept and kept[-1].metrics == metrics):
            return False
        with write_transaction(self.engine) as conn:
            row = conn.execute(
                insert(points).values(rollout_id=rollout_id, at=at, figures=json.dumps(metrics, default=str))
            )
            new = [*kept, Point(_key(row), at, metrics)]
            if len(new) > self.max_points:
                half = len(new) // 2
                thinned = new[:half:2] + new[half:]
                dropped = {p.id for p in new} - {p.id for p in thinned}
                conn.execute(delete(points).where(points.c.id.in_(dropped)))
                new = thinned
        self._cache[rollout_id] = new  # only once stored: memory never shows what the store lost
        return True

    def forget(self, rollout_id: str) -> None:
        """Drop the cached points of an ended rollout (they stay stored)."""
        self._cache.pop(rollout_id, None)
