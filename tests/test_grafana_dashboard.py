"""manifests/grafana/releasewarden.json: the JSON parses, every panel is well formed, and every
panel's PromQL (template variables substituted) runs against a real Prometheus loaded with the
project's rules, scraping real processes: the controller, the router, importer 1.0 and 1.1 (a
rollout in progress, its canary failing some imports, so that errors and failovers happen), the
open tracker and its processor, under `canary load`.

Every query must be valid and return series, except those named in NO_DATA_HERE (with why): the
metric exists only once the thing it counts happens, and nothing in this run makes it happen.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from canary.local_monitoring import MANIFESTS, prometheus_server
from canary.platforms.processes import free_port
from canary.stack import local_stack, service_token
from canary.traffic.load import LoadConfig
from tests.conftest import load_in_background, need_monitoring

DASHBOARD = MANIFESTS / "grafana" / "releasewarden.json"
TOKEN = "grafana-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NO_DATA_HERE = {
    "Mirrored answers that differ": "no rollout mirrors traffic in this run (a mirror phase makes the series)",
    "Database errors per second": "no request met an unavailable database (resizer 2.0 under bursts does)",
}
# A bake the judge neither passes nor fails while the test runs: the rollout stays in progress.
SPEC = """
apiVersion: releasewarden/v1
kind: Rollout
spec:
  service: importer
  stable: "1.0"
  canary: "1.1"
  steps:
    - {weight: 50, min_requests: 20, min_seconds: 600, max_seconds: 900}
  metrics:
    - {name: slow, kind: latency, threshold_ms: 10000, rate_floor: 0.2}
  sticky: {header: X-Account-Id}
"""


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expression) for every target of every panel, rows included."""
    out = []
    for panel in board["panels"]:
        for p in [panel, *panel.get("panels", [])]:
            for target in p.get("targets", []):
                out.append((p["title"], target["expr"]))
    return out


def substitute(expr: str, service: str) -> str:
    """What Grafana sends: the service variable as a regex, the rate interval as a window."""
    return expr.replace("$service", service).replace("$__rate_interval", "1m")


def test_the_dashboard_is_well_formed():
    board = dashboard()
    assert board["uid"] == "releasewarden" and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["service"]["includeAll"] and variables["service"]["allValue"] == ".*"
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    titles = [p["title"] for p in board["panels"] if p["type"] != "row"]
    for needed in ("Error ratio", "Latency (p50, p95)", "Failovers per second", "Held seconds"):
        assert needed in titles
    assert any("weight" in t.lower() for t in titles) and any("phase" in t.lower() for t in titles)
    for title, expr in queries(board):
        assert expr.strip(), title
    for panel in board["panels"]:  # no overlapping panels: each grid cell is used once
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}" and panel["description"], panel["title"]
    cells = [
        (x, y)
        for p in board["panels"]
        for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
        for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])
    ]
    assert len(cells) == len(set(cells)) and all(x < 24 for x, _ in cells)
    # every recording rule of the project is on the board
    rules = (MANIFESTS / "prometheus" / "rules" / "releasewarden.rules.yml").read_text()
    recorded = [line.split("record:")[1].strip() for line in rules.splitlines() if "record:" in line]
    exprs = " ".join(e for _, e in queries(board))
    assert recorded and all(r in exprs for r in recorded if r != "service_track:router_errors:rate1m")


@contextlib.contextmanager
def scraped_stack(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    need_monitoring()
    port = free_port()
    controller_url = f"http://127.0.0.1:{port}"
    with (
        # no read token set: Prometheus on 127.0.0.1 lists its targets with no token at all
        prometheus_server(
            tmp_path / "prometheus", controller_url=controller_url, token_file=None, interval_s=1.0
        ) as prometheus,
        local_stack(tmp_path, {"importer": "1.0", "opens": "1.0"}, TOKEN, controller_port=port) as (url, router, _),
    ):
        yield url, router, prometheus.url


def load(router_url: str, opens_token: str) -> contextlib.AbstractContextManager[None]:
    """Traffic through the router; ``opens_token`` is the stack's service token (it mints tracking tokens)."""
    config = LoadConfig(
        importer=f"{router_url}/importer",
        opens=f"{router_url}/opens",
        rate=20,
        duration=600,
        mix={"importer": 0.4, "opens": 0.6},
        accounts=20,
        admin_token=opens_token,
    )
    return load_in_background(config)


def query(prometheus_url: str, expr: str) -> dict[str, Any]:
    return dict(httpx.get(f"{prometheus_url}/api/v1/query", params={"query": expr}, timeout=10).json())


@pytest.mark.timeout(600)
def test_every_panel_query_runs_against_prometheus_and_returns_data(tmp_path):
    board = dashboard()
    with (
        scraped_stack(tmp_path) as (controller_url, router_url, prometheus_url),
        load(router_url, service_token(tmp_path, "opens")),
    ):
        created = httpx.post(f"{controller_url}/api/rollouts", content=SPEC, headers=AUTH)
        assert created.status_code == 201, created.text
        want = {(title, substitute(expr, s)) for title, expr in queries(board) for s in (".*", "importer")}
        for title, expr in sorted(want):  # every query is valid PromQL, data or not
            answer = query(prometheus_url, expr)
            assert answer["status"] == "success", f"{title}: {expr}: {answer}"
        waiting = {q for q in want if q[0] not in NO_DATA_HERE}

        def every_panel_has_data() -> bool:
            for title, expr in sorted(waiting):  # only those still without series are asked again
                answer = query(prometheus_url, expr)
                assert answer["status"] == "success", f"{title}: {expr}: {answer}"
                if answer["data"]["result"]:
                    waiting.discard((title, expr))
            services = httpx.get(
                f"{prometheus_url}/api/v1/label/service/values", params={"match[]": "router_requests_total"}
            ).json()["data"]
            return not waiting and {"importer", "opens"} <= set(services)

        deadline = time.monotonic() + 240
        while not every_panel_has_data():  # polled: series appear as Prometheus scrapes (every second)
            assert time.monotonic() < deadline, "no data for:\n" + "\n".join(f"{t}: {e}" for t, e in sorted(waiting))
            time.sleep(0.2)
        # the canary really took traffic and failed some of it: the board shows the rollout, not zeros
        share = query(prometheus_url, substitute(next(e for t, e in queries(board) if "weight" in t), "importer"))
        assert 5 < float(share["data"]["result"][0]["value"][1]) < 95
        phase = query(prometheus_url, 'canary_rollout_active{service="importer"}')["data"]["result"]
        assert [r["metric"]["phase"] for r in phase] == ["progressing"]
