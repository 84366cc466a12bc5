"""The controller's group loop: each tick, before the rollouts are stepped, every active group is
advanced (``group_machine``) from its members' stored rollouts; the new group is stored, then acted
on: member rollouts created (with the ids already stored), aborts and commands passed to the
rollouts, promotions held.  One group's trouble is logged in one line and stays its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from canary.controller import machine
from canary.controller.group_machine import Group, GroupDecision, MemberSeen, advance_group
from canary.controller.group_spec import load_group
from canary.controller.group_store import GroupStore
from canary.controller.machine import PAUSABLE
from canary.controller.spec import Problem, SpecError
from canary.controller.spec import check as check_spec
from core.errors import Conflict, NotFound, ReleaseWardenError, Unprocessable

if TYPE_CHECKING:
    from canary.controller.engine import Controller

log = logging.getLogger("releasewarden.controller")
GROUP_COMMANDS = ("pause", "resume", "abort")


class GroupRunner:
    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.store = GroupStore(controller.store.engine)
        self.commands: dict[str, str] = {}  # group id -> pause, resume, abort (taken at the next tick)
        self.refused: dict[str, dict[str, str]] = {}  # group id -> member -> why its rollout was refused

    async def create(self, text: str) -> Group:
        spec = await asyncio.to_thread(load_group, text, "group")  # a big group must not hold the loop
        c = self.controller
        busy = {r.spec.service: r for r in await c.rollouts(active_only=True)}
        for m in spec.members:
            if m.service not in c.stable:
                raise Unprocessable(
                    f"member {m.name}: no service {m.service!r} here; the services it runs: "
                    + ", ".join(sorted(c.stable)),
                    code="unknown_service",
                )
            known = await c.known_releases(m.service)
            if known is not None and m.release not in known:
                raise Unprocessable(
                    f"member {m.name}: {m.service} has no release {m.release!r}; the releases it has: "
                    + ", ".join(known),
                    code="unknown_release",
                )
            # as a rollout of its own would be refused: its spec now (a release that is its
            # service's stable already), its service busy with another rollout
            member_text = m.rollout_text(spec.name, c.stable[m.service])
            _, problems = await asyncio.to_thread(check_spec, member_text, "member")
            if problems:
                raise Unprocessable(f"member {m.name}: {_said(problems)}", code="bad_member")
            if m.service in busy and not m.after:  # it would start now; one that waits may wait for this too
                raise Conflict(
                    f"member {m.name}: {m.service} already has an active rollout ({busy[m.service].id[:8]}): "
                    "abort or finish it first",
                    code="rollout_active",
                )
        return await asyncio.to_thread(self.store.create, text, c.clock())

    def command(self, group_id: str, name: str) -> None:
        """Taken at the group's next tick; an abort waiting there is never replaced by another command."""
        if self.commands.get(group_id) != "abort":
            self.commands[group_id] = name

    async def groups(self, active_only: bool = False) -> list[Group]:
        return await asyncio.to_thread(self.store.list_groups, active_only)

    async def group(self, group_id: str) -> Group:
        return await asyncio.to_thread(self.store.get, group_id)

    async def decisions(self, group_id: str) -> list[GroupDecision]:
        return await asyncio.to_thread(self.store.decisions, group_id)

    async def tick(self, now: float) -> None:
        holds: set[str] = set()
        for g in await self.groups(active_only=True):
            try:
                holds |= await self._advance(g, now)
            except (ReleaseWardenError, OSError) as exc:
                log.error("group %s (%s): %s", g.spec.name, g.id[:8], exc)
            except Exception as exc:
                log.error("group %s (%s): %s: %s", g.spec.name, g.id[:8], type(exc).__name__, exc)
        self.controller.holds = holds

    async def _advance(self, g: Group, now: float) -> set[str]:
        c = self.controller
        rollouts: dict[str, machine.Rollout] = {}
        for name, link in g.members.items():
            if link.rollout_id:
                # linked, not created yet (a controller killed in between): created below
                with contextlib.suppress(NotFound):
                    rollouts[name] = await c.rollout(link.rollout_id)
        seen = {n: MemberSeen(r.phase, r.step, r.promotion_held) for n, r in rollouts.items()}
        command = self.commands.pop(g.id, "")
        new, made, actions = advance_group(g, seen, command, now, self.refused.pop(g.id, {}))
        if made:  # stored before anything is done about it
            try:
                await asyncio.to_thread(self.store.save, new, g.revision, made)
            except Exception:  # nothing was decided: the command waits for the next tick
                if command:
                    self.command(g.id, command)
                raise
            for d in made:
                log.warning("group %s %s %s: %s", g.spec.name, d.member or "(group)", d.action, d.reason)
        for member_name, rollout_id in actions.start:
            member = new.spec.member(member_name)
            text = member.rollout_text(new.spec.name, c.stable[member.service])
            try:
                await asyncio.to_thread(c.store.create, text, c.clock(), rollout_id)
            except Conflict as exc:  # its service is busy with another rollout: tried again next tick
                log.error("group %s: member %s cannot start yet: %s", new.spec.name, member_name, exc)
            except SpecError as exc:  # never valid as it is: cancelled at the next tick, the others go on
                why = _said(exc.problems)
                log.error("group %s: member %s cannot start: %s", new.spec.name, member_name, why)
                self.refused.setdefault(new.id, {})[member_name] = why
        for rollout_id in actions.abort:
            c.command(rollout_id, "abort")
        if command in ("pause", "resume"):  # to the members that can take it (a pause: those stepping)
            takes = PAUSABLE if command == "pause" else (machine.PAUSED,)
            for r in rollouts.values():
                if r.phase in takes:
                    c.command(r.id, command)
        return actions.hold


def _said(problems: list[Problem]) -> str:
    """A member's spec problems on one line, field by field (its document is the group's, not a file)."""
    return "; ".join(f"{p.path}: {p.message}" for p in problems)
