"""One processing step of the open-event queue: claim a batch, record outcomes, acknowledge.

The batch is claimed, handled and acknowledged in one transaction: on PostgreSQL rows are claimed
with ``FOR UPDATE SKIP LOCKED`` so that several processors share the queue; on SQLite the claiming
transaction takes the write lock up front (``core.db.write_transaction``).  A processor that dies
mid-batch rolls back, and its events are claimed again.  An event handled twice (handed back after
a rollback of a canary, say) keeps its first outcome and counts once: one that already has an
outcome is neither inserted nor counted again, as acknowledged, recorded or filtered (``ON CONFLICT
DO NOTHING`` on the event id as well, for a concurrent processor).
A processor may be given a range of buckets (a stable hash of the event id) to take its share only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from core.db import placeholder, write_transaction
from services.opens.schema import opens, raw_events

OUTCOME_COLUMNS = (
    "event_id",
    "campaign_id",
    "contact_id",
    "send_id",
    "client",
    "device",
    "machine",
    "filtered",
    "opened_at",
    "release",
)
Handler = Callable[[list[dict[str, Any]], str], list[dict[str, Any]]]


@dataclass
class BatchResult:
    claimed: int = 0
    recorded: int = 0
    filtered: Counter[str] = field(default_factory=Counter)
    # claimed again with an outcome already stored (handed back after a rollback, by a release that
    # had recorded it): acknowledged and accounted for before, counted in neither again
    accounted_before: int = 0

    @property
    def acknowledged(self) -> int:
        """The events this batch acknowledged for the first time with this outcome to account for."""
        return self.claimed - self.accounted_before


def process_batch(
    engine: Engine,
    release: str,
    handler: Handler,
    *,
    limit: int = 500,
    buckets: tuple[int, int] = (0, 10_000),
) -> BatchResult:
    query = (
        select(
            raw_events.c.id,
            raw_events.c.event_id,
            raw_events.c.campaign_id,
            raw_events.c.contact_id,
            raw_events.c.send_id,
            raw_events.c.user_agent,
            raw_events.c.received_at,
        )
        .where(raw_events.c.processed_at.is_(None))
        .order_by(raw_events.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    lo, hi = buckets
    if (lo, hi) != (0, 10_000):
        query = query.where(raw_events.c.bucket >= lo, raw_events.c.bucket < hi)
    result = BatchResult()
    with write_transaction(engine) as conn:
        events = [r._asdict() for r in conn.execute(query)]
        if not events:
            return result
        result.claimed = len(events)
        rows = handler(events, release)
        ids = [r["event_id"] for r in rows]
        known = set(conn.execute(select(opens.c.event_id).where(opens.c.event_id.in_(ids))).scalars()) if ids else set()
        result.accounted_before = sum(1 for r in rows if r["event_id"] in known)
        rows = [r for r in rows if r["event_id"] not in known]
        p = placeholder(engine)
        if rows:
            conn.exec_driver_sql(
                f"INSERT INTO opens ({', '.join(OUTCOME_COLUMNS)}) VALUES ({', '.join([p] * len(OUTCOME_COLUMNS))})"
                " ON CONFLICT (event_id) DO NOTHING",
                [tuple(r[c] for c in OUTCOME_COLUMNS) for r in rows],
            )
        now = datetime.now(UTC)
        conn.exec_driver_sql(
            f"UPDATE raw_events SET processed_at = {p}, processed_by = {p} WHERE id = {p}",
            [(now, release, e["id"]) for e in events],
        )
    for r in rows:
        if r["filtered"]:
            result.filtered[r["filtered"]] += 1
        else:
            result.recorded += 1
    return result
