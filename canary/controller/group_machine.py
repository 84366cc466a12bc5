"""The group state machine: pure, over the group's stored state and its members' rollout phases.

``advance_group(group, seen, command, now)`` returns the next group, the decisions taken and what
the controller must do (:class:`GroupActions`): the member rollouts to create (their ids are derived
from the group's id and the member's name, so creating one twice is impossible: a restarted
controller finds it), those to abort (the group's policy), and those whose promotion is held
(``promote: together``).  The engine stores the new group first, then acts; the actions are derived
from the stored state each tick (level-triggered), so a controller killed anywhere acts the same way
again and never twice.  Member rollouts themselves run in ``machine``, one per service as always.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from canary.controller.group_spec import GroupSpec, Policy, Promote
from canary.controller.machine import (
    ACTIVE,
    FAILED,
    PAUSED,
    PROGRESSING,
    PROMOTING,
    ROLLED_BACK,
    ROLLING_BACK,
    SUCCEEDED,
    TERMINAL,
    WATCHING,
    Phase,
)


class GroupPhase(StrEnum):
    PROGRESSING = "progressing"
    PARTLY_ROLLED_BACK = "partly_rolled_back"  # some members rolled back (or never started), others not
    ROLLING_BACK = "rolling_back"  # every member rolls back, some are not done yet
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"


PROMOTED_PHASES = frozenset({PROMOTING, WATCHING, SUCCEEDED})
BACK = frozenset({ROLLING_BACK, ROLLED_BACK, FAILED})


@dataclass(frozen=True)
class MemberLink:
    rollout_id: str = ""  # set (and stored) before its rollout is created
    cancelled: str = ""  # why it will never start
    aborted: str = ""  # why the group aborted its rollout


@dataclass(frozen=True)
class MemberSeen:
    """A member's rollout as stored now."""

    phase: Phase
    step: int = 0
    promotion_held: bool = False


@dataclass(frozen=True)
class Group:
    id: str
    spec: GroupSpec
    members: dict[str, MemberLink] = field(default_factory=dict)
    phase: GroupPhase = GroupPhase.PROGRESSING
    settled: bool = False  # every member promoted, rolled back or cancelled
    paused: bool = False  # no member starts while paused
    reason: str = ""
    since: float = 0.0
    revision: int = 0

    def link(self, name: str) -> MemberLink:
        return self.members.get(name, MemberLink())


@dataclass(frozen=True)
class GroupDecision:
    at: float
    member: str  # "" for the group itself
    action: str  # start, abort, cancel, pause, resume, phase
    reason: str


@dataclass(frozen=True)
class GroupActions:
    start: list[tuple[str, str]] = field(default_factory=list)  # (member, rollout id) linked but not created
    abort: list[str] = field(default_factory=list)  # rollout ids the group aborts that are still active
    hold: set[str] = field(default_factory=set)  # rollout ids whose promotion waits for the group


def member_rollout_id(group_id: str, member: str) -> str:
    return uuid.uuid5(uuid.UUID(group_id), member).hex


def dependents(spec: GroupSpec, name: str) -> list[str]:
    """Every member that waits, directly or not, for ``name``."""
    out: list[str] = []
    frontier = [name]
    while frontier:
        current = frontier.pop()
        for m in spec.members:
            if m.name not in out and any(a.member == current for a in m.after):
                out.append(m.name)
                frontier.append(m.name)
    return out


def _met(step: int | None, seen: MemberSeen | None) -> bool:
    if seen is None:
        return False
    if seen.phase in PROMOTED_PHASES:
        return True
    if step is None:
        return False
    return seen.phase in (PROGRESSING, PAUSED) and (seen.step >= step or seen.promotion_held)


def advance_group(
    g: Group, seen: dict[str, MemberSeen], command: str, now: float, refused: dict[str, str] | None = None
) -> tuple[Group, list[GroupDecision], GroupActions]:
    """``seen``: member name -> its rollout, for members whose rollout exists; ``refused``: members
    whose rollout the store refused for good (its spec is not valid now: its release became the
    service's stable since the group was made), with why: each is cancelled, and counts as rolled
    back for the group's policy."""
    links = dict(g.members)
    made: list[GroupDecision] = []
    changes: dict[str, Any] = {}

    def set_link(name: str, action: str, reason: str, **change: str) -> None:
        links[name] = dataclasses.replace(links.get(name, MemberLink()), **change)
        made.append(GroupDecision(now, name, action, reason))

    def stop(name: str, reason: str) -> None:
        link, s = links.get(name, MemberLink()), seen.get(name)
        if s is not None:
            if s.phase in ACTIVE and not link.aborted:
                set_link(name, "abort", reason, aborted=reason)
        elif not link.cancelled:  # not started yet, linked or not (its creation refused: service busy)
            set_link(name, "cancel", reason, cancelled=reason)

    failed = {n for n, s in seen.items() if s.phase in BACK}
    for name, why in (refused or {}).items():
        if name not in seen and not links.get(name, MemberLink()).cancelled:
            set_link(name, "cancel", f"its rollout was refused: {why}", cancelled=f"its rollout was refused: {why}")
            failed.add(name)
    if command == "abort":
        for m in g.spec.members:
            stop(m.name, "the group was aborted by a person")
    elif command in ("pause", "resume") and g.paused != (command == "pause"):
        changes["paused"] = command == "pause"
        made.append(GroupDecision(now, "", command, f"{command}d by a person"))
    for m in g.spec.members:  # a member's rollback (or refusal), and what the policy does with it
        if m.name not in failed:
            continue
        victims = {
            Policy.ALL: [x.name for x in g.spec.members if x.name != m.name],
            Policy.DEPENDENTS: dependents(g.spec, m.name),
            Policy.INDEPENDENT: [],
        }[g.spec.policy]
        for v in victims:
            stop(v, f"{m.name} rolled back (policy: {g.spec.policy.value})")
    paused = changes.get("paused", g.paused)
    for m in g.spec.members:  # who starts now
        link = links.get(m.name, MemberLink())
        if link.rollout_id or link.cancelled:
            continue
        lost = [a.member for a in m.after if a.member in seen and seen[a.member].phase in BACK]
        lost += [a.member for a in m.after if links.get(a.member, MemberLink()).cancelled]
        if lost:
            why = f"it waits for {lost[0]}, which rolled back or will never start"
            set_link(m.name, "cancel", why, cancelled=why)
            continue
        if not paused and all(_met(a.step, seen.get(a.member)) for a in m.after):
            why = (
                "no dependency"
                if not m.after
                else "its dependencies are met: "
                + ", ".join(f"{a.member} {'promoted' if a.step is None else f'passed step {a.step}'}" for a in m.after)
            )
            set_link(m.name, "start", why, rollout_id=member_rollout_id(g.id, m.name))
    new = dataclasses.replace(g, members=links, revision=g.revision, **changes)
    phase, settled, why = _phase(new, seen)
    if phase != g.phase or settled != g.settled:
        made.append(GroupDecision(now, "", "phase", why))
        new = dataclasses.replace(new, phase=phase, settled=settled, reason=why, since=now)
    if made:
        new = dataclasses.replace(new, revision=g.revision + 1)
    return new, made, _actions(new, seen)


def _phase(g: Group, seen: dict[str, MemberSeen]) -> tuple[GroupPhase, bool, str]:
    names = [m.name for m in g.spec.members]
    back = [n for n in names if g.link(n).cancelled or (n in seen and seen[n].phase in BACK)]
    done = [n for n in names if g.link(n).cancelled or (n in seen and seen[n].phase in TERMINAL)]
    promoted = [n for n in names if n in seen and seen[n].phase == SUCCEEDED]
    settled = len(done) == len(names)
    if len(promoted) == len(names):
        return GroupPhase.PROMOTED, True, "every member promoted"
    if len(back) == len(names):
        if settled:
            return GroupPhase.ROLLED_BACK, True, "every member rolled back or cancelled: " + ", ".join(back)
        return GroupPhase.ROLLING_BACK, False, "every member rolls back or was cancelled: " + ", ".join(back)
    if back:
        words = f"rolled back or cancelled: {', '.join(back)}" + (
            f"; promoted: {', '.join(promoted)}" if promoted else ""
        )
        return GroupPhase.PARTLY_ROLLED_BACK, settled, words
    return GroupPhase.PROGRESSING, False, "progressing"


def _actions(g: Group, seen: dict[str, MemberSeen]) -> GroupActions:
    start = [  # linked, not created yet, and not cancelled since (an abort before its service was free)
        (m.name, link.rollout_id)
        for m in g.spec.members
        if (link := g.link(m.name)).rollout_id and not link.cancelled and m.name not in seen
    ]
    abort = [g.link(n).rollout_id for n, s in seen.items() if g.link(n).aborted and s.phase in ACTIVE]
    hold: set[str] = set()
    if g.spec.promote == Promote.TOGETHER:
        going = [
            m.name
            for m in g.spec.members
            if not g.link(m.name).cancelled and not (m.name in seen and seen[m.name].phase in BACK)
        ]
        ready = all(n in seen and seen[n].promotion_held for n in going)
        if not ready:
            hold = {g.link(n).rollout_id for n in going if g.link(n).rollout_id}
    return GroupActions(start, abort, hold)
