"""The controller's HTTP API for groups (bearer token, as every endpoint; mounted by ``api.routes``).

- ``POST /api/groups`` (body: a group in YAML, at most 512 KiB, members' rollouts inline: ``canary
  release --group`` sends it so) -> 201; 422 with every problem (field, line; aliases and nesting
  bounded as in a rollout spec), an unknown service or release, a member whose release is its
  service's stable already (``bad_member``); 409 if a group of that name is under way, or a member
  that starts at once finds its service busy (``rollout_active``)
- ``GET /api/groups``, ``GET /api/groups/{id}`` (its members with their rollouts, and its decisions)
- ``POST /api/groups/{id}/pause|resume|abort`` -> 202: for every member (applied at the next tick);
  an aborted group's members not started yet never start
"""

from __future__ import annotations

import contextlib
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from canary.controller import api, machine
from canary.controller.engine import Controller
from canary.controller.group_engine import GROUP_COMMANDS, GroupRunner
from canary.controller.group_machine import Group, GroupDecision
from canary.controller.group_spec import check
from core.app import read_body
from core.errors import BadRequest, NotFound, Unprocessable


def routes() -> list[Route]:
    return [
        Route("/api/groups", create_group, methods=["POST"]),
        Route("/api/groups", list_groups, methods=["GET"]),
        Route("/api/groups/{group_id}", show_group, methods=["GET"]),
        Route("/api/groups/{group_id}/{command}", command, methods=["POST"]),
    ]


def _runner(request: Request) -> GroupRunner:
    api._auth(request)
    runner: GroupRunner = request.app.state.controller.groups
    return runner


def group_view(
    g: Group, rollouts: dict[str, machine.Rollout], made: list[GroupDecision] | None, controller: Controller
) -> dict[str, Any]:
    """A group as the page draws it (the keys of ``GET /api/groups/{id}``): each member's state is its
    rollout's phase, or ``waiting`` (for its ``after:``), ``starting`` or ``cancelled``; a pending
    member's rollout says why its canary is not ready yet, as the rollout's own summary does."""
    now = controller.clock()
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
                "rollout": api.summary(r, controller.not_ready(r), now) if r else None,
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


async def group_summary(runner: GroupRunner, g: Group) -> dict[str, Any]:
    rollouts: dict[str, machine.Rollout] = {}
    for m in g.spec.members:
        rid = g.link(m.name).rollout_id
        if rid:
            with contextlib.suppress(NotFound):  # not stored yet: the member shows as starting
                rollouts[rid] = await runner.controller.rollout(rid)
    return group_view(g, rollouts, None, runner.controller)


async def create_group(request: Request) -> Response:
    runner = _runner(request)
    text = (await read_body(request, 512 * 1024)).decode("utf-8", errors="replace")
    _, problems = await run_in_threadpool(check, text, "group")  # a big group must not hold the loop's ticks
    if problems:
        raise Unprocessable("the group is not valid", code="bad_group", detail=[p.render("group") for p in problems])
    g = await runner.create(text)
    return JSONResponse(await group_summary(runner, g), status_code=201)


async def list_groups(request: Request) -> Response:
    runner = _runner(request)
    return JSONResponse({"groups": [await group_summary(runner, g) for g in await runner.groups()]})


async def show_group(request: Request) -> Response:
    runner = _runner(request)
    g = await runner.group(request.path_params["group_id"])
    made = await runner.decisions(g.id)
    return JSONResponse({**await group_summary(runner, g), "decisions": [vars(d) for d in made]})


async def command(request: Request) -> Response:
    runner = _runner(request)
    name = request.path_params["command"]
    if name not in GROUP_COMMANDS:
        raise NotFound(f"no group command {name!r}: {', '.join(GROUP_COMMANDS)}")
    g = await runner.group(request.path_params["group_id"])
    if g.settled:
        raise BadRequest(f"group {g.spec.name} has settled ({g.phase})", code="group_ended")
    runner.command(g.id, name)
    return JSONResponse({"id": g.id, "command": name, "status": "accepted"}, status_code=202)
