"""The services and the CLI as a user starts them: real processes on 127.0.0.1."""

from __future__ import annotations

import signal
import subprocess
import sys

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
