"""The notification outbox: events stored in the controller's database until every webhook has them.

Sits between the controller (``enqueue``: one short insert, or ``enqueue_on`` inside the
controller's own transaction so that an event is stored exactly when its transition is) and the
sender (``claim`` / ``delivered`` / ``failed``).  Two tables, created if missing on the Engine it
is given (SQLite or PostgreSQL): ``notify_events`` (one row per event, its JSON) and
``notify_deliveries`` (one row per event and webhook that wants it, with attempts, the next
attempt's time, a claim and when it was delivered).

Delivery is at least once with dedupe: an event id is stored once (enqueueing it again is a no-op),
a delivery is marked delivered only after a 2xx, and a claim (with a lease) keeps two senders on
one database from sending the same delivery at once.  Only a sender killed between a receiver's
2xx and its own mark can send an event twice; the receiver dedupes on the event id.
"""

from __future__ import annotations

import collections
import enum
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from canary.notify.events import RolloutEvent
from canary.notify.webhooks import Webhook
from core.db import create_schema, write_transaction

log = logging.getLogger("canary.notify")
metadata = MetaData()
MAX_DEFERRED = 10_000

events = Table(
    "notify_events",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("rollout_id", String(64), nullable=False, index=True),
    Column("payload", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

deliveries = Table(
    "notify_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(64), ForeignKey("notify_events.id"), nullable=False),
    Column("webhook", String(32), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("claim", String(32)),
    Column("claimed_until", Float),
    Column("delivered_at", Float),
    Column("last_error", Text),
    UniqueConstraint("event_id", "webhook", name="uq_one_delivery_per_event_and_webhook"),
    Index("ix_notify_deliveries_queue", "webhook", "delivered_at", "id"),
)


class Enqueued(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # this event id was stored before: nothing new to send
    DEFERRED = "deferred"  # the database refused: kept in memory, stored by the sender's next pass


@dataclass(frozen=True)
class Pending:
    delivery_id: int
    claim: str
    attempts: int  # failed attempts so far
    event: RolloutEvent


@dataclass(frozen=True)
class QueueStatus:
    webhook: str
    pending: int
    oldest_at: float | None
    last_error: str | None


def _insert_new(conn: Connection) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING in the connection's dialect (SQLite and PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(events)
    return sqlite.insert(events)


class Outbox:
    def __init__(self, engine: Engine, webhooks: Sequence[Webhook], clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.webhooks = tuple(webhooks)
        self.clock = clock
        self._deferred: collections.deque[RolloutEvent] = collections.deque(maxlen=MAX_DEFERRED)
        create_schema(engine, metadata)

    # -- the controller's side ------------------------------------------------------------------

    def enqueue(self, event: RolloutEvent) -> Enqueued:
        """Store the event and one delivery per webhook that wants it; quick, and never raises for a
        database that is down (the event waits in memory for the sender's next pass)."""
        try:
            with write_transaction(self.engine) as conn:
                return self.enqueue_on(conn, event)
        except SQLAlchemyError as exc:
            log.warning("notification %s %s kept in memory: the database refused it: %s", event.kind, event.id, exc)
            self._deferred.append(event)
            return Enqueued.DEFERRED

    def enqueue_on(self, conn: Connection, event: RolloutEvent) -> Enqueued:
        """The same inside the caller's transaction (stored if and only if the caller commits)."""
        now = self.clock()
        row = {
            "id": event.id,
            "kind": event.kind.value,
            "rollout_id": event.rollout_id,
            "payload": json.dumps(event.to_dict()),
            "created_at": now,
        }
        # one statement that also settles a concurrent enqueue of the same id: the loser stores nothing
        new = _insert_new(conn).values(**row).on_conflict_do_nothing(index_elements=["id"]).returning(events.c.id)
        if conn.execute(new).first() is None:
            return Enqueued.DUPLICATE
        wanted = [
            {"event_id": event.id, "webhook": hook.key, "attempts": 0, "next_attempt_at": now}
            for hook in self.webhooks
            if hook.wants(event.kind)
        ]
        if wanted:
            conn.execute(insert(deliveries), wanted)
        return Enqueued.STORED

    def flush_deferred(self) -> int:
        """Store the events the database refused earlier; how many are still waiting."""
        while self._deferred:
            event = self._deferred[0]
            try:
                with write_transaction(self.engine) as conn:
                    self.enqueue_on(conn, event)
            except SQLAlchemyError:
                break
            self._deferred.popleft()
        return len(self._deferred)

    # -- the sender's side ----------------------------------------------------------------------

    def claim(self, webhook: str, limit: int, lease_s: float) -> list[Pending]:
        """The head of a webhook's queue, in order: due deliveries up to the first one that is not
        (so that a receiver sees a rollout's events in the order they happened)."""
        now = self.clock()
        token = uuid.uuid4().hex
        with write_transaction(self.engine) as conn:
            head = conn.execute(
                select(deliveries.c.id, deliveries.c.next_attempt_at, deliveries.c.claimed_until)
                .where(deliveries.c.webhook == webhook, deliveries.c.delivered_at.is_(None))
                .order_by(deliveries.c.id)
                .limit(limit)
            ).all()
            ids = []
            for row in head:
                if row.next_attempt_at > now or (row.claimed_until is not None and row.claimed_until > now):
                    break
                ids.append(row.id)
            if not ids:
                return []
            free = or_(deliveries.c.claimed_until.is_(None), deliveries.c.claimed_until <= now)
            conn.execute(
                update(deliveries)
                .where(deliveries.c.id.in_(ids), deliveries.c.delivered_at.is_(None), free)
                .values(claim=token, claimed_until=now + lease_s)
            )
            rows = conn.execute(
                select(deliveries.c.id, deliveries.c.attempts, events.c.payload)
                .join(events, events.c.id == deliveries.c.event_id)
                .where(deliveries.c.claim == token)
                .order_by(deliveries.c.id)
            ).all()
        return [Pending(r.id, token, r.attempts, RolloutEvent.from_dict(json.loads(r.payload))) for r in rows]

    def delivered(self, pending: Pending) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(deliveries)
                .where(deliveries.c.id == pending.delivery_id, deliveries.c.claim == pending.claim)
                .values(delivered_at=self.clock(), claim=None, claimed_until=None, last_error=None)
            )

    def failed(self, pending: Pending, error: str, next_attempt_at: float) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(deliveries)
                .where(deliveries.c.id == pending.delivery_id, deliveries.c.claim == pending.claim)
                .values(
                    attempts=deliveries.c.attempts + 1,
                    next_attempt_at=next_attempt_at,
                    last_error=error[:500],
                    claim=None,
                    claimed_until=None,
                )
            )

    def release(self, claim: str) -> None:
        """Give back what a pass claimed and did not try (its webhook failed on an earlier event)."""
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(deliveries)
                .where(deliveries.c.claim == claim, deliveries.c.delivered_at.is_(None))
                .values(claim=None, claimed_until=None)
            )

    def status(self) -> list[QueueStatus]:
        """Per webhook: deliveries waiting, the oldest one's first time, the last error."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    deliveries.c.webhook,
                    func.count(),
                    func.min(events.c.created_at),
                    func.max(deliveries.c.last_error),
                )
                .join(events, events.c.id == deliveries.c.event_id)
                .where(deliveries.c.delivered_at.is_(None))
                .group_by(deliveries.c.webhook)
            ).all()
        return [QueueStatus(r[0], int(r[1]), r[2], r[3]) for r in rows]

    def prune(self, older_than_s: float, *, batch: int = 500) -> int:
        """Forget events every webhook had longer than ``older_than_s`` ago; how many.  Deletes
        ``batch`` events per transaction, so that a first prune of a large backlog neither holds
        the write lock long nor binds more ids than the database takes in one statement."""
        cutoff = self.clock() - older_than_s
        waiting = select(deliveries.c.event_id).where(
            or_(deliveries.c.delivered_at.is_(None), deliveries.c.delivered_at > cutoff)
        )
        old = and_(events.c.created_at < cutoff, events.c.id.not_in(waiting))
        total = 0
        while True:
            with write_transaction(self.engine) as conn:
                ids = [r.id for r in conn.execute(select(events.c.id).where(old).limit(batch))]
                if ids:
                    conn.execute(deliveries.delete().where(deliveries.c.event_id.in_(ids)))
                    conn.execute(events.delete().where(events.c.id.in_(ids)))
            total += len(ids)
            if len(ids) < batch:
                return total
