"""Bring your own service: from an empty catalog file to a first rollout rolled back by the judge,
with the commands a user types (``canary lint``, ``canary up --catalog``, ``canary release``), as
processes, for a plain standard-library service (tests/canary/catalog/plain_service.py).

Figures: the commands typed, seconds from the first command to ``canary up`` routing the service,
and to the judge's rollback; the reference is the service alone started by hand until it answers
(``ratio``: the whole onboarding against that).  Traffic: one client through the router.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from benchmarks.common import report, wait_until_ended
from canary.platforms.processes import free_port
from canary.stack import admin_token

ROOT = Path(__file__).resolve().parents[1]
ENTRY = """apiVersion: releasewarden/v1
kind: Service
name: hello
stable: "1"
releases: ["1", "2", "3"]
local:
  command: [python, "{catalog_dir}/app.py", --release, "{release}", --port, "{port}"]
  health_path: /healthz
defaults:
  steps:
    - {weight: 50, min_requests: 40, min_seconds: 1, max_seconds: 90}
  metrics:
    - {name: errors, kind: errors, rate_floor: 0.1}
"""
CANARY = [sys.executable, "-m", "canary.cli"]


def poll(condition, seconds: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while True:
        try:
            value = condition()
            if value:
                return value
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def service_alone(tmp: Path) -> float:
    port = free_port()
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(tmp / "app.py"), "--release", "1", "--port", str(port)])
    try:
        poll(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200, 30, "the service alone")
        return time.monotonic() - started
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        shutil.copy(ROOT / "tests/canary/catalog/plain_service.py", tmp / "app.py")
        reference = service_alone(tmp)
        catalog, state = tmp / "hello.yaml", tmp / "state"
        catalog.write_text(ENTRY)
        controller_port, router_port = free_port(), free_port()
        controller, router = f"http://127.0.0.1:{controller_port}", f"http://127.0.0.1:{router_port}"
        started = time.monotonic()
        subprocess.run([*CANARY, "lint", str(catalog)], check=True, capture_output=True, cwd=tmp)
        up = subprocess.Popen(
            [*CANARY, "up", "--catalog", str(catalog), "--state-dir", str(state),
             "--controller-port", str(controller_port), "--router-port", str(router_port)],
            cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        stop = threading.Event()
        try:
            poll(lambda: httpx.get(f"{router}/hello/healthz").status_code == 200, 60, "canary up")
            routed = time.monotonic() - started

            def drive() -> None:
                with httpx.Client(timeout=5) as client:
                    for n in itertools.count():
                        if stop.is_set():
                            return
                        with contextlib.suppress(httpx.HTTPError):
                            client.get(f"{router}/hello/", headers={"X-Account-Id": f"a{n % 997}"})

            threading.Thread(target=drive, daemon=True).start()
            out = subprocess.run(
                [*CANARY, "release", "hello", "--to", "2", "--catalog", str(catalog),
                 "--controller", controller, "--state-dir", str(state)],
                check=True, capture_output=True, text=True, cwd=tmp,
            )  # fmt: skip
            rid = out.stdout.split()[1].rstrip(":")
            auth = {"Authorization": f"Bearer {admin_token(state)}"}  # the token `canary up` wrote
            final = wait_until_ended(controller, rid, auth, 120)
            rolled_back = time.monotonic() - started
        finally:
            stop.set()
            up.terminate()
            up.wait(60)
    total = rolled_back
    report(
        {
            "benchmark": "onboarding",
            "commands": 3,
            "outcome": f"{final['phase']} by {final['decided_by']}",
            "seconds_to_up": round(routed, 2),
            "seconds_to_rolled_back": round(total, 2),
            "service_alone_ready_s": round(reference, 3),
            "ratio": round(total / reference, 1),
            "note": "from `canary lint` on a new catalog file to the judge's rollback of release 2",
        }
    )


if __name__ == "__main__":
    main()
