"""The controller's store (SQLAlchemy: SQLite by default, PostgreSQL when configured).

Every transition and its decisions are written in one transaction before the controller acts on
them, guarded by the rollout's revision (a stale controller's write is refused).  At most one
rollout per service is active: ``active_service`` holds the service name while the rollout is
active and NULL afterwards, under a unique constraint.  Each decision keeps its evidence (the
judge's numbers), and the judge's state is kept per rollout (``judge_states``), so ``canary why``
shows the numbers and the e-process continues after a restart.  A lease row makes sure that of several
controllers on one database only one acts at a time.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from canary.controller import machine
from canary.controller.spec import load_spec, load_stored_spec
from canary.controller.spec_schema import SERVICE_NAME_MAX
from core.db import write_transaction
from core.errors import Conflict, NotFound

metadata = MetaData()

rollouts = Table(
    "rollouts",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("service", String(SERVICE_NAME_MAX), nullable=False),
    Column("active_service", String(SERVICE_NAME_MAX)),
    Column("spec", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("revision", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("active_service", name="uq_one_active_rollout_per_service"),
)

decisions = Table(
    "decisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rollout_id", String(32), ForeignKey("rollouts.id"), nullable=False, index=True),
    Column("at", Float, nullable=False),
    Column("phase_from", String(20), nullable=False),
    Column("phase_to", String(20), nullable=False),
    Column("decided_by", String(20), nullable=False),
    Column("reason", Text, nullable=False),
    Column("evidence", Text, nullable=False),
)

# the judge's state per rollout, written after every bin (canary.controller.judging's stored form):
# a restarted controller continues the same e-process instead of starting afresh
judge_states = Table(
    "judge_states",
    metadata,
    Column("rollout_id", String(32), ForeignKey("rollouts.id"), primary_key=True),
    Column("state", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("expires_at", Float, nullable=False),
)

STATE_FIELDS = (
    "phase",
    "step",
    "phase_since",
    "step_since",
    "resume_to",
    "reason",
    "decided_by",
    "held_since",
    "promotion_held",
    "after_rollback_owed",
)


def _key(result: Any) -> int:
    """The id an insert gave its row."""
    key = result.inserted_primary_key
    assert key is not None  # an insert into a table with a primary key always has one
    return int(key[0])


@dataclass(frozen=True)
class Saved:
    """A transition as ``Store.save`` writes it: the new state, the step before it, and each
    decision with its number (its row id: unique, and the same however often it is read back)."""

    rollout: machine.Rollout
    step_before: int
    decisions: tuple[tuple[int, machine.Decision], ...]


class SaveHook(Protocol):
    """What else a save does: ``on_save`` inside the save's transaction (written if and only if the
    transition is: the notification outbox), ``committed`` after it (``what``: "created",
    "decision" or "judged"; from whatever thread saved: the dashboard's live stream)."""

    def on_save(self, conn: Connection, saved: Saved) -> None: ...

    def committed(self, rollout_id: str, what: str) -> None: ...


def _json_default(value: Any) -> Any:
    return str(value)


class StaleWrite(Conflict):
    code = "stale_write"


def _state(r: machine.Rollout) -> str:
    return json.dumps({f: getattr(r, f) for f in STATE_FIELDS})


def _rollout(row: Any) -> machine.Rollout:
    state = json.loads(row.state)
    state["phase"] = machine.Phase(state["phase"])
    spec = load_stored_spec(row.spec, f"rollout {row.id}")
    return machine.Rollout(id=row.id, spec=spec, revision=row.revision, **state)


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.hooks: list[SaveHook] = []

    def create(self, spec_text: str, now: float, rollout_id: str = "") -> machine.Rollout:
        """``rollout_id``: a group's member rollout has its id decided (and stored) beforehand."""
        spec = load_spec(spec_text)  # a bad spec never gets this far
        r = machine.Rollout(id=rollout_id or uuid.uuid4().hex, spec=spec, phase_since=now)
        stamp = datetime.now(UTC)
        try:
            with write_transaction(self.engine) as conn:
                conn.execute(
                    insert(rollouts).values(
                        id=r.id,
                        service=spec.service,
                        active_service=spec.service,
                        spec=spec_text,
                        state=_state(r),
                        revision=r.revision,
                        created_at=stamp,
                        updated_at=stamp,
                    )
                )
        except IntegrityError:
            raise Conflict(
                f"{spec.service} already has an active rollout: abort or finish it first", code="rollout_active"
            ) from None
        for hook in self.hooks:
            hook.committed(r.id, "created")
        return r

    def get(self, rollout_id: str) -> machine.Rollout:
        with self.engine.connect() as conn:
            row = conn.execute(select(rollouts).where(rollouts.c.id == rollout_id)).first()
        if row is None:
            raise NotFound(f"no rollout {rollout_id}")
        return _rollout(row)

    def list_rollouts(self, active_only: bool = False) -> list[machine.Rollout]:
        query = select(rollouts).order_by(rollouts.c.created_at)
        if active_only:
            query = query.where(rollouts.c.active_service.is_not(None))
        with self.engine.connect() as conn:
            return [_rollout(row) for row in conn.execute(query)]

    def after_rollback_owing(self) -> list[machine.Rollout]:
        """The rolled-back rollouts whose after_rollback hooks are still owed; only those have their
        spec parsed (the history is read whole, at a controller's start and while any is owed)."""
        query = select(rollouts).where(rollouts.c.active_service.is_(None)).order_by(rollouts.c.created_at)
        with self.engine.connect() as conn:
            rows = [row for row in conn.execute(query) if json.loads(row.state).get("after_rollback_owed")]
        return [r for r in map(_rollout, rows) if r.phase == machine.ROLLED_BACK]

    def after_rollback_paid(self, rollout_id: str) -> None:
        """The rolled-back rollout's after_rollback hooks passed: nothing is owed any more."""
        with write_transaction(self.engine) as conn:
            row = conn.execute(select(rollouts.c.state, rollouts.c.revision).where(rollouts.c.id == rollout_id)).one()
            state = {**json.loads(row.state), "after_rollback_owed": False}
            conn.execute(
                update(rollouts)
                .where(rollouts.c.id == rollout_id)
                .values(state=json.dumps(state), revision=row.revision + 1, updated_at=datetime.now(UTC))
            )

    def save(self, new: machine.Rollout, expected_revision: int, made: list[machine.Decision]) -> None:
        """Write a transition and its decisions, only if nobody else moved the rollout meanwhile."""
        active = None if new.phase in machine.TERMINAL else new.spec.service
        with write_transaction(self.engine) as conn:
            before = conn.execute(select(rollouts.c.state).where(rollouts.c.id == new.id)).scalar()
            result = conn.execute(
                update(rollouts)
                .where(rollouts.c.id == new.id, rollouts.c.revision == expected_revision)
                .values(state=_state(new), revision=new.revision, active_service=active, updated_at=datetime.now(UTC))
            )
            if result.rowcount != 1:
                raise StaleWrite(f"rollout {new.id} changed since revision {expected_revision}")
            numbered = []
            for d in made:
                row = conn.execute(
                    insert(decisions).values(
                        rollout_id=new.id,
                        at=d.at,
                        phase_from=d.phase_from,
                        phase_to=d.phase_to,
                        decided_by=d.decided_by,
                        reason=d.reason,
                        evidence=json.dumps(d.evidence, default=_json_default),
                    )
                )
                numbered.append((_key(row), d))
            if self.hooks:
                step_before = int(json.loads(before)["step"]) if before else new.step
                saved = Saved(new, step_before, tuple(numbered))
                for hook in self.hooks:
                    hook.on_save(conn, saved)
        for hook in self.hooks:
            hook.committed(new.id, "decision")

    def decisions(self, rollout_id: str) -> list[machine.Decision]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(decisions).where(decisions.c.rollout_id == rollout_id).order_by(decisions.c.id))
            return [
                machine.Decision(r.at, r.phase_from, r.phase_to, r.decided_by, r.reason, json.loads(r.evidence))
                for r in rows
            ]

    def save_judging(self, rollout_id: str, state: dict[str, Any]) -> None:
        text = json.dumps(state, default=_json_default)
        with write_transaction(self.engine) as conn:
            done = conn.execute(
                update(judge_states)
                .where(judge_states.c.rollout_id == rollout_id)
                .values(state=text, updated_at=datetime.now(UTC))
            )
            if done.rowcount != 1:
                conn.execute(
                    insert(judge_states).values(rollout_id=rollout_id, state=text, updated_at=datetime.now(UTC))
                )
        for hook in self.hooks:
            hook.committed(rollout_id, "judged")

    def judging(self, rollout_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(judge_states.c.state).where(judge_states.c.rollout_id == rollout_id)).first()
        return None if row is None else dict(json.loads(row.state))

    def acquire_lease(self, name: str, holder: str, ttl_s: float, now: float) -> bool:
        """Take or renew the lease; True while ``holder`` has it."""
        with write_transaction(self.engine) as conn:
            row = conn.execute(select(leases).where(leases.c.name == name)).first()
            if row is None:
                conn.execute(insert(leases).values(name=name, holder=holder, expires_at=now + ttl_s))
                return True
            if row.holder == holder or row.expires_at < now:
                conn.execute(update(leases).where(leases.c.name == name).values(holder=holder, expires_at=now + ttl_s))
                return True
            return False
