"""The controller's HTTP API in-process through httpx.ASGITransport, on SQLite and PostgreSQL.

The controller's loop ticks once at start and then only every hour here, so nothing is started:
these tests are about what the API answers (auth, validation, commands, the webhook), while the
end-to-end and command-line tests run the loop for real.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time

import pytest

from canary.controller.app import create_controller_app
from core.scoped_tokens import scoped_token
from core.settings import Settings
from tests.conftest import asgi_client, healthz_answers_while_held

pytestmark = pytest.mark.anyio
TOKEN = "api-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SPEC = """
apiVersion: releasewarden/v1
kind: Rollout
spec:
  service: importer
  stable: "1.0"
  canary: "1.2"
  steps:
    - {weight: 5, min_requests: 20, min_seconds: 30}
  metrics:
    - {name: errors, kind: errors}
"""


def app(db_url, tmp_path, stable=None, **settings):
    """A controller that runs importer 1.0 (the rollouts here are importer's), or ``stable``; with
    the admin token and any other ``settings``."""
    settings = Settings(db_url=db_url, state_dir=str(tmp_path), admin_token=TOKEN, **settings)
    return create_controller_app(
        settings,
        stable={"importer": "1.0"} if stable is None else stable,
        router_url="http://127.0.0.1:9",
        public_url="http://127.0.0.1:9",
        tick_s=3600,
    )


async def test_every_endpoint_needs_the_token(db_url, tmp_path):
    async with asgi_client(app(db_url, tmp_path)) as c:
        for method, path in [
            ("GET", "/api/rollouts"),
            ("POST", "/api/rollouts"),
            ("GET", "/api/rollouts/x"),
            ("POST", "/api/rollouts/x/pause"),
            ("GET", "/api/routes"),
            ("GET", "/api/readers"),
            ("POST", "/api/alerts"),
            ("GET", "/api/targets"),
        ]:
            r = await c.request(method, path, headers={"Authorization": "Bearer wrong"})
            assert r.status_code == 401, (method, path)
            assert r.json()["error"]["code"]


async def test_a_bad_spec_is_refused_with_what_is_wrong_and_never_stored(db_url, tmp_path):
    async with asgi_client(app(db_url, tmp_path)) as c:
        bad = SPEC.replace("weight: 5", "weight: 500")
        r = await c.post("/api/rollouts", content=bad, headers=AUTH)
        assert r.status_code == 422
        assert any("spec.steps[0].weight" in d for d in r.json()["error"]["detail"])
        r = await c.post("/api/rollouts", content="{not yaml: [", headers=AUTH)
        assert r.status_code == 422
        assert (await c.get("/api/rollouts", headers=AUTH)).json() == {"rollouts": []}


async def test_create_show_command_and_one_active_rollout_per_service(db_url, tmp_path):
    async with asgi_client(app(db_url, tmp_path)) as c:
        created = await c.post("/api/rollouts", content=SPEC, headers=AUTH)
        assert created.status_code == 201
        rid = created.json()["id"]
        assert created.json()["phase"] == "pending"
        again = await c.post("/api/rollouts", content=SPEC, headers=AUTH)
        assert again.status_code == 409
        shown = (await c.get(f"/api/rollouts/{rid}", headers=AUTH)).json()
        assert (shown["service"], shown["canary"], shown["decisions"]) == ("importer", "1.2", [])
        assert (await c.get("/api/rollouts/nope", headers=AUTH)).status_code == 404
        r = await c.post(f"/api/rollouts/{rid}/pause", headers=AUTH)  # pending: nothing to pause yet
        assert (r.status_code, r.json()["error"]["code"]) == (409, "not_now")
        assert "pause takes only while mirroring, progressing" in r.json()["error"]["message"]
        r = await c.post(f"/api/rollouts/{rid}/abort", headers=AUTH)
        assert (r.status_code, r.json()["status"]) == (202, "accepted")
        r = await c.post(f"/api/rollouts/{rid}/reprocess", headers=AUTH)
        assert r.status_code == 400 and "importer has no after_rollback hooks" in r.json()["error"]["message"]
        r = await c.post(f"/api/rollouts/{rid}/explode", headers=AUTH)
        assert r.status_code == 404 and "pause" in r.json()["error"]["message"]
    # the loop's first tick may have been starting the rollout's releases when the app stopped
    assert nothing_left_running(tmp_path)


def nothing_left_running(tmp_path) -> bool:
    out = subprocess.run(["pgrep", "-f", "--", f"--state-dir {tmp_path}"], capture_output=True, text=True)
    return out.stdout.strip() == ""


def alert(name, status="firing", **labels):
    return {"status": status, "labels": {"alertname": name, **labels}, "annotations": {"summary": f"{name} says so"}}


async def test_the_alert_webhook_names_what_it_did_with_each_alert(db_url, tmp_path):
    controller_app = app(db_url, tmp_path)
    async with asgi_client(controller_app) as c:
        rid = (await c.post("/api/rollouts", content=SPEC, headers=AUTH)).json()["id"]
        payload = {
            "status": "firing",
            "alerts": [
                alert("CanaryErrorRatioAboveStable", service="importer", track="canary"),
                alert("CanaryErrorRatioAboveStable", status="resolved", service="importer"),
                alert("ResizerDatabaseErrors", service="resizer", release="2.0", track="canary"),
                alert("StableTrouble", service="importer", track="stable"),
                alert("OldRelease", service="importer", release="1.0", track="stable"),
                alert("NoService"),
            ],
        }
        r = await c.post("/api/alerts", json=payload, headers=AUTH)
        assert r.status_code == 200
        assert [x["action"] for x in r.json()["results"]] == [
            "rolling back",
            "ignored: resolved",
            "ignored: resizer has no active rollout",
            "ignored: the alert is about importer's stable track; rolling back would not help",
            f"ignored: importer 1.0 is not the canary of rollout {rid} (1.2)",
            "ignored: the alert has no service label",
        ]
        assert r.json()["results"][0]["rollout"] == rid
        assert controller_app.state.controller.alerts == {
            rid: "CanaryErrorRatioAboveStable: CanaryErrorRatioAboveStable says so"
        }
        # Alertmanager repeats a notification until it is resolved: the second one changes nothing
        again = await c.post(
            "/api/alerts", json={"alerts": [alert("Other", service="importer", release="1.2")]}, headers=AUTH
        )
        assert [x["action"] for x in again.json()["results"]] == ["already rolling back"]
        assert list(controller_app.state.controller.alerts.values()) == [
            "CanaryErrorRatioAboveStable: CanaryErrorRatioAboveStable says so"
        ]
        for bad in (b"not json", b"[1, 2]", b'{"alerts": 3}', b"\xff\xfe"):
            r = await c.post("/api/alerts", content=bad, headers=AUTH)
            assert r.status_code == 400 and "Alertmanager webhook payload" in r.json()["error"]["message"]
        r = await c.post("/api/alerts", content=b"x" * (2 << 20), headers=AUTH)
        assert r.status_code == 413


async def test_the_webhook_takes_its_own_token_which_opens_nothing_else(db_url, tmp_path):
    async with asgi_client(app(db_url, tmp_path, alert_token="alerts-only")) as c:
        hook = {"Authorization": "Bearer alerts-only"}
        r = await c.post("/api/alerts", json={"alerts": [alert("X", service="importer")]}, headers=hook)
        assert r.json()["results"][0]["action"] == "ignored: importer has no active rollout"
        assert (await c.post("/api/alerts", json={"alerts": []}, headers=AUTH)).status_code == 200
        assert (await c.get("/api/rollouts", headers=hook)).status_code == 401
        assert (await c.post("/api/rollouts", content=SPEC, headers=hook)).status_code == 401


async def test_the_table_token_reads_the_route_table_and_commands_nothing(db_url, tmp_path):
    """What queue consumers (a canary's among them) hold: their own service's table token, derived
    from the controller's (``core.scoped_tokens``). It reads, never commands."""
    opens, importer = (scoped_token("table-only", "table_token", s) for s in ("opens", "importer"))
    async with asgi_client(app(db_url, tmp_path, table_token="table-only", service_token="svc")) as c:
        for token in (opens, importer, TOKEN):
            r = await read_table(c, {"Authorization": f"Bearer {token}"})
            assert r.status_code == 200 and "importer" in r.json()["services"], token
        created = await c.post("/api/rollouts", content=SPEC, headers=AUTH)
        assert created.status_code == 201
        rid = created.json()["id"]
        for token in (opens, "table-only", "svc"):
            auth = {"Authorization": f"Bearer {token}"}
            assert (await c.post(f"/api/rollouts/{rid}/promote", headers=auth)).status_code == 401
            assert (await c.post("/api/rollouts", content=SPEC, headers=auth)).status_code == 401
            assert (await c.get("/api/rollouts", headers=auth)).status_code == 401
            assert (await c.post("/api/alerts", json={"alerts": []}, headers=auth)).status_code == 401
        # the controller's own secrets are no table token: no release holds them
        for token in ("svc", "table-only"):
            assert (await c.get("/api/routes", headers={"Authorization": f"Bearer {token}"})).status_code == 401
        # a consumer speaks with its own service's token, never for a router, whose confirmations
        # hold every rollout, nor with another service's (it would hold the opens rollouts)
        version = {"X-Table-Version": "1", "X-Table-Reader": "consumer/opens-processor@1.1"}
        consumer = await c.get("/api/routes", headers={**version, "Authorization": f"Bearer {opens}"})
        assert consumer.status_code == 200
        other = await c.get("/api/routes", headers={**version, "Authorization": f"Bearer {importer}"})
        assert other.status_code == 401
        table = {"Authorization": f"Bearer {opens}", "X-Table-Version": "1"}
        # nor for a consumer the catalog does not name (the importer has none: it would hold its rollouts)
        posing = await c.get("/api/routes", headers={**table, "X-Table-Reader": "consumer/importer@x"})
        assert posing.status_code == 401
        assert (await c.get("/api/routes", headers={**table, "X-Table-Reader": "router/fake:1"})).status_code == 401
        router = await c.get("/api/routes", headers={**AUTH, "X-Table-Reader": "router/real:1"})
        assert router.status_code == 200
        readers = (await c.get("/api/readers", headers=AUTH)).json()["readers"]
        assert [r["reader"] for r in readers] == ["consumer/opens-processor@1.1", "router/real:1"]


async def test_prometheus_finds_the_controller_and_router_to_scrape(db_url, tmp_path):
    """With the read token (or the admin's): a list of addresses is read as the dashboard is."""
    async with asgi_client(app(db_url, tmp_path, stable={}, read_token="reader")) as c:
        assert (await c.get("/api/targets")).status_code == 401
        assert (await c.get("/api/targets", headers={"Authorization": "Bearer table"})).status_code == 401
        for token in ("reader", TOKEN):
            groups = (await c.get("/api/targets", headers={"Authorization": f"Bearer {token}"})).json()
            assert {g["labels"]["component"]: g["targets"] for g in groups} == {
                "controller": ["127.0.0.1:9"],
                "router": ["127.0.0.1:9"],
            }


async def read_table(c, headers):
    deadline = time.monotonic() + 10
    while (r := await c.get("/api/routes", headers=headers)).status_code == 503:
        # until the first tick with the lease built the table: refused, the routers keep theirs
        assert r.json()["error"]["code"] == "table_not_ready" and time.monotonic() < deadline
        await asyncio.sleep(0.05)
    return r


async def test_readers_of_the_route_table_are_recorded_with_the_version_they_serve(db_url, tmp_path):
    async with asgi_client(app(db_url, tmp_path)) as c:
        polls = [
            {"X-Table-Reader": "router/127.0.0.1:8080", "X-Table-Version": "7"},
            {"X-Table-Reader": "consumer/opens-processor@1.1", "X-Table-Version": "0"},
            {"X-Table-Reader": "nonsense", "X-Table-Version": "3"},  # not a reader's name: not recorded
            {},  # a person looking: not a reader
        ]
        for headers in polls:
            r = await read_table(c, {**AUTH, **headers})
            assert set(r.json()) == {"version", "services"}
        readers = (await c.get("/api/readers", headers=AUTH)).json()["readers"]
        assert [(r["reader"], r["version"]) for r in readers] == [
            ("consumer/opens-processor@1.1", 0),
            ("router/127.0.0.1:8080", 7),
        ]


async def test_an_unknown_release_is_refused_naming_the_known_ones(db_url, tmp_path):
    async with asgi_client(app(db_url, tmp_path)) as c:
        r = await c.post("/api/rollouts", content=SPEC.replace('canary: "1.2"', 'canary: "9.9"'), headers=AUTH)
        assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_release"
        assert r.json()["error"]["message"] == "importer has no release '9.9'; the releases it has: 1.0, 1.1, 1.2"
        assert (await c.get("/api/rollouts", headers=AUTH)).json() == {"rollouts": []}


async def test_the_judges_numbers_are_shown_by_a_controller_that_did_not_judge(db_url, tmp_path):
    from canary.controller.judging import RolloutJudging
    from canary.controller.machine import Judgement, Verdict

    first = app(db_url, tmp_path)
    async with asgi_client(first) as c:
        rid = (await c.post("/api/rollouts", content=SPEC, headers=AUTH)).json()["id"]
        kept = RolloutJudging(last={"errors": Judgement(Verdict.CONTINUE, "baking", {"counts": {"canary": 3}})})
        first.state.controller.store.save_judging(rid, kept.to_dict())
    async with asgi_client(app(db_url, tmp_path)) as c:  # a restarted controller
        judge = (await c.get(f"/api/rollouts/{rid}", headers=AUTH)).json()["judge"]
        assert judge == {"errors": {"verdict": "continue", "reason": "baking", "evidence": {"counts": {"canary": 3}}}}


async def test_a_spec_that_lists_its_alerts_is_rolled_back_by_those_only(db_url, tmp_path):
    controller_app = app(db_url, tmp_path)
    async with asgi_client(controller_app) as c:
        spec = SPEC + "  alerts: [CanaryErrorRatioAboveStable]\n"
        rid = (await c.post("/api/rollouts", content=spec, headers=AUTH)).json()["id"]
        payload = {"alerts": [alert("RouterFailovers", service="importer", release="1.2")]}
        r = await c.post("/api/alerts", json={"status": "firing", **payload}, headers=AUTH)
        assert [x["action"] for x in r.json()["results"]] == [
            f"ignored: RouterFailovers is not one of rollout {rid}'s alerts (CanaryErrorRatioAboveStable)"
        ]
        assert controller_app.state.controller.alerts == {}
        payload = {"alerts": [alert("CanaryErrorRatioAboveStable", service="importer", release="1.2")]}
        r = await c.post("/api/alerts", json={"status": "firing", **payload}, headers=AUTH)
        assert [x["action"] for x in r.json()["results"]] == ["rolling back"]


def aliases(levels: int) -> str:
    """``metadata`` (whose fields a spec leaves free) with aliases ten to a level: 10**levels values."""
    out = "metadata:\n  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
    return out + "".join(f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, levels))


async def test_a_spec_whose_aliases_expand_past_the_limit_or_that_nests_too_deeply_is_refused(db_url, tmp_path):
    async with asgi_client(app(db_url, tmp_path)) as c:
        r = await c.post(
            "/api/rollouts", content=SPEC.replace("kind: Rollout\n", "kind: Rollout\n" + aliases(5)), headers=AUTH
        )
        assert (r.status_code, r.json()["error"]["detail"]) == (
            422,
            ["spec: (document): more than 100000 values once YAML aliases are expanded"],
        )
        for deep in ("[" * 50_000, "{a: " * 20_000):  # the pure-Python parser's RecursionError was a 500
            r = await c.post("/api/rollouts", content=deep, headers=AUTH)
            assert (r.status_code, r.json()["error"]["detail"]) == (
                422,
                ["spec:1: (document): not valid YAML: exceeded maximum nesting depth"],
            )
        assert (await c.get("/api/rollouts", headers=AUTH)).json() == {"rollouts": []}


async def checked_while_healthz_answers(c, monkeypatch, module, path: str, body: str) -> list[bool]:
    """Post ``body`` to ``path`` while ``module.check`` holds it until ``/healthz`` has answered
    meanwhile: [True] when the check ran off the event loop (on it, nothing else can answer)."""
    started, answered, released = threading.Event(), threading.Event(), []
    real = module.check

    def held_check(*args):
        started.set()
        released.append(answered.wait(20))  # on the event loop this waits the 20 s out, then goes on
        return real(*args)

    monkeypatch.setattr(module, "check", held_check)

    meanwhile = healthz_answers_while_held(c, started, answered, "the check", 20)
    posted, _ = await asyncio.gather(c.post(path, content=body, headers=AUTH), meanwhile)
    assert posted.status_code < 500, posted.text
    return released


async def test_a_spec_is_checked_off_the_event_loop(db_url, tmp_path, monkeypatch):
    from canary.controller import api

    async with asgi_client(app(db_url, tmp_path)) as c:
        assert await checked_while_healthz_answers(c, monkeypatch, api, "/api/rollouts", SPEC) == [True]


async def test_an_alert_payload_the_json_module_refuses_is_a_400_not_a_500(db_url, tmp_path):
    async with asgi_client(app(db_url, tmp_path)) as c:
        for bad in (
            "[" * 100_000 + "]" * 100_000,  # deeper than the interpreter's recursion limit
            '{"alerts": [], "x": ' + "1" * 5000 + "}",  # more digits than int() converts
            '{"alerts": [], "x": NaN}',
        ):
            r = await c.post("/api/alerts", content=bad, headers=AUTH)
            assert r.status_code == 400, (bad[:30], r.text)
            assert r.json()["error"]["message"].startswith("body must be an Alertmanager webhook payload (JSON) (")
