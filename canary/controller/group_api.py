"""The controller's HTTP API for groups (bearer token, as every endpoint; mounted by ``api.routes``).

- ``POST /api/groups`` (body: a group in YAML, members' rollouts inline: ``canary release --group``
  sends it so) -> 201; 422 with every problem (field, line), an unknown service or release; 409 if a
  group of that name is under way
- ``GET /api/groups``, ``GET /api/groups/{id}`` (its members with their rollouts, and its decisions)
- ``POST /api/groups/{id}/pause|resume|abort`` -> 202: for every member (applied at the next tick);
  an aborted group's members not started yet never start
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from canary.controller import api
from canary.controller.group_engine import GROUP_COMMANDS, GroupRunner
from canary.controller.group_machine import Group
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


async def group_summary(runner: GroupRunner, g: Group) -> dict[str, Any]:
    members = []
    for m in g.spec.members:
        link = g.link(m.name)
        one: dict[str, Any] = {"name": m.name, "service": m.service, "release": m.release, "rollout": None}
        one["after"] = [a.member if a.step is None else f"{a.member} step {a.step}" for a in m.after]
        one["state"] = "cancelled" if link.cancelled else ("waiting" if not link.rollout_id else "starting")
        one["why"] = link.cancelled or link.aborted
        if link.rollout_id:
            try:
                r = await runner.controller.rollout(link.rollout_id)
                one["rollout"], one["state"] = api.summary(r), r.phase.value
            except NotFound:
                pass
        members.append(one)
    spec = {"policy": g.spec.policy.value, "promote": g.spec.promote.value}
    return {
        "id": g.id,
        "name": g.spec.name,
        "phase": g.phase.value,
        "settled": g.settled,
        "paused": g.paused,
        "reason": g.reason,
        "since": g.since,
        **spec,
        "members": members,
    }


async def create_group(request: Request) -> Response:
    runner = _runner(request)
    text = (await read_body(request, 512 * 1024)).decode("utf-8", errors="replace")
    _, problems = check(text, "group")
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
