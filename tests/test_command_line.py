"""The services and the CLI as a user starts them: real processes on 127.0.0.1."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import pytest

from canary.platforms.processes import start_service, wait_ready


@pytest.mark.parametrize("name", ["importer", "opens", "opens-processor", "resizer"])
def test_service_serves_health_and_metrics_from_the_command_line(name, tmp_path):
    proc = start_service(name, "1.0", db_url=f"sqlite:///{tmp_path / 'db.sqlite'}", state_dir=tmp_path)
    try:
        wait_ready(proc)
        health = httpx.get(f"{proc.url}/healthz").json()
        assert health == {"status": "ok", "service": name, "release": "1.0"}
        metrics = httpx.get(f"{proc.url}/metrics").text
        assert "http_requests_total" in metrics
    finally:
        # uvicorn shuts down gracefully, then re-raises SIGTERM; a kill after the grace period is -9
        assert proc.stop() in (0, -signal.SIGTERM)


def test_unknown_release_is_one_clear_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "services.importer", "--release", "9.9", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip() == "error: unknown release '9.9' of importer: choose one of 1.0, 1.1, 1.2"


def test_canary_demo_runs_the_stable_services(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "canary.cli", "demo", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert '"created": 1000' in out.stdout and '"suppressed_skipped": 1' in out.stdout
    assert '"total": 20' in out.stdout
    assert "all services stopped" in out.stdout


def test_canary_up_and_the_release_engineers_commands(tmp_path):
    from canary.platforms.processes import free_port

    cport, rport = free_port(), free_port()
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "canary.cli",
            "up",
            "--state-dir",
            str(tmp_path),
            "--controller-port",
            str(cport),
            "--router-port",
            str(rport),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    common = ["--controller", f"http://127.0.0.1:{cport}", "--state-dir", str(tmp_path)]

    def canary(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "canary.cli", *args, *common], capture_output=True, text=True, timeout=60
        )

    try:
        for _ in range(300):
            if canary("status").returncode == 0:
                break
            time.sleep(0.1)
        assert canary("status").stdout.strip() == "no active rollout"
        out = canary("release", "resizer", "--to", "2.1")
        assert out.returncode == 0 and "resizer 1.0 -> 2.1" in out.stdout
        rid = out.stdout.split()[1].rstrip(":")[:8]
        for _ in range(100):
            if "mirroring" in canary("status").stdout:
                break
            time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{rport}/resizer/healthz").json()["release"] == "1.0"
        assert canary("abort", rid).returncode == 0
        for _ in range(100):
            if "rolled_back" in canary("history").stdout:
                break
            time.sleep(0.2)
        why = canary("why", rid).stdout
        assert "pending -> mirroring" in why and "by person: aborted" in why
        assert canary("abort", rid).returncode == 1  # it has ended: one clear line, no traceback
        assert canary("pause", "zzz").stderr.startswith("error: no rollout matches")
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(60)
    assert "stopped" in (up.stdout.read() if up.stdout else "")
    left = subprocess.run(["pgrep", "-f", f"--state-dir {tmp_path}"], capture_output=True, text=True)
    assert left.stdout.strip() == ""  # every service process it started is gone
