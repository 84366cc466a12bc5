"""A real rollout for the dashboard's and the notifications' tests: the controller, the router and
the importer's releases as processes on 127.0.0.1, `canary load`'s traffic, and importer 1.1
(which fails imports that map an empty field) rolled back by the judge; for groups, a catalog with
a second service that runs the importer's code."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from canary.catalog.settings import SHIPPED
from canary.stack import local_stack
from canary.traffic.load import LoadConfig, run
from tests.test_end_to_end import SPEC  # one spec: importer at 50% then 75%, judged on errors

TOKEN = "dashboard-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENDED = {"rolled_back", "succeeded", "failed"}


@contextmanager
def stack(state_dir: Path, stable: dict[str, str] | None = None, **settings: Any) -> Iterator[tuple[str, str, Any]]:
    with local_stack(state_dir, stable or {"importer": "1.0"}, TOKEN, **settings) as running:
        yield running


@contextmanager
def load(router_url: str, seconds: float = 180, rate: float = 20, service: str = "importer") -> Iterator[None]:
    """Importer traffic (to ``service``, the importer or a copy of it) through the router in a thread,
    for at most ``seconds``: stopped and joined on exit (so by default until the rollout a test waits
    for has ended: at the importer's rate floor the judge needs 15-50 s to roll 1.1 back)."""
    config = LoadConfig(
        importer=f"{router_url}/{service}", rate=rate, duration=seconds, mix={"importer": 1.0}, accounts=40
    )
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(config, None, stop), daemon=True)
    thread.start()
    try:
        until(lambda: _router_requests(router_url, service) >= 10, 30, f"the load reaches the router's {service}")
        yield
    finally:
        stop.set()
        thread.join(60)


def _router_requests(router_url: str, service: str) -> int:
    rows = httpx.get(f"{router_url}/_router/stats").json()["counters"]
    return sum(r["requests"] for r in rows if r["service"] == service)


def catalog_with_a_copy(state_dir: Path, name: str) -> Path:
    """The shipped catalog's importer, and a second service ``name`` that runs the importer's code
    (its own processes, database and routes): two services for a group, at the cost of one."""
    catalog = state_dir / "catalog"
    catalog.mkdir()
    importer = (SHIPPED / "importer.yaml").read_text()
    (catalog / "importer.yaml").write_text(importer)
    copy = importer.replace("name: importer", f"name: {name}").replace("httproute: importer", f"httproute: {name}")
    (catalog / f"{name}.yaml").write_text(copy)
    return catalog


def until(condition: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)
    return value


def create(controller_url: str, canary: str) -> str:
    created = httpx.post(f"{controller_url}/api/rollouts", content=SPEC.format(canary=canary), headers=AUTH)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def rollout(controller_url: str, rid: str) -> dict[str, Any]:
    r: dict[str, Any] = httpx.get(f"{controller_url}/api/rollouts/{rid}", headers=AUTH).json()
    return r


def wait_phase(controller_url: str, rid: str, phases: set[str], seconds: float = 120) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        r = rollout(controller_url, rid)
        return r if r["phase"] in phases else None

    return dict(until(reached, seconds, f"rollout {rid[:8]} reaches {phases}"))
