"""The Alertmanager webhook (``POST /api/alerts``) and Prometheus's target list (``GET /api/targets``).

Webhook: the sender proves itself with a bearer token (``alert_token``, or the admin token).  Each
firing alert names a service (label ``service``) and either the release it is about (``release``) or
its track (``track``).  It rolls back that service's active rollout when it is about the rollout's
canary release (a promoted release still being watched included) and, when the rollout's spec lists
``alerts``, is one of them; the alert's name and summary become the rollout's reason.  It is
idempotent: a repeated notification finds the rollback under way (or done) and says so.  Resolved
alerts, alerts about stable, and services with no active rollout are ignored, and the answer says
which and why, per alert.

Targets: Prometheus's HTTP service discovery.  What the controller runs (each release of each
service and processor, labelled with component, service, release and track), the router and the
controller itself.  On Kubernetes, Prometheus discovers pods instead (manifests/kubernetes).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from canary.controller import machine
from canary.controller.engine import Controller
from canary.controller.read_access import require_read
from core.app import parse_json, read_body, require_token
from core.errors import BadRequest, NotFound

MAX_PAYLOAD = 1 << 20


def _auth_alert_sender(request: Request) -> None:
    settings = request.app.state.settings
    require_token(request, settings.alert_token, settings.admin_token)


async def webhook(request: Request) -> Response:
    _auth_alert_sender(request)
    payload = parse_json(await read_body(request, MAX_PAYLOAD), "an Alertmanager webhook payload (JSON)")
    if not isinstance(payload, dict) or not isinstance(payload.get("alerts", []), list):
        raise BadRequest("body must be an Alertmanager webhook payload: an object with a list of alerts")
    controller = request.app.state.controller
    every = await controller.rollouts()
    latest = {r.spec.service: r for r in every}  # ordered by creation: the last one per service stays
    results = []
    for alert in payload.get("alerts", []):
        alert = alert if isinstance(alert, dict) else {}
        labels = _mapping(alert.get("labels"))
        name, service = str(labels.get("alertname", "alert")), str(labels.get("service", ""))
        status = alert.get("status", payload.get("status"))
        summary = str(_mapping(alert.get("annotations")).get("summary", ""))
        if labels.get("group") and not service and status == "firing":  # about a whole group: every member
            results.append(
                await _group_alert(controller, str(labels["group"]), f"{name}: {summary}" if summary else name)
            )
            continue
        action, rollout = _action(controller, latest.get(service), labels, status)
        if action == "rolling back" and rollout is not None:
            controller.alert(rollout.id, f"{name}: {summary}" if summary else name)
        results.append(
            {"alert": name, "service": service, "action": action} | ({"rollout": rollout.id} if rollout else {})
        )
    return JSONResponse({"results": results})


async def _group_alert(controller: Controller, group: str, why: str) -> dict[str, Any]:
    """An alert labelled ``group`` (and no service) rolls back every active member of that group."""
    found = [g for g in await controller.groups.groups(active_only=True) if g.spec.name == group]
    if not found:
        return {"alert": why, "group": group, "action": f"ignored: no group {group} under way"}
    members = []
    for link in found[0].members.values():
        if link.rollout_id and not controller.alert_pending(link.rollout_id):
            try:
                r = await controller.rollout(link.rollout_id)
            except NotFound:
                continue
            if r.phase in machine.ACTIVE:
                controller.alert(r.id, why)
                members.append(r.spec.service)
    return {
        "alert": why,
        "group": group,
        "action": "rolling back " + (", ".join(members) or "nothing: no member active"),
    }


def _action(
    controller: Controller, r: machine.Rollout | None, labels: dict[str, Any], status: Any
) -> tuple[str, machine.Rollout | None]:
    service, release, track = labels.get("service", ""), labels.get("release", ""), labels.get("track", "")
    if status != "firing":
        return "ignored: resolved", None
    if not service:
        return "ignored: the alert has no service label", None
    if r is None:
        return f"ignored: {service} has no active rollout", None
    if release and release != r.spec.canary:
        return f"ignored: {service} {release} is not the canary of rollout {r.id} ({r.spec.canary})", None
    # the track the rollout's new release serves on: stable once it is promoted (the watch holds
    # the old release back on the canary track)
    new_track = "stable" if r.phase in (machine.PROMOTING, machine.WATCHING) else "canary"
    if not release and track and track != new_track:
        return f"ignored: the alert is about {service}'s {track} track; rolling back would not help", None
    if r.phase == machine.ROLLED_BACK:
        return f"ignored: already rolled back ({r.reason})", r
    if r.phase == machine.ROLLING_BACK or controller.alert_pending(r.id):
        return "already rolling back", r
    name = str(labels.get("alertname", ""))
    if r.spec.alerts and name not in r.spec.alerts:
        return f"ignored: {name} is not one of rollout {r.id}'s alerts ({', '.join(r.spec.alerts)})", None
    if r.phase not in machine.ACTIVE:
        return f"ignored: {service} has no active rollout (the last one {r.phase})", None
    return "rolling back", r


async def targets(request: Request) -> Response:
    require_read(request)  # a list of addresses: Prometheus reads it with the read token, never the admin's
    controller = request.app.state.controller
    groups: list[dict[str, Any]] = [
        {"targets": [_hostport(controller.public_url)], "labels": {"component": "controller"}},
        {"targets": [_hostport(controller.router_url)], "labels": {"component": "router"}},
    ]
    for i in await controller.running():
        component = "processor" if controller.catalog.owner(i.service) is not None else "service"
        groups.append(
            {
                "targets": [_hostport(i.url)],
                "labels": {"component": component, "service": i.service, "release": i.release, "track": i.track},
            }
        )
    return JSONResponse([g for g in groups if g["targets"] != [""]])


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _hostport(url: str) -> str:
    return urlsplit(url).netloc if url else ""
