"""End to end on 127.0.0.1: controller, router, real service processes, `canary load`.

Importer 1.1 is rolled back by the judge while consumers see no error (failed canary imports carry
an Idempotency-Key and are re-sent to stable); then 1.2 is promoted and, after its watch window,
succeeds.  A release that begins to fail after its promotion is rolled back to the release kept
warm (and holding back a share of traffic) during the watch.  An unknown release is refused at
once.  The spec is the shipped one with shorter bakes, and a rate floor that suits the test's
modest traffic (it says which base rate a step must be able to see a 2x regression of)."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from benchmarks.late_failure import BOOKS, SuppressedImports
from canary.stack import local_stack, service_token
from canary.traffic.load import LoadConfig
from tests.conftest import load_in_background, wait_for_rollout

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
    - {{name: errors, kind: errors, rate_floor: 0.02}}
  sticky: {{header: X-Account-Id}}
  watch: {{seconds: 3}}
"""
# the importer's shipped floor: at 0.2 the pass rule rules out only a 40% error rate, and 1.1 (10-16%
# of imports fail with this traffic) was promoted in 7-35% of simulated runs; at 0.02 it cannot pass.
# The load runs until the rollout has ended (the judge needs 15-50 s to roll 1.1 back).


def stack(tmp_path: Path, stable: dict[str, str] | None = None):
    return local_stack(tmp_path, stable or {"importer": "1.0"}, TOKEN)


def wait_for(controller_url: str, rollout_id: str, phases: set[str], seconds: float = 120) -> dict:
    return wait_for_rollout(controller_url, rollout_id, lambda r: r["phase"] in phases, AUTH, seconds)


def poll_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


def router_saw(router_url: str, service: str, requests: int) -> Callable[[], bool]:
    def seen() -> bool:
        rows = httpx.get(f"{router_url}/_router/stats").json()["counters"]
        return sum(r["requests"] for r in rows if r["service"] == service) >= requests

    return seen


def steps_taken(decisions: list[dict]) -> list[str]:
    """Phases a rollout went through, without the holds (waiting for metrics or for a router)."""
    return [d["phase_to"] for d in decisions if not d["reason"].startswith(("held", "held no more"))]


def test_importer_1_1_rolled_back_by_the_judge_then_1_2_promoted(tmp_path):
    with stack(tmp_path) as (controller_url, router_url, app):
        assert httpx.get(f"{controller_url}/api/rollouts").status_code == 401
        bad = httpx.post(f"{controller_url}/api/rollouts", content="spec: {}", headers=AUTH)
        assert bad.status_code == 422 and bad.json()["error"]["detail"]

        load = LoadConfig(importer=f"{router_url}/importer", rate=20, duration=180, mix={"importer": 1.0}, accounts=40)
        with load_in_background(load) as reports:  # until the rollout has ended
            poll_until(router_saw(router_url, "importer", 10), 30, "the load reaches the router")
            created = httpx.post(f"{controller_url}/api/rollouts", content=SPEC.format(canary="1.1"), headers=AUTH)
            assert created.status_code == 201, created.text
            rid = created.json()["id"]
            second = httpx.post(f"{controller_url}/api/rollouts", content=SPEC.format(canary="1.2"), headers=AUTH)
            assert second.status_code == 409  # one active rollout per service
            done = wait_for(controller_url, rid, {"rolled_back", "succeeded", "failed"})
        assert (done["phase"], done["decided_by"]) == ("rolled_back", "judge"), done
        assert "canary is worse than stable" in done["reason"]
        seen = reports[0]["services"]["importer"]
        assert seen["errors"] == {} and seen["imports_failed"] == 0  # consumers never noticed
        stats = httpx.get(f"{router_url}/_router/stats").json()["counters"]
        assert sum(r["errors"] for r in stats if r["release"] == "1.1") >= 3
        assert sum(r["failovers"] for r in stats if r["release"] == "1.1") >= 3

        with load_in_background(dataclasses.replace(load, seed=2)) as reports2:
            created2 = httpx.post(f"{controller_url}/api/rollouts", content=SPEC.format(canary="1.2"), headers=AUTH)
            done2 = wait_for(controller_url, created2.json()["id"], {"rolled_back", "succeeded", "failed"})
        assert done2["phase"] == "succeeded", done2
        phases = steps_taken(done2["decisions"])
        assert phases == ["progressing", "progressing", "promoting", "watching", "succeeded"]
        assert reports2[0]["services"]["importer"]["errors"] == {}
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
    - {name: lost-opens, kind: conservation, rate_floor: 0.005}
"""
# lost opens: the shipped floor.  1.1 loses 1-1.6% of events here; at a floor of 0.02 the pass rule
# rules out only a 4% loss, and 1.1 was promoted in 37-73% of simulated runs (once in CI: 3 lost of
# 287 against 0 of 295); at 0.005 it cannot pass.  The load runs until the rollout has ended.


def test_opens_1_1_loses_events_is_rolled_back_and_stable_recovers_every_open(tmp_path):
    with stack(tmp_path, {"opens": "1.0"}) as (controller_url, router_url, app):
        load = LoadConfig(
            opens=f"{router_url}/opens",
            rate=60,
            duration=180,
            mix={"opens": 1.0},
            accounts=10,
            pool=50,
            admin_token=service_token(tmp_path, "opens"),
        )
        with load_in_background(load) as reports:  # until the rollout has ended
            poll_until(router_saw(router_url, "opens", 20), 30, "the load reaches the router")
            created = httpx.post(f"{controller_url}/api/rollouts", content=OPENS_SPEC, headers=AUTH)
            assert created.status_code == 201, created.text
            done = wait_for(controller_url, created.json()["id"], {"rolled_back", "succeeded", "failed"})
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


LATE_SPEC = """
apiVersion: releasewarden/v1
kind: Rollout
spec:
  service: importer
  stable: "1.0"
  canary: "1.1"
  steps:
    - {weight: 50, min_requests: 20, min_seconds: 2, max_seconds: 120}
  metrics:
    - {name: errors, kind: errors, rate_floor: 0.2}
  watch: {seconds: 300, holdback: 25}
"""
FAULT_AFTER_S = 3.0  # the release begins to fail this long after its promotion


def test_a_release_that_fails_after_its_promotion_is_rolled_back_to_the_warm_release(tmp_path, capsys):
    with stack(tmp_path) as (controller_url, router_url, _), SuppressedImports(f"{router_url}/importer") as traffic:
        poll_until(router_saw(router_url, "importer", 2 * BOOKS + 10), 60, "the imports reach the router")
        rid = httpx.post(f"{controller_url}/api/rollouts", content=LATE_SPEC, headers=AUTH).json()["id"]
        watching = wait_for(controller_url, rid, {"watching", "rolled_back", "failed"})
        assert watching["phase"] == "watching", watching
        table = httpx.get(f"{controller_url}/api/routes", headers=AUTH).json()["services"]["importer"]
        assert table["releases"] == {"stable": "1.1", "canary": "1.0"} and table["weight"] == 25  # holdback
        poll_until(lambda: time.time() >= watching["phase_since"] + FAULT_AFTER_S, 30, "the fault's onset")
        traffic.empty = True  # 1.1 begins to fail
        done = wait_for(controller_url, rid, {"rolled_back", "succeeded"}, seconds=120)
        rolled_back_at = time.time()
    assert (done["phase"], done["decided_by"]) == ("rolled_back", "judge"), done
    assert "late failure after promotion" in done["reason"]
    assert done["decisions"][-1]["phase_to"] == "rolled_back"
    late = next(d for d in done["decisions"] if d["phase_from"] == "watching")
    assert late["evidence"]  # the numbers behind it are kept with the decision
    seconds = (late["at"] - traffic.first_failure, rolled_back_at - traffic.first_failure)
    with capsys.disabled():
        print(
            f"\nlate failure: rolling back {seconds[0]:.1f} s after the first failing request, rolled back "
            f"(seen by the test) after {seconds[1]:.1f} s"
        )


def test_an_unknown_release_is_refused_at_once_and_the_loop_goes_on(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    with stack(tmp_path) as (controller_url, _, _app):
        typo = httpx.post(f"{controller_url}/api/rollouts", content=SPEC.format(canary="9.9"), headers=AUTH)
        assert typo.status_code == 422, typo.text
        assert "importer has no release '9.9'; the releases it has: 1.0, 1.1, 1.2" in typo.json()["error"]["message"]
        assert httpx.get(f"{controller_url}/api/rollouts", headers=AUTH).json()["rollouts"] == []
        ok = httpx.post(f"{controller_url}/api/rollouts", content=SPEC.format(canary="1.2"), headers=AUTH)
        assert ok.status_code == 201, ok.text  # nothing of the typo is left in the way
        wait_for(controller_url, ok.json()["id"], {"progressing"})
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.exc_info]


@pytest.fixture(autouse=True)
def _no_tracebacks_in_the_controller_log(caplog):
    """Bad input is reported in words: the controller logs no traceback in any of these tests."""
    caplog.set_level(logging.INFO, logger="releasewarden")
    yield
    assert not [r for r in caplog.records if r.exc_info and r.name.startswith("releasewarden.controller")]
