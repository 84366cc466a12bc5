"""The dashboard's HTTP side in-process (httpx.ASGITransport, SQLite and PostgreSQL): the page is
self-contained, reading needs the read token (or, with none set, a client on loopback), and the
state the page reads carries a new rollout with its weights, history and route table, and each
active group with its members' states (a group's save reaches the event stream), a settled group
in the group history."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from canary.controller import machine
from canary.controller.app import create_controller_app
from core.settings import Settings
from tests.canary.test_controller_api import SPEC

pytestmark = pytest.mark.anyio
TOKEN = "dash-admin"
READ = "dash-read"


@asynccontextmanager
async def client(db_url: str, tmp_path, host: str = "127.0.0.1", **settings: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_controller_app(
        Settings(db_url=db_url, state_dir=str(tmp_path), admin_token=TOKEN, **settings),  # type: ignore[arg-type]
        stable={},
        router_url="http://127.0.0.1:9",
        public_url="http://127.0.0.1:9",
        tick_s=3600,  # one tick at start: these tests are about what is answered, not the loop
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(host, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8700") as c:
            c.app = app  # type: ignore[attr-defined]
            yield c


async def test_the_page_is_one_self_contained_file(db_url, tmp_path):
    async with client(db_url, tmp_path, host="10.1.2.3") as c:  # the page itself holds no data
        r = await c.get("/dashboard")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]  # the browser loads nothing else
    text = r.text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)  # no CDN, no remote script or style
    assert not re.search(r"<script[^>]+src=|<link[^>]+stylesheet", text)
    assert len(r.content) < 64 * 1024
    for need in ('aria-live="polite"', '<label for="confirm-token">', "showModal", "EventSource"):
        assert need in text


async def test_reading_is_open_on_loopback_only_when_no_read_token_is_set(db_url, tmp_path):
    async with client(db_url, tmp_path) as c:
        assert (await c.get("/api/dashboard/state")).status_code == 200
        assert (await c.get("http://localhost:8700/api/dashboard/state")).status_code == 200
        # a page whose name was pointed at 127.0.0.1 (DNS rebinding) asks with its own name
        assert (await c.get("http://attacker.example:8700/api/dashboard/state")).status_code == 401
    async with client(db_url, tmp_path, host="10.1.2.3") as c:
        refused = await c.get("/api/dashboard/state")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "token_required"
        assert (await c.get("/api/events")).status_code == 401
        ok = await c.get("/api/dashboard/state", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200  # the admin token always reads


async def test_a_read_token_is_needed_everywhere_once_set(db_url, tmp_path):
    async with client(db_url, tmp_path, read_token=READ) as c:
        assert (await c.get("/api/dashboard/state")).status_code == 401  # loopback too
        assert (await c.get("/api/events?token=wrong")).status_code == 401
        assert (await c.get("/api/dashboard/state", headers={"Authorization": f"Bearer {READ}"})).status_code == 200
        # in the address only for the event stream (a browser's EventSource sends no headers)
        assert (await c.get(f"/api/dashboard/state?token={READ}")).status_code == 401
        assert (await c.get("/metrics")).status_code == 200  # Prometheus's scrape stays open (README)
        # the read token reads; it does not command
        pause = await c.post("/api/rollouts/x/pause", headers={"Authorization": f"Bearer {READ}"})
        assert pause.status_code == 401


async def test_the_state_shows_a_new_rollout_with_its_weights_history_and_route_table(db_url, tmp_path):
    async with client(db_url, tmp_path) as c:
        controller = c.app.state.controller
        deadline = time.monotonic() + 30
        while not controller.last_tick:  # its one tick at start done: nothing below is started
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        controller.stable["importer"] = "1.0"  # known, and never started: the loop does not tick again
        created = await c.post("/api/rollouts", content=SPEC, headers={"Authorization": f"Bearer {TOKEN}"})
        assert created.status_code == 201, created.text
        rid = created.json()["id"]
        state = (await c.get("/api/dashboard/state")).json()
        (active,) = state["active"]
        assert (active["id"], active["phase"], active["step"], active["steps"]) == (rid, "pending", 1, 1)
        assert active["weight"] == 0 and active["series"] == [] and active["decisions"] == []
        assert {"weight_published", "weight_confirmed", "waiting_for", "judge"} <= set(active)
        assert [h["id"] for h in state["history"]] == [rid]
        assert {"version", "services"} <= set(state["table"]) and state["readers"] == []
        one = await c.get(f"/api/dashboard/rollouts/{rid}")
        assert one.status_code == 200 and one.json()["id"] == rid
        assert (await c.get("/api/dashboard/rollouts/nope")).status_code == 404


GROUP = """apiVersion: releasewarden/v1
kind: Group
metadata: {name: april}
spec:
  policy: dependents
  members:
    - {service: importer, release: "1.1", rollout: {steps: [{weight: 10}], metrics: [{name: errors, kind: errors}]}}
    - service: resizer
      release: "2.0"
      after: [{member: importer, step: 1}]
      rollout: {steps: [{weight: 10}], metrics: [{name: errors, kind: errors}]}
"""


def members(group: dict) -> dict[str, str]:
    return {m["name"]: m["state"] for m in group["members"]}


async def test_groups_show_their_members_live_and_settled_ones_move_to_the_group_history(db_url, tmp_path):
    # the group loop runs by hand here (the controller's own loop would start real releases); the
    # member's rollback is written to the store as the engine writes one
    async with client(db_url, tmp_path) as c:
        controller = c.app.state.controller
        deadline = time.monotonic() + 30
        while not controller.last_tick:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        controller.stable.update({"importer": "1.0", "resizer": "1.0"})
        stream = await c.app.state.dashboard.stream()
        assert "event: hello" in await anext(stream)
        created = await c.post("/api/groups", content=GROUP, headers={"Authorization": f"Bearer {TOKEN}"})
        assert created.status_code == 201, created.text
        gid = created.json()["id"]
        (g,) = (await c.get("/api/dashboard/state")).json()["groups"]
        assert (g["id"], g["phase"], g["policy"], members(g)) == (gid, "progressing", "dependents", {
            "importer": "waiting", "resizer": "waiting"})  # fmt: skip

        await controller.groups.tick(controller.clock())  # importer starts; resizer waits for its step 1
        seen = {await asyncio.wait_for(anext(stream), 10), await asyncio.wait_for(anext(stream), 10)}
        assert any(f'"group": "{gid}"' in e and "event: group" in e for e in seen), seen  # the group's save
        state = (await c.get("/api/dashboard/state")).json()
        (g,) = state["groups"]
        assert members(g) == {"importer": "pending", "resizer": "waiting"}
        importer = next(m for m in g["members"] if m["name"] == "importer")
        assert importer["rollout"]["id"] in {r["id"] for r in state["active"]}  # its card is on the page too
        assert [(d["member"], d["action"]) for d in g["decisions"]] == [("importer", "start")]
        assert state["group_history"] == []

        r = controller.store.get(importer["rollout"]["id"])
        back = r.with_(controller.clock(), phase=machine.ROLLED_BACK, reason="judge: errors", decided_by="judge")
        decision = machine.Decision(controller.clock(), "pending", "rolled_back", "judge", "errors")
        await asyncio.to_thread(controller.store.save, back, r.revision, [decision])
        await controller.groups.tick(controller.clock())  # resizer will never start: the group has settled
        state = (await c.get("/api/dashboard/state")).json()
        assert state["groups"] == []
        (settled,) = state["group_history"]
        assert (settled["id"], settled["phase"], settled["settled"]) == (gid, "rolled_back", True)
        assert members(settled) == {"importer": "rolled_back", "resizer": "cancelled"}
        assert "decisions" not in settled  # the history is a summary; a group opened has the rest
        opened = (await c.get(f"/api/dashboard/groups/{gid}")).json()
        assert [(d["member"], d["action"]) for d in opened["decisions"]] == [
            ("importer", "start"), ("resizer", "cancel"), ("", "phase")]  # fmt: skip
        assert members(opened) == members(settled)
        assert (await c.get("/api/dashboard/groups/nope")).status_code == 404
        await stream.aclose()
