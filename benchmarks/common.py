"""Helpers shared by the benchmarks: a real server on 127.0.0.1 in a thread, timing, JSON output."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette

from canary.platforms.processes import start_service, wait_ready


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def serve(app: Starlette) -> Iterator[str]:
    """Run ``app`` under uvicorn on 127.0.0.1 in a background thread; yield its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


@contextlib.contextmanager
def service_process(name: str, db_url: str, state_dir: Path, release: str = "1.0") -> Iterator[str]:
    """The service as its own process (as users run it), so the benchmark client has its own GIL."""
    proc = start_service(name, release, db_url=db_url, state_dir=state_dir)
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
