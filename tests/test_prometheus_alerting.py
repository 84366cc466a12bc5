"""The scaled-out metrics path end to end on 127.0.0.1: a real Prometheus (Debian's package) scraping
the router, the services and the controller (found through the controller's /api/targets every
second), the shipped rules and alerts, a real Alertmanager routing to the controller's webhook, and
the controller judging from Prometheus.

- importer 1.1 is rolled back by the judge reading Prometheus;
- a rollout the judge will not fail (its only metric is latency) is rolled back through
  Prometheus's CanaryErrorRatioAboveStable alert and Alertmanager;
- Prometheus stopped mid-rollout holds it (no timeout, no verdict), and started again resumes it;
- a release that fails after its promotion is rolled back by the watch, judging from Prometheus.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.late_failure import BOOKS, SuppressedImports
from canary.local_monitoring import LocalServer, alertmanager_server, prometheus_server
from canary.platforms.processes import free_port
from canary.stack import local_stack
from canary.traffic.load import LoadConfig, run
from tests.conftest import need_monitoring, wait_for_rollout
from tests.test_end_to_end import FAULT_AFTER_S, LATE_SPEC, poll_until, router_saw, steps_taken

TOKEN, ALERT_TOKEN = "prom-e2e-token", "alertmanager-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SPEC = """
apiVersion: releasewarden/v1
kind: Rollout
spec:
  service: importer
  stable: "1.0"
  canary: "{canary}"
  steps:
    - {{weight: 50, min_requests: 20, min_seconds: {min_seconds}, max_seconds: {max_seconds}}}
  metrics:
    - {metric}
  sticky: {{header: X-Account-Id}}
  watch: {{seconds: 2}}
"""
READ_TOKEN = "prometheus-reads-with-this"
ERRORS = "{name: errors, kind: errors, rate_floor: 0.2}"  # coarse: a clean step passes within seconds
# 1.1's broken customers fail some 10% of requests: below twice a 0.2 floor, a pass by the
# documented rule; at 0.02 it can only be rolled back
ERRORS_FINE = "{name: errors, kind: errors, rate_floor: 0.02}"
LATENCY_ONLY = "{name: slow, kind: latency, threshold_ms: 10000, rate_floor: 0.2}"  # never fails here


@contextlib.contextmanager
def monitored_stack(tmp_path: Path) -> Iterator[tuple[str, str, LocalServer, LocalServer]]:
    need_monitoring()
    # Prometheus lists its targets with the controller's read token, never its admin token
    (tmp_path / "read-token").write_text(READ_TOKEN)
    (tmp_path / "alert-token").write_text(ALERT_TOKEN)
    port = free_port()
    controller_url = f"http://127.0.0.1:{port}"
    with (
        alertmanager_server(
            tmp_path / "alertmanager", controller_url=controller_url, alert_token_file=tmp_path / "alert-token"
        ) as alertmanager,
        prometheus_server(
            tmp_path / "prometheus",
            controller_url=controller_url,
            token_file=tmp_path / "read-token",
            alertmanager_url=alertmanager.url,
            interval_s=1.0,
        ) as prometheus,
        local_stack(
            tmp_path,
            {"importer": "1.0"},
            TOKEN,
            controller_port=port,
            prometheus_url=prometheus.url,
            prometheus_scrape_interval_s=1.0,
            alert_token=ALERT_TOKEN,
            read_token=READ_TOKEN,
        ) as (url, router_url, _app),
    ):
        yield url, router_url, prometheus, alertmanager


@contextlib.contextmanager
def importer_load(router_url: str, seconds: float) -> Iterator[None]:
    stop = threading.Event()
    config = LoadConfig(
        importer=f"{router_url}/importer", rate=25, duration=seconds, mix={"importer": 1.0}, accounts=40
    )
    thread = threading.Thread(target=run, args=(config,), kwargs={"stop": stop})
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(60)


def create(controller_url: str, canary: str, metric: str, max_seconds: int = 120, min_seconds: int = 3) -> str:
    spec = SPEC.format(canary=canary, metric=metric, max_seconds=max_seconds, min_seconds=min_seconds)
    created = httpx.post(f"{controller_url}/api/rollouts", content=spec, headers=AUTH)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def wait_for(controller_url: str, rid: str, until: Any, seconds: float = 180) -> dict[str, Any]:
    return wait_for_rollout(controller_url, rid, until, AUTH, seconds)


def ended(r: dict[str, Any]) -> bool:
    return r["phase"] in ("rolled_back", "succeeded", "failed")


def promql(prometheus: LocalServer, query: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": query}).json()
    return list(answer["data"]["result"])


@pytest.mark.timeout(600)
def test_prometheus_judges_and_alertmanager_rolls_back(tmp_path):
    with monitored_stack(tmp_path) as (controller_url, router_url, prometheus, _am):
        # Prometheus found the controller, the router and the importer through /api/targets
        deadline = time.monotonic() + 30
        while {s["metric"].get("component") for s in promql(prometheus, "up == 1")} != {
            "controller",
            "router",
            "service",
        }:
            assert time.monotonic() < deadline, promql(prometheus, "up")
            time.sleep(0.5)

        with importer_load(router_url, 300):
            poll_until(router_saw(router_url, "importer", 20), 30, "the load reaches the router")
            # 1. the judge, reading Prometheus, rolls importer 1.1 back
            rid = create(controller_url, "1.1", ERRORS_FINE)
            done = wait_for(controller_url, rid, ended)
            assert (done["phase"], done["decided_by"]) == ("rolled_back", "judge"), done
            assert "canary is worse than stable" in done["reason"]
            canary = promql(prometheus, 'sum(router_errors_total{service="importer",track="canary",release="1.1"})')
            assert canary and float(canary[0]["value"][1]) >= 3  # the judge saw what Prometheus has

            # 2. an alert, through Alertmanager, rolls back what the judge would not
            # (a bake of 10 minutes: the judge neither fails nor passes it meanwhile)
            rid = create(controller_url, "1.1", LATENCY_ONLY, max_seconds=900, min_seconds=600)
            done = wait_for(controller_url, rid, ended, seconds=240)
            assert (done["phase"], done["decided_by"]) == ("rolled_back", "alert"), done
            assert done["reason"].startswith("alert CanaryErrorRatioAboveStable: importer 1.1 (canary) fails")
            assert steps_taken(done["decisions"]) == ["progressing", "rolling_back", "rolled_back"]


@pytest.mark.timeout(600)
def test_prometheus_down_holds_a_rollout_and_back_resumes_it(tmp_path):
    with monitored_stack(tmp_path) as (controller_url, router_url, prometheus, _am):
        with importer_load(router_url, 300):
            poll_until(router_saw(router_url, "importer", 20), 30, "the load reaches the router")
            rid = create(controller_url, "1.2", ERRORS, max_seconds=20, min_seconds=10)
            wait_for(controller_url, rid, lambda r: r["phase"] == "progressing")
            prometheus.stop()
            held = wait_for(controller_url, rid, lambda r: r["reason"].startswith("held:"), seconds=60)
            assert "metrics unavailable" in held["reason"] and "did not answer" in held["reason"]
            # the step's limit is 20 s: for longer than that it stays held, neither paused nor passed;
            # a property of every moment, so it is read as often as a tick (0.5 s) could change it
            past_the_limit = time.monotonic() + 22
            while time.monotonic() < past_the_limit:
                still = wait_for(controller_url, rid, lambda r: True)
                assert (still["phase"], still["reason"]) == ("progressing", held["reason"])
                time.sleep(0.2)
            prometheus.start()
            done = wait_for(controller_url, rid, ended)
        assert (done["phase"], done["decided_by"]) == ("succeeded", "controller"), done
        reasons = [d["reason"] for d in done["decisions"]]
        assert any(r.startswith("held no more after") for r in reasons), reasons
        assert not any(d["decided_by"] in ("timeout", "inconclusive") for d in done["decisions"])


@pytest.mark.timeout(600)
def test_a_late_failure_after_promotion_is_rolled_back_judging_from_prometheus(tmp_path):
    with (
        monitored_stack(tmp_path) as (controller_url, router_url, _prometheus, _am),
        SuppressedImports(f"{router_url}/importer") as traffic,
    ):
        poll_until(router_saw(router_url, "importer", 2 * BOOKS + 10), 60, "the imports reach the router")
        spec = LATE_SPEC + "  alerts: [OpensAcknowledgedWithoutRecording]\n"  # only the judge acts here
        rid = httpx.post(f"{controller_url}/api/rollouts", content=spec, headers=AUTH).json()["id"]
        watching = wait_for(controller_url, rid, lambda r: r["phase"] in ("watching", "rolled_back", "failed"))
        assert watching["phase"] == "watching", watching
        poll_until(lambda: time.time() >= watching["phase_since"] + FAULT_AFTER_S, 30, "the fault's onset")
        traffic.empty = True
        done = wait_for(controller_url, rid, ended, seconds=180)
    assert (done["phase"], done["decided_by"]) == ("rolled_back", "judge"), done
    assert "late failure after promotion" in done["reason"]
