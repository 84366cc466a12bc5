"""A controller killed outright in any phase of a rollout, under `canary up`: its warm standby
resumes the rollout without acting twice, and consumers see nothing.  Real processes on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from benchmarks.up_stack import load_through
from canary.stack import service_token
from tests.canary_up import controllers, run_cli, spawn_canary_up, stop_up

SLOW_STEP = "  steps:\n    - {weight: 50, min_requests: 100000, min_seconds: 3600, max_seconds: 7200}\n"
KILL_SPECS = {
    # phase to kill in: (service, canary, spec body after the releases)
    "mirroring": (
        "resizer",
        "2.1",
        "  mirror: {share: 1.0, min_compared: 100000, min_seconds: 3600, max_seconds: 7200}\n" + SLOW_STEP,
    ),
    "progressing": ("importer", "1.2", SLOW_STEP),
    "paused": ("importer", "1.2", SLOW_STEP),
    "watching": ("importer", "1.2", SLOW_STEP + "  watch: {seconds: 3600}\n"),
}


class BackgroundLoad:
    """`canary load` through the router in a thread, for as long as a test needs; what consumers saw."""

    def __init__(self, router_url: str, token: str, rate: float = 20.0) -> None:
        from canary.traffic.load import run

        config = load_through(router_url, token, rate)
        self.stop_event = threading.Event()
        self.report: dict[str, Any] = {}
        self.thread = threading.Thread(target=lambda: self.report.update(run(config, stop=self.stop_event)))
        self.thread.start()

    def stop(self) -> dict[str, Any]:
        self.stop_event.set()
        self.thread.join(120)
        return self.report

    @staticmethod
    def errors(report: dict[str, Any]) -> dict[str, dict[str, int]]:
        return {name: s["errors"] for name, s in report["services"].items() if s["errors"]}


def wait_until(condition: Callable[[], bool], what: Callable[[], str], seconds: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail with ``what()`` when the deadline passes."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what()
        time.sleep(0.2)


def last_tick(cport: int) -> float:
    """When the controller on ``cport`` last ticked holding the lease (0 before its first)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{cport}/metrics", timeout=5).text
    except httpx.HTTPError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("canary_controller_last_tick_timestamp_seconds"):
            return float(line.split()[-1])
    return 0.0


class ControllerProbe:
    """Polls the controller's URL on a new connection each time, in a thread, until ``stop()``; what
    ``stop()`` returns: the probes whose connection was refused (none while `canary up` holds the
    socket).  A request in flight on the very process killed may be cut, and is not counted."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.refused: list[str] = []
        self.answered = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.wait(0.05):
            try:
                httpx.get(f"{self.url}/healthz", timeout=10)
                self.answered += 1
            except httpx.ConnectError as exc:
                self.refused.append(f"{time.time():.3f} {exc}")
            except httpx.HTTPError:
                pass

    def stop(self) -> list[str]:
        self.stopping.set()
        self.thread.join(30)
        assert self.answered > 0
        return self.refused


@pytest.mark.parametrize("phase", list(KILL_SPECS))
def test_a_controller_killed_in_any_phase_resumes_without_acting_twice_and_consumers_see_nothing(tmp_path, phase):
    """SIGKILL of the acting controller under load: the warm standby `canary up` kept beside it acts
    in its place (its pid holds the lock and ticks), the controller's URL never refused a connection,
    the router and the releases keep serving (the new controller adopts them, the very same
    processes), no decision is taken twice, the world is what the stored phase says, and consumers
    saw no error at all.  Then SIGKILL of `canary up` itself and an immediate restart: the acting
    controller runs on, and the new `canary up` adopts it."""
    from canary.controller.lease_holder import lock_holder_pid
    from canary.platforms.processes import free_port

    service, release, body = KILL_SPECS[phase]
    cport, rport = free_port(), free_port()
    common = ["--controller", f"http://127.0.0.1:{cport}", "--state-dir", str(tmp_path)]
    spec = tmp_path / "slow.yaml"
    spec.write_text(
        f"apiVersion: releasewarden/v1\nkind: Rollout\nspec:\n  service: {service}\n  stable: '1.0'\n"
        f"  canary: '{release}'\n{body}  metrics:\n    - {{name: errors, kind: errors}}\n"
    )

    def canary(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, *common)

    def start_up() -> subprocess.Popen[str]:
        proc = spawn_canary_up(tmp_path, cport, rport, quiet=True)
        wait_until(lambda: canary("status").returncode == 0, lambda: "canary up did not come up")
        return proc

    def services() -> set[str]:
        out = subprocess.run(["pgrep", "-f", "--", f"--state-dir {tmp_path}"], capture_output=True, text=True).stdout
        return set(out.split())

    def in_phase(rid: str) -> bool:
        line = canary("history").stdout
        return rid in line and f" {phase} " in line

    def decisions(rid: str) -> list[str]:  # `canary why` without the live view ("now, ...", the readers)
        return [line for line in canary("why", rid).stdout.splitlines() if not line.startswith(("  now,", "  reader "))]

    def wait_status(word: str) -> None:
        wait_until(
            lambda: word in canary("status").stdout, lambda: f"status never said {word}: {canary('status').stdout}"
        )

    def releases_answering() -> set[str]:
        return {
            httpx.get(f"http://127.0.0.1:{rport}/{service}/healthz", headers={"X-Account-Id": str(i)}).json()["release"]
            for i in range(40)
        }

    token = lambda: (tmp_path / "admin-token").read_text().strip()  # noqa: E731

    def world_matches_the_stored_phase() -> bool:
        answering = releases_answering()
        if phase in ("progressing", "paused"):
            return answering == {"1.0", release}  # traffic split between both
        if phase == "mirroring":  # customers see stable only; the canary runs for the mirror
            table = httpx.get(f"http://127.0.0.1:{cport}/api/routes", headers={"Authorization": f"Bearer {token()}"})
            return answering == {"1.0"} and table.json()["services"][service]["mirror"]["share"] == 1.0
        return answering == {release}  # watching: the new release serves everyone, the old one kept warm

    def opens_requests() -> int:
        rows = httpx.get(f"http://127.0.0.1:{rport}/_router/stats").json()["counters"]
        return sum(r["requests"] for r in rows if r["service"] == "opens")

    first = start_up()
    load = None
    try:
        out = canary("release", service, "--to", release, "--spec", str(spec))
        rid = out.stdout.split()[1].rstrip(":")[:8]
        if phase in ("paused", "watching"):  # a person pauses, or promotes (skips the steps)
            wait_status("progressing")
            assert canary("pause" if phase == "paused" else "promote", rid).returncode == 0
        wait_until(lambda: in_phase(rid), lambda: f"never reached {phase}: {canary('history').stdout}")
        wait_until(world_matches_the_stored_phase, lambda: f"the world never matched {phase}")
        before = decisions(rid)
        running = services() - {str(first.pid)}  # the releases it started
        load = BackgroundLoad(f"http://127.0.0.1:{rport}", service_token(tmp_path, "opens"))
        pixels = opens_requests()
        wait_until(lambda: opens_requests() > pixels + 20, lambda: "the load never reached the router")
        acting = lock_holder_pid(tmp_path)
        standby = set(controllers(cport)) - {acting}
        assert acting in controllers(cport) and len(standby) == 1  # one acts, one waits, warm
        probe = ControllerProbe(f"http://127.0.0.1:{cport}")
        killed_at = time.time()
        os.kill(acting, signal.SIGKILL)  # no clean-up at all
        wait_until(
            lambda: lock_holder_pid(tmp_path) in standby and last_tick(cport) > killed_at,
            lambda: f"the standby {standby} never acted (lock: {lock_holder_pid(tmp_path)})",
        )
        wait_until(world_matches_the_stored_phase, lambda: f"the world never matched {phase} again")
        assert running <= services()  # adopted: the very same processes, none restarted
        assert decisions(rid) == before  # same phase, no decision taken twice
        wait_until(lambda: len(controllers(cport)) == 2, lambda: "canary up never started a new standby")
        first.send_signal(signal.SIGKILL)  # and now `canary up` itself
        first.wait(10)
        assert running and services() == running  # its releases are still running
        second = start_up()
        try:
            wait_until(world_matches_the_stored_phase, lambda: f"the world never matched {phase} again")
            assert lock_holder_pid(tmp_path) in standby  # adopted: the same controller acts on
            wait_until(lambda: len(controllers(cport)) == 2, lambda: "the new canary up never started a standby")
            assert running <= services()
            assert decisions(rid) == before
            if phase == "watching":
                assert len(services() - {str(second.pid)}) >= 2  # the old release kept warm
            assert probe.stop() == []  # the controller's URL never refused a connection
            report = load.stop()
            load = None
            assert report["schedule"]["requests_started"] > 0
            assert BackgroundLoad.errors(report) == {}  # the controller's crash cost consumers nothing
            if phase == "paused":
                assert canary("resume", rid).returncode == 0
                wait_status("progressing")  # the pause survived the crash, and so does the resume
        finally:
            stop_up(second, tmp_path, signal.SIGTERM if phase == "watching" else signal.SIGINT)  # both are a stop
    finally:
        if load is not None:
            load.stop()
        if first.poll() is None:
            first.kill()
    assert services() == set()
    assert controllers(cport) == []  # the adopted controller and its standby were stopped by the stop
    routers = subprocess.run(
        ["pgrep", "-f", "--", f"canary.(router|platforms.router_standby) .*--port {rport}"],
        capture_output=True,
        text=True,
    )
    assert routers.stdout.strip() == ""  # the adopted router was stopped by the stop
