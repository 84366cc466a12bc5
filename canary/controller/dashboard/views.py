"""The dashboard's HTTP side: the page, what it reads, and its event stream.

- ``GET /dashboard``: the page (one self-contained HTML file, no network beyond this controller)
- ``GET /api/dashboard/state``: active rollouts (phase, step, weight asked and as the table's
  readers confirm it, counts per track, the judge's latest words, decisions with evidence, the
  chart series; pending, why the canary is not ready yet: ``not_ready``), the recent history, the
  active groups (state, members with their rollouts' phases, decisions) and those settled lately,
  the route table and its readers
- ``GET /api/dashboard/rollouts/{id}``: one rollout in the same shape (a history row opened)
- ``GET /api/dashboard/groups/{id}``: one group in the same shape, with its decisions
- ``GET /api/events``: server-sent events, one per stored decision, new chart point or group save,
  and per change of a pending rollout's not-ready words (``waiting``)

Reading needs ``settings.read_token`` or the admin token (a bearer header, or ``?token=`` for the
event stream only: a browser's EventSource sends no headers); with no read token set, reading is
open to clients on loopback that ask for a loopback name, not for a name pointed at it (DNS
rebinding): ``canary.controller.read_access``.  Commands go to the API's ``POST /api/rollouts/{id}/{command}`` (and
``POST /api/groups/{id}/{command}``) with the admin token, which the page asks for.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from canary.controller import machine
from canary.controller.api import finite, summary
from canary.controller.dashboard.groups import GroupsNow
from canary.controller.dashboard.live import Live
from canary.controller.group_api import group_view
from canary.controller.read_access import require_read
from core.errors import NotFound
from core.serve import shutdown_signal

HISTORY = 200
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def routes() -> list[Route]:
    return [
        Route("/dashboard", page, methods=["GET"]),
        Route("/api/dashboard/state", state, methods=["GET"]),
        Route("/api/dashboard/rollouts/{rollout_id}", one_rollout, methods=["GET"]),
        Route("/api/dashboard/groups/{group_id}", one_group, methods=["GET"]),
        Route("/api/events", events, methods=["GET"]),
    ]


@functools.cache
def page_bytes() -> bytes:
    return resources.files("canary.controller.dashboard").joinpath("page.html").read_bytes()


async def page(request: Request) -> Response:
    # the page itself holds no data: it asks for the token when reading needs one
    return Response(
        page_bytes(),
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


async def detail(request: Request, r: machine.Rollout) -> dict[str, Any]:
    controller = request.app.state.controller
    live: Live = request.app.state.dashboard
    made = await controller.decisions(r.id)
    judged = await controller.latest_judgements(r.id)
    route = controller.table.services.get(r.spec.service)
    confirmation = controller.confirmation(r.spec.service)
    words = {**judged.last, **{f"watch:{k}": v for k, v in judged.last_watch.items()}}
    if judged.last_mirror is not None:
        words["mirror"] = judged.last_mirror
    return {
        **summary(r, controller.not_ready(r), controller.clock()),
        "weight_published": None if route is None else route.weight,
        "weight_confirmed": confirmation.confirmed,
        "waiting_for": confirmation.waiting_for,
        "judge": {
            m: {"verdict": j.verdict.value, "reason": j.reason, "evidence": j.evidence} for m, j in words.items()
        },
        "decisions": [vars(d) for d in made],
        "series": [p.to_dict() for p in live.series.get(r.id)],
    }


async def state(request: Request) -> Response:
    require_read(request)
    controller = request.app.state.controller
    live: Live = request.app.state.dashboard
    everything = await controller.rollouts()
    active = [r for r in everything if r.phase not in machine.TERMINAL]
    by_id = {r.id: r for r in everything}
    now = await asyncio.to_thread(live.groups.read) if live.groups else GroupsNow([], [])
    body = {
        "now": controller.clock(),
        "active": [await detail(request, r) for r in active],
        "history": [summary(r) for r in reversed(everything[-HISTORY:])],
        "groups": [group_view(g, by_id, made, controller) for g, made in now.active],
        "group_history": [group_view(g, by_id, None, controller) for g in now.settled],
        "table": controller.table.to_dict(),
        "readers": controller.reader_status(),
    }
    return JSONResponse(finite(body))


async def one_rollout(request: Request) -> Response:
    require_read(request)
    r = await request.app.state.controller.rollout(request.path_params["rollout_id"])
    return JSONResponse(finite(await detail(request, r)))


async def one_group(request: Request) -> Response:
    require_read(request)
    runner = request.app.state.controller.groups
    g = await runner.group(request.path_params["group_id"])
    made = await runner.decisions(g.id)
    rollouts = {}
    for link in g.members.values():
        if link.rollout_id:
            with contextlib.suppress(NotFound):  # linked, not created yet
                rollouts[link.rollout_id] = await request.app.state.controller.rollout(link.rollout_id)
    return JSONResponse(finite(group_view(g, rollouts, made, request.app.state.controller)))


async def events(request: Request) -> Response:
    require_read(request, in_query=True)
    live: Live = request.app.state.dashboard
    live.stop_with(shutdown_signal(request.app))  # a stopping controller ends the stream at once
    return StreamingResponse(
        await live.stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
