"""Each release of the incident under the same `canary load`, no router: what consumers and services saw.

Three runs on the same traffic (same seed, rate and duration): the stable releases (the reference),
the faulty releases of 13 April 2022, and the reworked ones.  For each service: requests, errors by
status, and the fault's own figure (imports failed, opens unaccounted, wrong images).  ``ratio``
fields compare each run's consumer-visible error rate with the stable reference's.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import report
from canary.platforms.processes import start_service, wait_ready
from canary.traffic.load import LoadConfig, run

RUNS = {
    "stable": {"importer": "1.0", "opens": "1.0", "resizer": "1.0"},
    "faulty": {"importer": "1.1", "opens": "1.1", "resizer": "2.0"},
    "reworked": {"importer": "1.2", "opens": "1.2", "resizer": "2.1"},
}
RATE, DURATION, ADMIN = 60.0, 30.0, "bench-admin"


def one_run(releases: dict[str, str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        procs = {}
        for name, release in [
            ("importer", releases["importer"]),
            ("opens", releases["opens"]),
            ("opens-processor", releases["opens"]),
            ("resizer", releases["resizer"]),
        ]:
            db = "opens" if name.startswith("opens") else name
            procs[name] = start_service(
                name, release, db_url=f"sqlite:///{tmp / db}.db", state_dir=tmp, env={"CANARY_ADMIN_TOKEN": ADMIN}
            )
        try:
            for p in procs.values():
                wait_ready(p)
            load = run(
                LoadConfig(
                    importer=procs["importer"].url,
                    opens=procs["opens"].url,
                    resizer=procs["resizer"].url,
                    rate=RATE,
                    duration=DURATION,
                    admin_token=ADMIN,
                )
            )
            for _ in range(100):
                stats = httpx.get(f"{procs['opens'].url}/stats").json()
                if stats["events_pending"] == 0:
                    break
                time.sleep(0.1)
            time.sleep(1.0)  # idle now: a healthy pool has every connection back
            pool = _gauge(httpx.get(f"{procs['resizer'].url}/metrics").text, "db_pool_connections_checked_out")
        finally:
            for p in procs.values():
                p.stop()
    s = load["services"]
    return {
        "releases": releases,
        "schedule": load["schedule"],
        "importer": {k: s["importer"][k] for k in ("requests", "errors", "error_rate", "imports_failed")},
        "opens": {
            **{k: s["opens"][k] for k in ("requests", "errors", "valid_hits", "blank_agent_hits")},
            "events_stored": stats["events_stored"],
            "opens_unaccounted": stats["unaccounted"],
        },
        "resizer": {
            **{k: s["resizer"][k] for k in ("requests", "errors", "error_rate", "wrong_images", "latency_ms")},
            "db_connections_held_while_idle": pool,
        },
    }


def _gauge(text: str, name: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(name + "{"))
    return float(line.rsplit(" ", 1)[1])


def main() -> None:
    results = {name: one_run(releases) for name, releases in RUNS.items()}
    ref = results["stable"]
    for name in ("faulty", "reworked"):
        for service in ("importer", "resizer"):
            base = ref[service]["error_rate"]
            results[name][service]["error_rate_ratio"] = (
                None if base == 0 else round(results[name][service]["error_rate"] / base, 2)
            )
    report({"name": "releases", "rate": RATE, "duration_s": DURATION, "runs": results})


if __name__ == "__main__":
    main()
