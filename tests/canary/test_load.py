"""`canary load` against real service processes on 127.0.0.1: each faulty release shows its fault
in the numbers consumers saw (and the service reports), each reworked release shows none."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from canary.platforms.processes import start_service, wait_ready
from canary.traffic.load import LoadConfig, run

ADMIN = "load-test-admin"
SMALL_POOL = {"CANARY_DB_POOL_SIZE": "2", "CANARY_DB_POOL_TIMEOUT_S": "0.5"}


def started(tmp_path, *services: tuple[str, str], env: dict[str, str] | None = None):
    procs = []
    for name, release in services:
        db = "opens" if name.startswith("opens") else name
        procs.append(
            start_service(
                name,
                release,
                db_url=f"sqlite:///{tmp_path / db}.db",
                state_dir=tmp_path,
                env={"CANARY_ADMIN_TOKEN": ADMIN, **(env or {})},
            )
        )
    for p in procs:
        wait_ready(p)
    return procs


def stop(procs) -> None:
    for p in procs:
        p.stop()


@pytest.mark.parametrize(("release", "faulty"), [("1.1", True), ("1.2", False)])
def test_importer_release_under_load(tmp_path, release, faulty):
    procs = started(tmp_path, ("importer", release))
    try:
        report = run(LoadConfig(importer=procs[0].url, rate=20, duration=3, mix={"importer": 1.0}, accounts=5))
    finally:
        stop(procs)
    seen = report["services"]["importer"]
    assert seen["requests"] > 30
    if faulty:
        assert seen["imports_failed"] > 0 and set(seen["errors"]) == {"500"}
    else:
        assert seen["imports_failed"] == 0 and seen["errors"] == {}


@pytest.mark.parametrize(("release", "faulty"), [("1.1", True), ("1.2", False)])
def test_opens_release_under_load(tmp_path, release, faulty):
    procs = started(tmp_path, ("opens", release), ("opens-processor", release))
    try:
        report = run(LoadConfig(opens=procs[0].url, rate=60, duration=3, mix={"opens": 1.0}, admin_token=ADMIN))
        for _ in range(100):
            stats = httpx.get(f"{procs[0].url}/stats").json()
            if stats["events_pending"] == 0:
                break
            time.sleep(0.1)
    finally:
        stop(procs)
    seen = report["services"]["opens"]
    assert seen["errors"] == {}  # the consumer notices nothing, whatever the release
    assert stats["events_stored"] == seen["valid_hits"]
    assert seen["blank_agent_hits"] > 0
    assert stats["unaccounted"] == (seen["blank_agent_hits"] if faulty else 0)


@pytest.mark.parametrize(("release", "faulty"), [("2.0", True), ("2.1", False)])
def test_resizer_release_under_load(tmp_path, release, faulty):
    procs = started(tmp_path, ("resizer", release), env=SMALL_POOL)
    try:
        report = run(LoadConfig(resizer=procs[0].url, rate=4, duration=4, mix={"resizer": 1.0}))
    finally:
        stop(procs)
    seen = report["services"]["resizer"]
    assert seen["page_views"] > 5
    if faulty:
        assert seen["wrong_images"] > 0  # sideways photos, answered 200
        assert seen["errors"].get("503", 0) > 0  # the pool ran dry under the bursts
    else:
        assert seen["wrong_images"] == 0 and seen["errors"] == {}


def test_cli_refuses_missing_targets_and_tokens(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "canary.cli", "load", "--duration", "1"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "give at least one of --importer" in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "canary.cli", "load", "--opens", "http://127.0.0.1:9", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin"},
    )
    assert out.returncode == 2 and "--admin-token" in out.stderr
    assert not (tmp_path / "service-token").exists()  # looked for, never made
    out = subprocess.run(
        [sys.executable, "-m", "canary.cli", "load", "--importer", "http://127.0.0.1:9", "--mix", "importer=x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "must be a number" in out.stderr


def test_cli_mints_with_the_opens_token_derived_from_the_stacks_service_token(tmp_path):
    """Under `canary up` the opens' releases hold their own service's token: `canary load` derives
    it from STATE/service-token, as the controller does."""
    from core.scoped_tokens import scoped_token

    (tmp_path / "service-token").write_text("the-stack-service-token\n")
    opens = scoped_token("the-stack-service-token", "service_token", "opens")
    procs = started(tmp_path, ("opens", "1.2"), ("opens-processor", "1.2"), env={"CANARY_ADMIN_TOKEN": opens})
    try:
        argv = ["load", "--opens", procs[0].url, "--mix", "opens=1", "--rate", "10", "--duration", "1"]
        out = subprocess.run(
            [sys.executable, "-m", "canary.cli", *argv, "--state-dir", str(tmp_path), "--quiet"],
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": "/usr/bin"},
        )
    finally:
        stop(procs)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["services"]["opens"]["requests"] > 0
