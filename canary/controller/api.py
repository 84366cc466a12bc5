"""The controller's HTTP API (every ``/api`` endpoint here needs the admin token, ``GET /api/routes``
also takes each service's table token, ``POST /api/alerts`` the alert token, ``GET /api/targets``
and the dashboard's reads the read token: ``canary.controller.read_access``; open are only the app
factory's ``/healthz``, ``/readyz`` and ``/metrics``, for Prometheus's scrape: rollout ids, services,
releases and phases, no consumer's data, and the dashboard's page, which holds none).

- ``POST /api/rollouts`` (body: a rollout spec in YAML, at most 256 KiB) -> 201; 422 with every
  problem (field, line), also when the catalog lists the service's releases and the canary is not
  one of them (naming them, ``unknown_release``), and for a document of more than 100,000 values
  once its YAML aliases are expanded or nested deeper than 32 levels (refused before anything walks
  it: ``spec.parse``); 409 if the service already has an active rollout
- ``GET /api/rollouts``, ``GET /api/rollouts/{id}`` (with its decisions and their evidence, the
  judge's latest words and numbers, kept across restarts, and the table's readers); a pending
  rollout whose canary is not ready yet has ``not_ready``: the platform's latest words on why
  (``reason``, one line), the seconds it has waited (``waited_s``) and the seconds after which it
  fails if still not ready (``deadline_s``, set by ``deadline_by``: ``platform`` when the start
  gives up first, a local release's ``ready_timeout_s``, else ``controller``); null otherwise
- ``POST /api/rollouts/{id}/pause|resume|promote|abort`` -> 202 (applied at the next tick); 409
  ``not_now`` where the phase cannot take it (a pause only while mirroring or stepping, a resume
  only while paused), 400 ``rollout_ended`` once it has ended
- ``POST /api/rollouts/{id}/reprocess``: after a rollback, the entry's after_rollback hooks again
  (the controller runs them by itself; this is the by-hand retry)
- ``GET /api/routes``: the route table routers and queue consumers poll, with headers
  ``X-Table-Reader: router/<id>`` (or ``consumer/<id>``) and ``X-Table-Version: <version served>``:
  the controller acts on a new weight only once every reader confirms it (``canary.controller.routing``).
  Any service's table token (derived from the controller's: ``core.scoped_tokens``) reads it; a
  queue consumer the catalog names speaks with its own service's only (it confirms that service's
  route); a router (it confirms every service's) polls with the admin token
- ``GET /api/readers``: every reader of the table, the version it serves, seconds since its last poll
- ``/api/groups...``: release groups (``group_api``)
- ``POST /api/alerts``: the Alertmanager webhook, ``GET /api/targets``: Prometheus's service
  discovery, read as the dashboard is (``read_access``: the read token) (both in ``alerts``)
"""

from __future__ import annotations

import math
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from canary.controller import alerts, machine
from canary.controller.engine import Controller
from canary.controller.observing import Waiting
from canary.controller.routing import parse_reader
from canary.controller.spec import SpecError, check
from core.app import read_body, require_token
from core.errors import BadRequest, Conflict, DependencyUnavailable, NotFound, ServiceUnavailable, Unprocessable
from core.scoped_tokens import scoped_token

COMMANDS = ("pause", "resume", "promote", "abort")


def routes() -> list[Route]:
    from canary.controller import group_api  # it builds on this module

    return [
        *group_api.routes(),
        Route("/api/rollouts", create_rollout, methods=["POST"]),
        Route("/api/rollouts", list_rollouts, methods=["GET"]),
        Route("/api/rollouts/{rollout_id}", show_rollout, methods=["GET"]),
        Route("/api/rollouts/{rollout_id}/reprocess", reprocess, methods=["POST"]),
        Route("/api/rollouts/{rollout_id}/{command}", command, methods=["POST"]),
        Route("/api/routes", route_table, methods=["GET"]),
        Route("/api/readers", readers, methods=["GET"]),
        Route("/api/alerts", alerts.webhook, methods=["POST"]),
        Route("/api/targets", alerts.targets, methods=["GET"]),
    ]


def _auth(request: Request) -> None:
    require_token(request, request.app.state.settings.admin_token)


def summary(r: machine.Rollout, not_ready: Waiting | None = None, now: float = 0.0) -> dict[str, Any]:
    """``not_ready``: why a pending rollout's canary is not ready yet (``Controller.not_ready``),
    its seconds waited as of ``now``."""
    d = machine.desired(r)
    return {
        "id": r.id,
        "name": r.spec.name,
        "service": r.spec.service,
        "stable": r.spec.stable,
        "canary": r.spec.canary,
        "phase": r.phase.value,
        "step": r.step + 1,
        "steps": len(r.spec.steps),
        "weight": d.weight,
        "mirror_share": d.mirror_share,
        "reason": r.reason,
        "decided_by": r.decided_by,
        "phase_since": r.phase_since,
        "revision": r.revision,
        "not_ready": not_ready.to_dict(now) if not_ready is not None else None,
    }


async def create_rollout(request: Request) -> Response:
    _auth(request)
    text = (await read_body(request, 256 * 1024)).decode("utf-8", errors="replace")
    _, problems = await run_in_threadpool(check, text, "spec")  # a big spec must not hold the loop's ticks
    if problems:
        raise Unprocessable(
            "the rollout spec is not valid", code="bad_spec", detail=[p.render("spec") for p in problems]
        )
    controller: Controller = request.app.state.controller
    try:
        rollout = await controller.create_rollout(text)
    except SpecError as exc:
        raise Unprocessable(str(exc), code="bad_spec") from None
    return JSONResponse(summary(rollout), status_code=201)


async def list_rollouts(request: Request) -> Response:
    _auth(request)
    controller: Controller = request.app.state.controller
    items = await controller.rollouts()
    now = controller.clock()
    return JSONResponse({"rollouts": [summary(r, controller.not_ready(r), now) for r in items]})


async def show_rollout(request: Request) -> Response:
    _auth(request)
    controller: Controller = request.app.state.controller
    rid = request.path_params["rollout_id"]
    r = await controller.rollout(rid)
    made = await controller.decisions(rid)
    judged = await controller.latest_judgements(rid)
    latest, watch = _judgements(judged.last), _judgements(judged.last_watch)
    mirror = _judgements({"mirror": judged.last_mirror} if judged.last_mirror else {})
    detail = {
        **summary(r, controller.not_ready(r), controller.clock()),
        "decisions": [vars(d) for d in made],
        "judge": latest,
        "watch": watch,
        "mirror": mirror.get("mirror"),
        "readers": controller.reader_status(),
    }
    return JSONResponse(finite(detail))


def _judgements(js: dict[str, machine.Judgement]) -> dict[str, Any]:
    return {m: {"verdict": j.verdict.value, "reason": j.reason, "evidence": j.evidence} for m, j in js.items()}


def finite(value: Any) -> Any:
    """JSON has no infinity: an unbounded figure (a ratio with no stable errors) says so in words."""
    if isinstance(value, float) and not math.isfinite(value):
        return "unbounded" if value > 0 else ("-unbounded" if value < 0 else None)
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


async def command(request: Request) -> Response:
    _auth(request)
    name = request.path_params["command"]
    if name not in COMMANDS:
        raise NotFound(f"no command {name!r}: {', '.join(COMMANDS)}")
    controller: Controller = request.app.state.controller
    r = await controller.rollout(request.path_params["rollout_id"])
    if r.phase in machine.TERMINAL:
        raise BadRequest(f"rollout {r.id} has ended ({r.phase})", code="rollout_ended")
    if r.phase not in machine.TAKES[name]:
        takes = ", ".join(sorted(machine.TAKES[name]))
        raise Conflict(f"rollout {r.id} is {r.phase}: {name} takes only while {takes}", code="not_now")
    controller.command(r.id, name)
    return JSONResponse({"id": r.id, "command": name, "status": "accepted"}, status_code=202)


async def route_table(request: Request) -> Response:
    settings = request.app.state.settings
    controller: Controller = request.app.state.controller
    reader = parse_reader(request.headers.get("x-table-reader"), request.headers.get("x-table-version"))
    if reader is None:  # it reads, never commands: any service's table token
        services = controller.catalog.names
    else:
        # a router's confirmations hold every service's rollouts: a table token (a queue
        # consumer's, canaries' among them) may not speak for one, and a consumer speaks only with
        # its own service's (its confirmations hold that service's rollouts alone)
        owner = _consumer_owner(controller, reader[0])
        services = () if owner is None else (owner,)
    tokens = (scoped_token(settings.table_token, "table_token", s) for s in services)
    require_token(request, settings.admin_token, *tokens)
    return JSONResponse(controller.poll_table(reader))


def _consumer_owner(controller: Controller, reader: str) -> str | None:
    """The service of ``consumer/<name>@<release>`` when it names a queue consumer of the catalog."""
    kind, _, ident = reader.partition("/")
    found = controller.catalog.owner(ident.rpartition("@")[0] or ident) if kind == "consumer" else None
    return None if found is None else found[0].name


async def readers(request: Request) -> Response:
    _auth(request)
    return JSONResponse({"readers": request.app.state.controller.reader_status()})


async def reprocess(request: Request) -> Response:
    _auth(request)
    controller: Controller = request.app.state.controller
    r = await controller.rollout(request.path_params["rollout_id"])
    if not controller.has_after_rollback(r.spec.service):
        raise BadRequest(f"{r.spec.service} has no after_rollback hooks to run again", code="nothing_to_reprocess")
    if r.phase != machine.ROLLED_BACK:
        raise BadRequest(f"only a rolled back canary's events are handed back; rollout {r.id} is {r.phase}")
    try:
        handed_back = await controller.reprocess(r)
    except DependencyUnavailable as exc:
        raise ServiceUnavailable(str(exc)) from None
    return JSONResponse({"id": r.id, "release": r.spec.canary, "events_handed_back": handed_back})
