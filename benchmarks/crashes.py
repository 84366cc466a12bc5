"""What a crash costs consumers: SIGKILL of the controller, of `canary up` and of its router, under
`canary load` at 40 req/s through the router.

`python -m benchmarks.crashes`.  One `canary up` on a temporary state directory; in each phase
(stable only, progressing with a canary, watching after a promotion) the load runs, the acting
controller process (the pid in STATE/controller.lock) is killed outright, its warm standby takes
over, and we measure: consumer errors from just before the kill until 2 s after the new controller
acts; the time until the controller's API answers again, until the new controller acts (a tick
holding the lease after the kill), and until its route table and the router's answers match the
stored phase; the CPU seconds the standby used from the kill until it acted (its work, whereas the
seconds depend on how busy the machine is: the load average is given beside them); probes of the
controller's URL refused during the takeover; whether the releases are the same processes
(adopted); the CPU an idle standby used over a few seconds.  Then `canary up` itself is killed and
started again (the acting controller runs on and is adopted), and the router is killed: consumer
errors, and the time until its replacement answers.  References measured in the same run: a cold
`canary up` (to a routed world, and its CPU seconds) and a cold router process start.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import report
from benchmarks.up_stack import RATE, Load, Stack, until
from canary.controller.lease_holder import lock_holder_pid
from canary.platforms.processes import free_port
from core.routes import ServiceRoute

SLOW = "  steps:\n    - {weight: 50, min_requests: 100000, min_seconds: 3600, max_seconds: 7200}\n"
SPEC = (
    "apiVersion: releasewarden/v1\nkind: Rollout\nspec:\n  service: importer\n  stable: '1.0'\n  canary: '1.2'\n"
    + SLOW
    + "  watch: {seconds: 3600}\n  metrics:\n    - {name: errors, kind: errors}\n"
)


def kill_controller(stack: Stack, phase: Callable[[ServiceRoute], bool]) -> dict[str, Any]:
    """SIGKILL of the acting controller under load, its warm standby taking over; sampled every
    50 ms until the new controller has acted and its table and the router's match the stored phase,
    also counting the time the router served a table contrary to the phase (a controller publishing
    less than the phase needs) and the probes of the controller's URL that were refused."""
    before = stack.pids()
    until(lambda: len(stack.controllers()) == 2)
    acting = lock_holder_pid(stack.state)
    assert acting is not None
    (standby,) = set(stack.controllers()) - {acting}
    warm_s = until(lambda: stack.idle(standby))  # its imports done: it waits on the lock
    idle_from = stack.cpu_seconds(standby)
    time.sleep(3.0)  # what an idle standby costs: its CPU over these seconds
    idle_cpu_s = stack.cpu_seconds(standby) - idle_from
    load = Load(stack)
    until(load.running)
    standby_cpu = stack.cpu_seconds(standby)
    killed, killed_wall = time.monotonic(), time.time()
    os.kill(acting, signal.SIGKILL)
    api_s = acted_s = None
    acted_cpu_s, refused = 0.0, 0
    load_average = os.getloadavg()[0]  # how busy the machine was: the takeover's CPU seconds are its work
    contrary_s, last = 0.0, time.monotonic()
    while True:
        now = time.monotonic()
        if not stack.router_serves(phase):
            contrary_s += now - last
        last = now
        refused += stack.refused()
        # each time is taken when the answer came: a request made during the takeover waits on the
        # listening socket until the standby serves it
        if api_s is None and stack.api_answers():
            api_s = time.monotonic() - killed
        if api_s is not None and acted_s is None and stack.acted(killed_wall):
            acted_s = time.monotonic() - killed
            acted_cpu_s = stack.cpu_seconds(standby) - standby_cpu
        if acted_s is not None and stack.world_matches(phase):
            world_s = time.monotonic() - killed
            break
        if now - killed > 180:
            raise TimeoutError("the standby never matched the stored phase")
        time.sleep(0.05)
    time.sleep(2.0)  # keep the load on a while after the new controller acts
    return {
        **load.stop(),
        "acting_is_the_standby": lock_holder_pid(stack.state) == standby,
        "api_answers_s": round(api_s or 0.0, 2),
        "resume_acting_s": round(acted_s, 2),
        "resume_acting_cpu_s": round(acted_cpu_s, 2),
        "idle_standby_cpu_s_per_s": round(idle_cpu_s / 3.0, 4),
        "standby_warm_after_s": round(warm_s, 1),
        "load_average_1m": round(load_average, 1),
        "world_matches_s": round(world_s, 2),
        "controller_url_refused": refused,
        "router_served_contrary_table_s": round(contrary_s, 2),
        "releases_adopted": bool(before) and before <= stack.pids(),
    }


def kill_canary_up(stack: Stack, phase: Callable[[ServiceRoute], bool]) -> dict[str, Any]:
    """SIGKILL of `canary up` itself under load and an immediate restart: the acting controller runs
    on (adopted by the new `canary up`, which starts a standby beside it)."""
    assert stack.proc is not None
    until(lambda: len(stack.controllers()) == 2)
    acting = lock_holder_pid(stack.state)
    load = Load(stack)
    until(load.running)
    killed = time.monotonic()
    stack.proc.kill()
    stack.proc.wait()
    stack.spawn()
    refused = 0
    while not (stack.world_matches(phase) and len(stack.controllers()) == 2 and stack.api_answers()):
        refused += stack.refused()
        if time.monotonic() - killed > 180:
            raise TimeoutError("the new canary up never had a standby again")
        time.sleep(0.05)
    standby_again_s = time.monotonic() - killed
    time.sleep(2.0)
    return {
        **load.stop(),
        "acting_controller_kept": lock_holder_pid(stack.state) == acting,
        "standby_again_s": round(standby_again_s, 2),
        "controller_url_refused": refused,
    }


def kill_router(stack: Stack) -> dict[str, Any]:
    load = Load(stack)
    until(load.running)
    pid = json.loads((stack.state / "router.json").read_text())["pid"]
    died = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    until(lambda: (r := stack.get(f"{stack.router}/importer/healthz")) is not None and r.status_code == 200, step=0.005)
    gap = time.monotonic() - died
    time.sleep(2.0)  # and a while after it answers again
    return {
        **load.stop(),
        "answers_again_s": round(gap, 3),
        "errors_expected_at_rate": round(RATE * gap, 1),
    }


def cold_router_start(state: Path) -> float:
    table = state / "cold-table.json"
    table.write_text(json.dumps({"version": 1, "services": {}}))
    port = free_port()
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "canary.router", "--table", str(table), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        until(lambda: (r := httpx_get(f"http://127.0.0.1:{port}/healthz")) is not None and r.status_code == 200)
        return time.monotonic() - start
    finally:
        proc.terminate()
        proc.wait(10)


def httpx_get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        stack = Stack(state)
        started = time.monotonic()
        stack.spawn()
        try:
            until(stack.api_answers)
            until(lambda: stack.releases_answering() == {"1.0"})
            cold_up_s = time.monotonic() - started
            acting = lock_holder_pid(state)  # the controller runs in a process of its own, beside `canary up`
            cold_up_cpu_s = stack.cpu_seconds() + (stack.cpu_seconds(acting) if acting else 0.0)
            phases: dict[str, Any] = {}

            def stable_only(r: ServiceRoute) -> bool:
                return r.threshold == 0 and r.releases == {"stable": "1.0"}

            until(lambda: stack.world_matches(stable_only))
            phases["stable_only"] = kill_controller(stack, stable_only)
            (state / "slow.yaml").write_text(SPEC)
            out = subprocess.run(
                [sys.executable, "-m", "canary.cli", "release", "importer", "--to", "1.2", "--spec",
                 str(state / "slow.yaml"), "--controller", stack.controller, "--state-dir", str(state)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            rid = out.stdout.split()[1].rstrip(":")

            def progressing(r: ServiceRoute) -> bool:
                return r.threshold == 5000 and r.releases == {"stable": "1.0", "canary": "1.2"}

            until(lambda: stack.world_matches(progressing))
            phases["progressing"] = kill_controller(stack, progressing)
            until(lambda: httpx.post(f"{stack.controller}/api/rollouts/{rid}/promote", headers=stack.auth()).is_success)

            def watching(r: ServiceRoute) -> bool:  # promoted: 1.2 is stable (the old one warm, maybe a holdback)
                return r.releases.get("stable") == "1.2"

            until(lambda: stack.world_matches(watching))
            phases["watching"] = kill_controller(stack, watching)
            canary_up = kill_canary_up(stack, watching)
            router = kill_router(stack)
            cold_router_s = cold_router_start(state)
        finally:
            stack.stop()
    resume = max(p["resume_acting_s"] for p in phases.values())
    resume_cpu = max(p["resume_acting_cpu_s"] for p in phases.values())
    report(
        {
            "benchmark": "crashes",
            "rate": RATE,
            "controller_kill": phases,
            "consumer_errors_across_controller_kills": sum(p["consumer_errors"] for p in phases.values()),
            "router_served_contrary_table_s": max(p["router_served_contrary_table_s"] for p in phases.values()),
            "controller_url_refused_across_kills": sum(p["controller_url_refused"] for p in phases.values()),
            "acting_is_the_standby": all(p["acting_is_the_standby"] for p in phases.values()),
            "idle_standby_cpu_s_per_s": max(p["idle_standby_cpu_s_per_s"] for p in phases.values()),
            "canary_up_kill": canary_up,
            "cold_canary_up_s": round(cold_up_s, 2),
            "resume_acting_s": resume,
            "resume_acting_ratio": round(resume / cold_up_s, 3),
            "resume_acting_cpu_s": resume_cpu,
            "cold_canary_up_cpu_s": round(cold_up_cpu_s, 2),
            "resume_acting_cpu_ratio": round(resume_cpu / cold_up_cpu_s, 3),
            "router_kill": router,
            "cold_router_start_s": round(cold_router_s, 3),
            "router_answers_again_s": router["answers_again_s"],
            "router_answers_again_ratio": round(router["answers_again_s"] / cold_router_s, 3),
        }
    )


if __name__ == "__main__":
    main()
