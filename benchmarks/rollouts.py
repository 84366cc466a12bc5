"""Each faulty release of the incident at 5% canary weight under `canary load`, with the controller.

For importer 1.1, opens 1.1 and resizer 2.0 (no mirror phase here: the live-traffic path): time
from the canary getting traffic to the rollback, requests the canary failed (router counts),
errors consumers saw (`canary load`), and for opens, opens lost after the rollback.  Reference,
same run: the incident's own times to rollback (10, 30 and 74 minutes) as ``ratio`` = ours / theirs.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import report, wait_until_ended
from canary.stack import local_stack, service_token
from canary.traffic.load import LoadConfig, run

TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
INCIDENT_S = {"importer": 600, "opens": 1800, "resizer": 4440}
SPEC = """
apiVersion: releasewarden/v1
kind: Rollout
spec:
  service: {service}
  stable: "1.0"
  canary: "{canary}"
  steps:
    - {{weight: 5, min_requests: 100, min_seconds: 30, max_seconds: 300}}
  metrics:
{metrics}
  sticky: {{header: X-Account-Id}}
"""
CASES: dict[str, dict[str, Any]] = {
    "importer": {
        "canary": "1.1",
        "metrics": "    - {name: errors, kind: errors}",
        "load": {"rate": 25, "mix": {"importer": 1.0}, "accounts": 100},
    },
    "opens": {
        "canary": "1.1",
        "metrics": "    - {name: lost-opens, kind: conservation}",
        "load": {"rate": 100, "mix": {"opens": 1.0}, "accounts": 100, "pool": 50},
    },
    "resizer": {
        "canary": "2.0",
        "metrics": "    - {name: errors, kind: errors}",
        "load": {"rate": 5, "mix": {"resizer": 1.0}, "accounts": 200},
    },
}


def one(service: str, case: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d, local_stack(Path(d), {service: "1.0"}, TOKEN) as (ctl, router, app):
        reports: list[dict[str, Any]] = []
        load = threading.Thread(
            target=lambda: reports.append(
                run(
                    LoadConfig(
                        **{service: f"{router}/{service}"},
                        duration=60,
                        admin_token=service_token(Path(d), "opens"),  # what mints the opens' tracking tokens
                        **case["load"],
                    )
                )
            )
        )
        load.start()
        time.sleep(3)
        spec = SPEC.format(service=service, canary=case["canary"], metrics=case["metrics"])
        rid = httpx.post(f"{ctl}/api/rollouts", content=spec, headers=AUTH).json()["id"]
        r = wait_until_ended(ctl, rid, AUTH, 60)
        load.join(200)
        stats = httpx.get(f"{router}/_router/stats").json()["counters"]
        at = {d["phase_to"]: d["at"] for d in r["decisions"]}
        out: dict[str, Any] = {
            "outcome": r["phase"],
            "decided_by": r["decided_by"],
            "reason": r["reason"],
            "rollback_s": round(at["rolled_back"] - at["progressing"], 1) if "rolled_back" in at else None,
            "canary_failed_requests": sum(x["errors"] for x in stats if x["release"] == case["canary"]),
            "canary_requests": sum(x["requests"] for x in stats if x["release"] == case["canary"]),
            "consumer_errors": sum(reports[0]["services"][service]["errors"].values()),
        }
        if service == "opens":
            url = app.state.controller.upstreams[("opens", "1.0")]
            for _ in range(100):
                s = httpx.get(f"{url}/stats").json()
                if not s["events_pending"]:
                    break
                time.sleep(0.3)
            seen = reports[0]["services"]["opens"]
            out["opens_lost"] = seen["valid_hits"] - s["opens_recorded"] - s["events_filtered"]
        if out["rollback_s"] is not None:
            out["ratio"] = round(out["rollback_s"] / INCIDENT_S[service], 4)
        return out


def main() -> None:
    import sys

    chosen = sys.argv[1:] or list(CASES)
    results = {service: one(service, CASES[service]) for service in chosen}
    report({"name": "rollouts", "canary_weight_percent": 5, "incident_rollback_s": INCIDENT_S, "results": results})


if __name__ == "__main__":
    main()
