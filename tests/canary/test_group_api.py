"""The controller's group endpoints in-process (httpx.ASGITransport), on SQLite and PostgreSQL:
the token, bad groups refused with field and line, unknown services named per member, and an
alert labelled with a group."""

from __future__ import annotations

import pytest

from tests.canary.test_controller_api import AUTH, alert, aliases, app, checked_while_healthz_answers
from tests.conftest import asgi_client

pytestmark = pytest.mark.anyio
GROUP = """apiVersion: releasewarden/v1
kind: Group
metadata: {name: april}
spec:
  members:
    - service: importer
      release: "1.1"
      rollout: {steps: [{weight: 10}], metrics: [{name: errors, kind: errors}]}
"""


async def test_group_endpoints_need_the_token_and_refuse_bad_groups_in_words(db_url, tmp_path):
    async with asgi_client(app(db_url, tmp_path, stable={})) as c:
        for method, path in [("GET", "/api/groups"), ("POST", "/api/groups"), ("POST", "/api/groups/x/abort")]:
            assert (await c.request(method, path, headers={"Authorization": "Bearer no"})).status_code == 401
        r = await c.post("/api/groups", content=GROUP.replace("weight: 10", "weight: 110"), headers=AUTH)
        assert r.status_code == 422
        assert r.json()["error"]["detail"] == [
            "group:8: spec.members[0].rollout.steps[0].weight: must be above 0 and below 100"
        ]
        r = await c.post("/api/groups", content=GROUP, headers=AUTH)  # this controller runs no service
        assert r.status_code == 422 and r.json()["error"]["message"].startswith(
            "member importer: no service 'importer'"
        )
        assert (await c.get("/api/groups", headers=AUTH)).json() == {"groups": []}
        assert (await c.post("/api/groups/nope/abort", headers=AUTH)).status_code == 404
        r = await c.post("/api/alerts", json={"alerts": [alert("ReleaseBroken", group="april")]}, headers=AUTH)
        assert r.json()["results"][0]["action"] == "ignored: no group april under way"


async def test_a_group_whose_aliases_expand_past_the_limit_or_that_nests_too_deeply_is_refused(db_url, tmp_path):
    async with asgi_client(app(db_url, tmp_path, stable={})) as c:
        bomb = GROUP.replace("metadata: {name: april}\n", aliases(5) + "  name: april\n")
        r = await c.post("/api/groups", content=bomb, headers=AUTH)
        assert (r.status_code, r.json()["error"]["detail"]) == (
            422,
            ["group: (document): more than 100000 values once YAML aliases are expanded"],
        )
        for deep in ("[" * 50_000, "{a: " * 20_000):
            r = await c.post("/api/groups", content=deep, headers=AUTH)
            assert (r.status_code, r.json()["error"]["detail"]) == (
                422,
                ["group:1: (document): not valid YAML: exceeded maximum nesting depth"],
            )
        assert (await c.get("/api/groups", headers=AUTH)).json() == {"groups": []}


async def test_a_group_is_checked_off_the_event_loop(db_url, tmp_path, monkeypatch):
    from canary.controller import group_api

    async with asgi_client(app(db_url, tmp_path, stable={})) as c:
        assert await checked_while_healthz_answers(c, monkeypatch, group_api, "/api/groups", GROUP) == [True]
