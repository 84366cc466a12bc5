"""The services and the CLI as a user starts them: real processes on 127.0.0.1."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from benchmarks.up_stack import until
from canary.platforms.processes import start_service, wait_ready
from canary.stack import service_token
from core.scoped_tokens import scoped_token
from tests.canary_up import controllers, run_cli, spawn_canary_up, stop_up


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


def test_canary_up_and_the_release_engineers_commands(tmp_path):
    from canary.platforms.processes import free_port

    cport, rport = free_port(), free_port()
    up = spawn_canary_up(tmp_path, cport, rport, quiet=False)
    common = ["--controller", f"http://127.0.0.1:{cport}", "--state-dir", str(tmp_path)]

    def canary(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, *common)

    try:
        until(lambda: canary("status").returncode == 0, 60, step=0.1)
        assert canary("status").stdout.strip() == "no active rollout"
        # one token per role: no release holds one that commands the controller (a canary gets the
        # same environment from the catalog entry)
        admin, service = ((tmp_path / f"{role}-token").read_text().strip() for role in ("admin", "service"))
        pattern = f"-m services[.].* --state-dir {tmp_path}"
        releases = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True)
        pids = releases.stdout.split()
        assert len(pids) >= 4  # importer, opens, its processor, resizer
        for pid in pids:  # each service's releases their own token, derived from the stack's
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert not any(admin.encode() in item or service.encode() in item for item in environ), pid
            module = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[2].decode()  # services.<name>[...]
            own = scoped_token(service, "service_token", module.split(".")[1])
            assert f"CANARY_ADMIN_TOKEN={own}".encode() in environ, pid
        mint = f"http://127.0.0.1:{rport}/opens/admin/tokens"
        sends = {"sends": [{"campaign_id": 1, "contact_id": 2, "send_id": 3}]}
        importer_token = scoped_token(service, "service_token", "importer")
        for token, status in (
            (admin, 401),
            (service, 401),
            (importer_token, 401),
            (service_token(tmp_path, "opens"), 200),
        ):
            minted = httpx.post(mint, json=sends, headers={"Authorization": f"Bearer {token}"})
            assert minted.status_code == status, minted.text
        # a spec file written for another service or release is refused, not half applied
        spec = tmp_path / "other.yaml"
        for field, words in (
            ("service: importer", "spec.service is 'importer', but the service is 'resizer'"),
            ("stable: '0.9'", "spec.stable is '0.9', but the controller's stable release is '1.0'"),
            ("canary: '2.0'", "spec.canary is '2.0', but --to is '2.1'"),
            ("canary: 2.10", "spec.canary: must be a string (quote it: YAML read 2.1)"),
        ):
            spec.write_text(f"apiVersion: releasewarden/v1\nkind: Rollout\nspec:\n  {field}\n")
            refused = canary("release", "resizer", "--to", "2.1", "--spec", str(spec))
            assert refused.returncode == 1 and words in refused.stderr, refused.stderr
        assert canary("status").stdout.strip() == "no active rollout"
        out = canary("release", "resizer", "--to", "2.1")
        assert out.returncode == 0 and "resizer 1.0 -> 2.1" in out.stdout
        rid = out.stdout.split()[1].rstrip(":")[:8]
        until(lambda: "mirroring" in canary("status").stdout, 60, step=0.2)
        assert httpx.get(f"http://127.0.0.1:{rport}/resizer/healthz").json()["release"] == "1.0"
        assert canary("abort", rid).returncode == 0
        until(lambda: "rolled_back" in canary("history").stdout, 60, step=0.2)
        why = canary("why", rid).stdout
        assert "pending -> mirroring" in why and "by person: aborted" in why
        assert canary("abort", rid).returncode == 1  # it has ended: one clear line, no traceback
        assert canary("pause", "zzz").stderr.startswith("error: no rollout matches")

        # Alertmanager's webhook: firing alerts roll back the rollout of the service they name
        token = (tmp_path / "admin-token").read_text().strip()
        rid2 = canary("release", "resizer", "--to", "2.1").stdout.split()[1].rstrip(":")
        hook = f"http://127.0.0.1:{cport}/api/alerts"
        payload = {
            "status": "firing",
            "alerts": [
                {"status": "resolved", "labels": {"alertname": "Old", "service": "resizer"}},
                {"status": "firing", "labels": {"alertname": "Noise", "service": "opens"}},
                {"status": "firing", "labels": {"alertname": "ResizerDatabaseErrors", "service": "resizer"}},
            ],
        }
        assert httpx.post(hook, json=payload).status_code == 401
        answer = httpx.post(hook, json=payload, headers={"Authorization": f"Bearer {token}"}).json()["results"]
        assert [a["action"] for a in answer] == [
            "ignored: resolved",
            "ignored: opens has no active rollout",
            "rolling back",
        ]
        # the reason is there from rolling_back on: the phase is what the wait is for
        until(lambda: "rolled_back" in canary("why", rid2[:8]).stdout.splitlines()[0], 60, step=0.2)
        assert "by alert: alert ResizerDatabaseErrors fired" in canary("why", rid2[:8]).stdout
    finally:
        stop_up(up, tmp_path)
    printed = up.stdout.read() if up.stdout else ""
    assert "stopped" in printed
    assert f"dashboard   http://127.0.0.1:{cport}/dashboard" in printed  # where release engineers look
    left = subprocess.run(["pgrep", "-f", "--", f"--state-dir {tmp_path}"], capture_output=True, text=True)
    assert left.stdout.strip() == ""  # every service process it started is gone
    assert controllers(cport) == []  # and the controller with its warm standby


def test_canary_up_with_prometheus_runs_the_scaled_out_metrics_path_and_stops_it(tmp_path):
    from canary.platforms.processes import free_port
    from tests.conftest import need_monitoring

    need_monitoring()
    cport, rport = free_port(), free_port()
    up = spawn_canary_up(tmp_path, cport, rport, False, "--prometheus")
    try:
        lines: list[str] = []
        while not any(line.startswith("services") for line in lines):
            line = up.stdout.readline() if up.stdout else ""
            assert line, "canary up --prometheus ended early:\n" + "".join(lines)
            lines.append(line)
        prometheus = next(x.split()[1] for x in lines if x.startswith("prometheus"))
        assert any(x.startswith("alertmanager") for x in lines)
        deadline = time.monotonic() + 60
        while True:  # Prometheus found and scrapes the controller, the router and the three services
            answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": "up == 1"}).json()
            found = {(r["metric"].get("component"), r["metric"].get("service")) for r in answer["data"]["result"]}
            if {
                ("controller", None),
                ("router", None),
                ("service", "resizer"),
                ("processor", "opens-processor"),
            } <= found:
                break
            assert time.monotonic() < deadline, found
            time.sleep(0.5)
        config = httpx.get(f"{prometheus}/api/v1/status/config").json()["data"]["yaml"]
        assert "scrape_interval: 2s" in config  # every 2 s, as the README says
        pids = controllers(cport)
        assert pids
        for pid in pids:  # and the controllers judge from it (they read their environment)
            raw = Path(f"/proc/{pid}/environ").read_text().split("\0")
            environ = dict(item.split("=", 1) for item in raw if "=" in item)
            assert environ["CANARY_PROMETHEUS_URL"] == prometheus
            assert float(environ["CANARY_PROMETHEUS_SCRAPE_INTERVAL_S"]) == 2.0
        rules = httpx.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"]
        assert {"releasewarden-canary", "releasewarden-controller", "releasewarden-tracks"} <= {
            g["name"] for g in rules
        }
    finally:
        stop_up(up, tmp_path)
    left = subprocess.run(["pgrep", "-f", "--", str(tmp_path)], capture_output=True, text=True)
    assert left.stdout.strip() == ""  # Prometheus, Alertmanager and every service are gone


def test_a_reader_that_stops_reading_ends_the_command_quietly(tmp_path):
    # `canary lint ... | head -1`: the pipe is closed before the command writes
    cmd = [sys.executable, "-m", "canary.cli", "lint", "manifests/rollouts/importer.yaml", "manifests/services"]
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root)
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
