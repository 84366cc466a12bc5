"""A real rollout for the dashboard's and the notifications' tests: the controller, the router and
the importer's releases as processes on 127.0.0.1, `canary load`'s traffic, and importer 1.1
(which fails imports that map an empty field) rolled back by the judge."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from canary.stack import local_stack
from canary.traffic.load import LoadConfig, run
from tests.test_end_to_end import SPEC  # one spec: importer at 50% then 75%, judged on errors

TOKEN = "dashboard-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENDED = {"rolled_back", "succeeded", "failed"}


@contextmanager
def stack(state_dir: Path, **settings: Any) -> Iterator[tuple[str, str, Any]]:
    with local_stack(state_dir, {"importer": "1.0"}, TOKEN, **settings) as running:
        yield running


@contextmanager
def load(router_url: str, seconds: float = 30, rate: float = 20) -> Iterator[None]:
    """Importer traffic through the router in a thread, for ``seconds`` (joined on exit)."""
    config = LoadConfig(
        importer=f"{router_url}/importer", rate=rate, duration=seconds, mix={"importer": 1.0}, accounts=40
    )
    thread = threading.Thread(target=run, args=(config,), daemon=True)
    thread.start()
    until(lambda: _router_requests(router_url) >= 10, 30, "the load reaches the router")
    try:
        yield
    finally:
        thread.join(seconds + 30)


def _router_requests(router_url: str) -> int:
    rows = httpx.get(f"{router_url}/_router/stats").json()["counters"]
    return sum(r["requests"] for r in rows if r["service"] == "importer")


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
