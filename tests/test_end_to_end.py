"""End to end on 127.0.0.1: controller, router, real service processes, `canary load`.

Importer 1.1 is rolled back by the judge while consumers see no error (failed canary imports carry
an Idempotency-Key and are re-sent to stable); then 1.2 is promoted and, after its watch window,
succeeds.  The spec is the shipped one with shorter bakes, and a rate floor that suits the test's
modest traffic (it says which base rate a step must be able to see a 2x regression of)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from canary.stack import local_stack
from canary.traffic.load import LoadConfig, run
from tests.conftest import wait_for_rollout

TOKEN = "e2e-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SPEC = """
apiVersion: releasewarden/v1
kind: Rollout
spec:
  service: importer
  stable: "1.0"
  canary: "{canary}"
  steps:
    - {{weight: 50, min_requests: 20, min_seconds: 3, max_seconds: 120}}
    - {{weight: 75, min_requests: 20, min_seconds: 3, max_seconds: 120}}
  metrics:
    - {{name: errors, kind: errors, rate_floor: 0.2}}
  sticky: {{header: X-Account-Id}}
  watch: {{seconds: 3}}
"""


def stack(tmp_path: Path, stable: dict[str, str] | None = None):
    return local_stack(tmp_path, stable or {"importer": "1.0"}, TOKEN)


def wait_for(controller_url: str, rollout_id: str, phases: set[str], seconds: float = 120) -> dict:
    return wait_for_rollout(controller_url, rollout_id, lambda r: r["phase"] in phases, AUTH, seconds)


def test_importer_1_1_rolled_back_by_the_judge_then_1_2_promoted(tmp_path):
    with stack(tmp_path) as (controller_url, router_url, app):
        assert httpx.get(f"{controller_url}/api/rollouts").status_code == 401
        bad = httpx.post(f"{controller_url}/api/rollouts", content="spec: {}", headers=AUTH)
        assert bad.status_code == 422 and bad.json()["error"]["detail"]

        reports: list[dict] = []
        load = threading.Thread(
            target=lambda: reports.append(
                run(
                    LoadConfig(
                        importer=f"{router_url}/importer", rate=20, duration=25, mix={"importer": 1.0}, accounts=40
                    )
                )
            )
        )
        load.start()
        time.sleep(2)
        created = httpx.post(f"{controller_url}/api/rollouts", content=SPEC.format(canary="1.1"), headers=AUTH)
        assert created.status_code == 201, created.text
        rid = created.json()["id"]
        assert (
            httpx.post(f"{controller_url}/api/rollouts", content=SPEC.format(canary="1.2"), headers=AUTH).status_code
            == 409
        )  # one active rollout per service
        done = wait_for(controller_url, rid, {"rolled_back", "succeeded", "failed"})
        assert (done["phase"], done["decided_by"]) == ("rolled_back", "judge"), done
        assert "canary is worse than stable" in done["reason"]
        load.join(60)
        seen = reports[0]["services"]["importer"]
        assert seen["errors"] == {} and seen["imports_failed"] == 0  # consumers never noticed
        stats = httpx.get(f"{router_url}/_router/stats").json()["counters"]
        assert sum(r["errors"] for r in stats if r["release"] == "1.1") >= 3
        assert sum(r["failovers"] for r in stats if r["release"] == "1.1") >= 3

        load2 = threading.Thread(
            target=lambda: reports.append(
                run(
                    LoadConfig(
                        importer=f"{router_url}/importer",
                        rate=20,
                        duration=30,
                        mix={"importer": 1.0},
                        accounts=40,
                        seed=2,
                    )
                )
            )
        )
        load2.start()
        rid2 = httpx.post(f"{controller_url}/api/rollouts", content=SPEC.format(canary="1.2"), headers=AUTH).json()[
            "id"
        ]
        done2 = wait_for(controller_url, rid2, {"rolled_back", "succeeded", "failed"})
        load2.join(60)
        assert done2["phase"] == "succeeded", done2
        phases = [d["phase_to"] for d in done2["decisions"]]
        assert phases == ["progressing", "progressing", "promoting", "watching", "succeeded"]
        assert reports[1]["services"]["importer"]["errors"] == {}
        table = httpx.get(f"{controller_url}/api/routes", headers=AUTH).json()
        assert table["services"]["importer"]["releases"] == {"stable": "1.2"}
        running = set(app.state.controller.platform.entries)  # (service, release) pairs still running
        assert running == {("importer", "1.2")}  # 1.0 was kept warm through the watch, then stopped


OPENS_SPEC = """
apiVersion: releasewarden/v1
kind: Rollout
spec:
  service: opens
  stable: "1.0"
  canary: "1.1"
  steps:
    - {weight: 50, min_requests: 50, min_seconds: 3, max_seconds: 120}
  metrics:
    - {name: lost-opens, kind: conservation, rate_floor: 0.2}
"""


def test_opens_1_1_loses_events_is_rolled_back_and_stable_recovers_every_open(tmp_path):
    with stack(tmp_path, {"opens": "1.0"}) as (controller_url, router_url, app):
        reports: list[dict] = []
        load = threading.Thread(
            target=lambda: reports.append(
                run(
                    LoadConfig(
                        opens=f"{router_url}/opens",
                        rate=60,
                        duration=20,
                        mix={"opens": 1.0},
                        accounts=10,
                        pool=50,
                        admin_token=TOKEN,
                    )
                )
            )
        )
        load.start()
        time.sleep(2)
        created = httpx.post(f"{controller_url}/api/rollouts", content=OPENS_SPEC, headers=AUTH)
        assert created.status_code == 201, created.text
        done = wait_for(controller_url, created.json()["id"], {"rolled_back", "succeeded", "failed"})
        load.join(60)
        assert (done["phase"], done["decided_by"]) == ("rolled_back", "judge"), done
        assert done["reason"].startswith("lost-opens: canary is worse than stable")
        opens_url = app.state.controller.upstreams[("opens", "1.0")]
        deadline = time.monotonic() + 30
        while (stats := httpx.get(f"{opens_url}/stats").json())["events_pending"] or stats["unaccounted"]:
            assert time.monotonic() < deadline, stats
            time.sleep(0.3)
        # the by-hand retry of the runbook: idempotent, and nothing becomes unaccounted
        again = httpx.post(f"{controller_url}/api/rollouts/{done['id']}/reprocess", headers=AUTH)
        assert again.status_code == 200 and again.json()["release"] == "1.1", again.text
        deadline = time.monotonic() + 30
        while (stats := httpx.get(f"{opens_url}/stats").json())["events_pending"] or stats["unaccounted"]:
            assert time.monotonic() < deadline, stats
            time.sleep(0.3)
    seen = reports[0]["services"]["opens"]
    assert seen["errors"] == {} and seen["blank_agent_hits"] > 0
    # opens lost = pixel hits - opens recorded - events filtered = 0
    assert stats["events_stored"] == seen["valid_hits"]
    assert seen["valid_hits"] - stats["opens_recorded"] - stats["events_filtered"] == 0
