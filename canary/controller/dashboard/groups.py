"""Groups on the dashboard: each active group with its members' rollouts and the group's state, the
groups settled lately, and a group store that tells the live stream when a group changed.

Sits beside ``views``, over the group tables of ``canary.controller.group_store``: the page reads the
state on every change, so the groups come in three queries (groups, their members, the active
groups' decisions) however many there are, and each group's spec, which never changes, is parsed
once.  A member's rollout is taken from the rollouts the state has read already.  :func:`watch_groups`
hooks the group store's saves (a group's phase changes a tick after its members' do, with no rollout
saved then).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, select

from canary.controller.group_machine import Group, GroupDecision, MemberLink
from canary.controller.group_spec import GroupSpec, load_stored_group
from canary.controller.group_store import group_decisions, group_from_row, group_members, groups

if TYPE_CHECKING:
    from canary.controller.engine import Controller

HISTORY = 50


def watch_groups(controller: Controller, saved: Callable[[str], None]) -> None:
    """``saved(group_id)`` after each of ``controller``'s group saves has committed."""
    controller.groups.store.hooks.append(saved)


@dataclass(frozen=True)
class GroupsNow:
    active: list[tuple[Group, list[GroupDecision]]]  # oldest first, each with its decisions
    settled: list[Group]  # newest first, at most HISTORY


class GroupReader:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._specs: dict[str, GroupSpec] = {}

    def read(self) -> GroupsNow:
        with self.engine.connect() as conn:
            active = conn.execute(select(groups).where(groups.c.settled.is_(False)).order_by(groups.c.created_at))
            active_rows = active.all()
            recent = select(groups).where(groups.c.settled.is_(True)).order_by(groups.c.created_at.desc())
            settled_rows = conn.execute(recent.limit(HISTORY)).all()
            ids = [r.id for r in [*active_rows, *settled_rows]]
            links: dict[str, dict[str, MemberLink]] = defaultdict(dict)
            made: dict[str, list[GroupDecision]] = defaultdict(list)
            if ids:
                for m in conn.execute(select(group_members).where(group_members.c.group_id.in_(ids))):
                    links[m.group_id][m.member] = MemberLink(m.rollout_id, m.cancelled, m.aborted)
            if active_rows:
                of_active = group_decisions.c.group_id.in_([r.id for r in active_rows])
                for d in conn.execute(select(group_decisions).where(of_active).order_by(group_decisions.c.id)):
                    made[d.group_id].append(GroupDecision(d.at, d.member, d.action, d.reason))
        now = GroupsNow(
            [(self._group(r, links[r.id]), made[r.id]) for r in active_rows],
            [self._group(r, links[r.id]) for r in settled_rows],
        )
        self._specs = {i: self._specs[i] for i in ids}  # only those still shown: bounded room
        return now

    def _group(self, row: Any, links: dict[str, MemberLink]) -> Group:
        spec = self._specs.get(row.id)
        if spec is None:
            spec = self._specs[row.id] = load_stored_group(row.spec, f"group {row.id}")
        return group_from_row(row, links, spec)
