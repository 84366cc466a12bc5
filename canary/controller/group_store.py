"""Groups in the controller's store (beside rollouts, on the same database and ``metadata``).

A group row keeps its spec (inline YAML), its state and a revision (stale writes are refused, as
for rollouts); ``group_members`` links each member to its rollout id, written in the same
transaction as the state, *before* the rollout is created; ``group_decisions`` is its history.  At
most one active group per name (``active_name`` under a unique constraint).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from canary.controller.group_machine import Group, GroupDecision, GroupPhase, MemberLink
from canary.controller.group_spec import GroupSpec, load_group, load_stored_group
from canary.controller.store import StaleWrite, metadata
from core.db import write_transaction
from core.errors import Conflict, NotFound

groups = Table(
    "groups",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("active_name", String(64)),
    Column("spec", Text, nullable=False),
    Column("phase", String(24), nullable=False),
    Column("settled", Boolean, nullable=False),
    Column("paused", Boolean, nullable=False),
    Column("reason", Text, nullable=False),
    Column("since", Float, nullable=False),
    Column("revision", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("active_name", name="uq_one_active_group_per_name"),
)
group_members = Table(
    "group_members",
    metadata,
    Column("group_id", String(32), ForeignKey("groups.id"), primary_key=True),
    Column("member", String(64), primary_key=True),
    Column("rollout_id", String(32), nullable=False),
    Column("cancelled", Text, nullable=False),
    Column("aborted", Text, nullable=False),
)
group_decisions = Table(
    "group_decisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("group_id", String(32), ForeignKey("groups.id"), nullable=False, index=True),
    Column("at", Float, nullable=False),
    Column("member", String(64), nullable=False),
    Column("action", String(16), nullable=False),
    Column("reason", Text, nullable=False),
)


def group_from_row(row: Any, links: dict[str, MemberLink], spec: GroupSpec | None = None) -> Group:
    """A ``groups`` row and its members' links as the machine's ``Group`` (``spec``: already parsed)."""
    return Group(
        id=row.id,
        spec=spec if spec is not None else load_stored_group(row.spec, f"group {row.id}"),
        members=links,
        phase=GroupPhase(row.phase),
        settled=row.settled,
        paused=row.paused,
        reason=row.reason,
        since=row.since,
        revision=row.revision,
    )


class GroupStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # called with the group's id once each save has committed (the dashboard's live stream:
        # a group's phase can change a tick after its members', with no rollout saved then)
        self.hooks: list[Callable[[str], None]] = []

    def create(self, spec_text: str, now: float) -> Group:
        spec = load_group(spec_text, "group")
        g = Group(id=uuid.uuid4().hex, spec=spec, since=now, reason="created")
        try:
            with write_transaction(self.engine) as conn:
                conn.execute(
                    insert(groups).values(
                        id=g.id,
                        name=spec.name,
                        active_name=spec.name,
                        spec=spec_text,
                        phase=g.phase.value,
                        settled=False,
                        paused=False,
                        reason=g.reason,
                        since=now,
                        revision=0,
                        created_at=datetime.now(UTC),
                    )
                )
        except IntegrityError:
            raise Conflict(f"group {spec.name} is already under way", code="group_active") from None
        return g

    def _group(self, conn: Any, row: Any) -> Group:
        links = {
            m.member: MemberLink(m.rollout_id, m.cancelled, m.aborted)
            for m in conn.execute(select(group_members).where(group_members.c.group_id == row.id))
        }
        return group_from_row(row, links)

    def get(self, group_id: str) -> Group:
        with self.engine.connect() as conn:
            row = conn.execute(select(groups).where(groups.c.id == group_id)).first()
            if row is None:
                raise NotFound(f"no group {group_id}")
            return self._group(conn, row)

    def list_groups(self, active_only: bool = False) -> list[Group]:
        query = select(groups).order_by(groups.c.created_at)
        if active_only:
            query = query.where(groups.c.active_name.is_not(None))
        with self.engine.connect() as conn:
            return [self._group(conn, row) for row in conn.execute(query).all()]

    def save(self, new: Group, expected_revision: int, made: list[GroupDecision]) -> None:
        with write_transaction(self.engine) as conn:
            done = conn.execute(
                update(groups)
                .where(groups.c.id == new.id, groups.c.revision == expected_revision)
                .values(
                    phase=new.phase.value,
                    settled=new.settled,
                    paused=new.paused,
                    reason=new.reason,
                    since=new.since,
                    revision=new.revision,
                    active_name=None if new.settled else new.spec.name,
                )
            )
            if done.rowcount != 1:
                raise StaleWrite(f"group {new.id} changed since revision {expected_revision}")
            conn.execute(delete(group_members).where(group_members.c.group_id == new.id))
            rows = [
                {
                    "group_id": new.id,
                    "member": n,
                    "rollout_id": x.rollout_id,
                    "cancelled": x.cancelled,
                    "aborted": x.aborted,
                }
                for n, x in new.members.items()
            ]
            if rows:
                conn.execute(insert(group_members), rows)
            for d in made:
                conn.execute(
                    insert(group_decisions).values(
                        group_id=new.id, at=d.at, member=d.member, action=d.action, reason=d.reason
                    )
                )
        for hook in self.hooks:
            hook(new.id)

    def decisions(self, group_id: str) -> list[GroupDecision]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(group_decisions).where(group_decisions.c.group_id == group_id).order_by(group_decisions.c.id)
            )
            return [GroupDecision(r.at, r.member, r.action, r.reason) for r in rows]
