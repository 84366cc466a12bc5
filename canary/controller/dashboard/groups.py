"""Groups on the dashboard: each active group with its members' rollouts and the group's state, the
groups settled lately, and a group store that tells the live stream when a group changed.

Sits beside ``views``, over the group tables of ``canary.controller.group_store``: the page reads the
state on every change, so the groups come in three queries (groups, their members, the active
groups' decisions) however many there are, and each group's spec, which never changes, is parsed
once.  A member's rollout is taken from the rollouts the state has read already.  ``GroupStore.save``
has no hooks of its own: :func:`watch_groups` hands the controller's group runner a store that also
says when a save committed (a group's phase changes a tick after its members' do, with no rollout
saved then).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, select

from canary.controller import api, machine
from canary.controller.group_machine import Group, GroupDecision, GroupPhase, MemberLink
from canary.controller.group_spec import GroupSpec, load_group
from canary.controller.group_store import GroupStore, group_decisions, group_members, groups

if TYPE_CHECKING:
    from canary.controller.engine import Controller

HISTORY = 50


class WatchedGroupStore(GroupStore):
    """The group store, and ``saved(group_id)`` once each save has committed."""

    def __init__(self, engine: Engine, saved: Callable[[str], None]) -> None:
        super().__init__(engine)
        self.saved = saved

    def save(self, new: Group, expected_revision: int, made: list[GroupDecision]) -> None:
        super().save(new, expected_revision, made)
        self.saved(new.id)


def watch_groups(controller: Controller, saved: Callable[[str], None]) -> None:
    """``saved(group_id)`` after each of ``controller``'s group saves (its runner's store, wrapped)."""
    runner = controller.groups
    runner.store = WatchedGroupStore(runner.store.engine, saved)


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
            spec = self._specs[row.id] = load_group(row.spec, f"group {row.id}")
        return Group(
            id=row.id,
            spec=spec,
            members=links,
            phase=GroupPhase(row.phase),
            settled=row.settled,
            paused=row.paused,
            reason=row.reason,
            since=row.since,
            revision=row.revision,
        )


def group_view(g: Group, rollouts: dict[str, machine.Rollout], made: list[GroupDecision] | None) -> dict[str, Any]:
    """A group as the page draws it (the keys of ``GET /api/groups/{id}``): each member's state is its
    rollout's phase, or ``waiting`` (for its ``after:``), ``starting`` or ``cancelled``."""
    members = []
    for m in g.spec.members:
        link = g.link(m.name)
        r = rollouts.get(link.rollout_id) if link.rollout_id else None
        state = r.phase.value if r else "cancelled" if link.cancelled else "starting" if link.rollout_id else "waiting"
        members.append(
            {
                "name": m.name,
                "service": m.service,
                "release": m.release,
                "after": [a.member if a.step is None else f"{a.member} step {a.step}" for a in m.after],
                "state": state,
                "why": link.cancelled or link.aborted,
                "rollout": api.summary(r) if r else None,
            }
        )
    view: dict[str, Any] = {
        "id": g.id,
        "name": g.spec.name,
        "phase": g.phase.value,
        "settled": g.settled,
        "paused": g.paused,
        "reason": g.reason,
        "since": g.since,
        "policy": g.spec.policy.value,
        "promote": g.spec.promote.value,
        "members": members,
    }
    if made is not None:
        view["decisions"] = [vars(d) for d in made]
    return view
