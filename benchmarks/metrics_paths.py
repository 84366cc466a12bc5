"""Time to roll back importer 1.1 by each metrics path, under `canary load` on 127.0.0.1.

- ``builtin``: the judge reads the router's own counters (the embedded default; the reference);
- ``prometheus_1s`` / ``prometheus_5s``: the judge reads a real Prometheus that scrapes every 1 s
  or 5 s (the provider waits a scrape interval and a second before judging a bin);
- ``alertmanager``: the judge cannot fail the canary (its only metric is latency with a 10 s
  threshold); Prometheus's CanaryErrorRatioAboveStable alert (for: 30s) goes through a real
  Alertmanager to the controller's webhook.

Times are from the canary's first request (the router's counters, polled every 0.1 s) to the
controller's decision to roll back and to the rollback done (the router confirms weight 0); for
the alert path also from the moment Prometheus shows the alert firing (polled every 0.2 s).
``ratio``: each path's median time to rolled back over the builtin provider's, measured in the
same run.  Two runs per path; medians reported.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import report, wait_until_ended
from canary.local_monitoring import alertmanager_server, prometheus_server
from canary.platforms.processes import free_port
from canary.stack import local_stack
from canary.traffic.load import LoadConfig, run

TOKEN, ALERT_TOKEN = "bench-token", "bench-alert-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RUNS = 2
SPEC = """
apiVersion: releasewarden/v1
kind: Rollout
spec:
  service: importer
  stable: "1.0"
  canary: "1.1"
  steps:
    - {{weight: 25, min_requests: 100, min_seconds: {min_seconds}, max_seconds: 900}}
  metrics:
    - {metric}
  sticky: {{header: X-Account-Id}}
"""
ERRORS = "{name: errors, kind: errors}"
LATENCY_ONLY = "{name: slow, kind: latency, threshold_ms: 10000}"


@contextlib.contextmanager
def stack(workdir: Path, scrape_s: float | None) -> Iterator[tuple[str, str, str | None]]:
    """(controller, router, Prometheus or None): the embedded default, or with Prometheus and
    Alertmanager as `canary up --prometheus` runs them."""
    if scrape_s is None:
        with local_stack(workdir, {"importer": "1.0"}, TOKEN) as (ctl, router, _app):
            yield ctl, router, None
        return
    (workdir / "token").write_text(TOKEN)
    (workdir / "alert-token").write_text(ALERT_TOKEN)
    port = free_port()
    ctl_url = f"http://127.0.0.1:{port}"
    with (
        alertmanager_server(workdir / "am", controller_url=ctl_url, alert_token_file=workdir / "alert-token") as am,
        prometheus_server(
            workdir / "prom",
            controller_url=ctl_url,
            token_file=workdir / "token",
            alertmanager_url=am.url,
            interval_s=scrape_s,
        ) as prom,
        local_stack(
            workdir,
            {"importer": "1.0"},
            TOKEN,
            controller_port=port,
            prometheus_url=prom.url,
            prometheus_scrape_interval_s=scrape_s,
            alert_token=ALERT_TOKEN,
        ) as (ctl, router, _app),
    ):
        yield ctl, router, prom.url


def first_seen(stop: threading.Event, probe: Any, interval_s: float) -> dict[str, float]:
    """Poll ``probe()`` until it is true; the time it first was, in ``out["at"]``."""
    out: dict[str, float] = {}

    def loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                if probe():
                    out["at"] = time.time()
                    return
            time.sleep(interval_s)

    threading.Thread(target=loop, daemon=True).start()
    return out


def one(path: str) -> dict[str, Any]:
    scrape_s = {"builtin": None, "prometheus_1s": 1.0, "prometheus_5s": 5.0, "alertmanager": 1.0}[path]
    with tempfile.TemporaryDirectory() as d, stack(Path(d), scrape_s) as (ctl, router, prom):
        stop = threading.Event()
        load = threading.Thread(
            target=run,
            args=(
                LoadConfig(importer=f"{router}/importer", rate=25, duration=600, mix={"importer": 1.0}, accounts=100),
            ),
            kwargs={"stop": stop},
        )
        load.start()
        try:
            time.sleep(3 + (scrape_s or 0) * 2)  # stable's counters exist, and Prometheus has them
            canary_seen = first_seen(
                stop,
                lambda: any(
                    c["release"] == "1.1" and c["requests"]
                    for c in httpx.get(f"{router}/_router/stats").json()["counters"]
                ),
                0.1,
            )
            firing = first_seen(
                stop,
                lambda: (
                    prom is not None
                    and any(
                        a["labels"]["alertname"] == "CanaryErrorRatioAboveStable" and a["state"] == "firing"
                        for a in httpx.get(f"{prom}/api/v1/alerts").json()["data"]["alerts"]
                    )
                ),
                0.2,
            )
            alert_path = path == "alertmanager"  # a long bake: the judge neither fails nor passes it meanwhile
            spec = SPEC.format(metric=LATENCY_ONLY if alert_path else ERRORS, min_seconds=600 if alert_path else 30)
            rid = httpx.post(f"{ctl}/api/rollouts", content=spec, headers=AUTH).json()["id"]
            r = wait_until_ended(ctl, rid, AUTH, 300)
        finally:
            stop.set()
            load.join(60)
    at = {d["phase_to"]: d["at"] for d in r["decisions"]}
    start = canary_seen.get("at")
    out: dict[str, Any] = {"outcome": r["phase"], "decided_by": r["decided_by"]}
    if start and "rolled_back" in at:
        out["decide_s"] = round(at["rolling_back"] - start, 2)
        out["rolled_back_s"] = round(at["rolled_back"] - start, 2)
    if path == "alertmanager" and "at" in firing and "rolled_back" in at:
        out["alert_firing_after_s"] = round(firing["at"] - (start or firing["at"]), 2)
        out["alert_to_decide_s"] = round(at["rolling_back"] - firing["at"], 2)
        out["alert_to_rolled_back_s"] = round(at["rolled_back"] - firing["at"], 2)
    return out


def main() -> None:
    paths = sys.argv[1:] or ["builtin", "prometheus_1s", "prometheus_5s", "alertmanager"]
    results: dict[str, Any] = {}
    for path in paths:
        runs = [one(path) for _ in range(RUNS)]
        summary: dict[str, Any] = {"runs": runs}
        for key in ("decide_s", "rolled_back_s", "alert_firing_after_s", "alert_to_decide_s", "alert_to_rolled_back_s"):
            values = [r[key] for r in runs if key in r]
            if values:
                summary[key] = round(statistics.median(values), 2)
        results[path] = summary
        print(f"{path}: {summary}", file=sys.stderr, flush=True)
    reference = results.get("builtin", {}).get("rolled_back_s")
    if reference:
        for summary in results.values():
            if "rolled_back_s" in summary:
                summary["ratio"] = round(summary["rolled_back_s"] / reference, 2)
    report({"name": "metrics_paths", "canary_weight_percent": 25, "import_rate_per_s": 25, "results": results})


if __name__ == "__main__":
    main()
