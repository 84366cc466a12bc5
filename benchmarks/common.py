"""Helpers shared by the benchmarks: a real server on 127.0.0.1 in a thread, timing, JSON output."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from canary.platforms.processes import start_service, wait_ready


@contextlib.contextmanager
def service_process(
    name: str, db_url: str, state_dir: Path, release: str = "1.0", env: dict[str, str] | None = None
) -> Iterator[str]:
    """The service as its own process (as users run it), so the benchmark client has its own GIL;
    ``env``: its settings (``CANARY_*``: it inherits none of ours)."""
    proc = start_service(name, release, db_url=db_url, state_dir=state_dir, env=env)
    try:
        wait_ready(proc)
        yield proc.url
    finally:
        proc.stop()


def best_of(runs: int, fn: Any) -> float:
    """The fastest of ``runs`` timings of ``fn()`` in seconds (least disturbed by a noisy machine)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def report(result: dict[str, Any]) -> None:
    print(json.dumps(result, indent=2))


def wait_until_ended(controller_url: str, rollout_id: str, headers: dict[str, str], seconds: float) -> dict[str, Any]:
    """The rollout as the controller shows it once it has ended, or when ``seconds`` are up."""
    deadline = time.monotonic() + seconds
    while True:
        r: dict[str, Any] = httpx.get(f"{controller_url}/api/rollouts/{rollout_id}", headers=headers).json()
        if r["phase"] in ("rolled_back", "succeeded", "failed") or time.monotonic() > deadline:
            return r
        time.sleep(0.3)
