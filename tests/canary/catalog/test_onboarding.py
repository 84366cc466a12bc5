"""Bring your own service, end to end on the local platform with real processes: a service the
framework has never seen (``plain_service.py``, the standard library only) and nginx from Debian,
each onboarded from a catalog file the test writes, released with ``canary release SERVICE --to R``
and no spec file (the entry's defaults), rolled back by the judge; the good release promoted."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from canary import cli
from canary.stack import admin_token, local_stack
from tests.conftest import wait_for_rollout

HERE = Path(__file__).resolve().parent
# small steps: the judge decides on a few hundred requests; a short watch
DEFAULTS = """
defaults:
  steps:
    - {weight: 50, min_requests: 40, min_seconds: 1, max_seconds: 90}
  metrics:
    - {name: errors, kind: errors, rate_floor: 0.1}
  watch: {seconds: 2}
"""
PLAIN = (
    """apiVersion: releasewarden/v1
kind: Service
name: hello
stable: "1"
releases: ["1", "2", "3"]
local:
  command: [python, "{catalog_dir}/app.py", --release, "{release}", --port, "{port}"]
  health_path: /healthz
"""
    + DEFAULTS
)


@contextlib.contextmanager
def traffic(url: str) -> Iterator[dict[int, int]]:
    """GETs through the router, as fast as one client goes, from many accounts; answers by status."""
    seen: dict[int, int] = {}
    stop = threading.Event()

    def drive() -> None:
        with httpx.Client(timeout=5) as client:
            for n in itertools.count():
                if stop.is_set():
                    return
                try:
                    status = client.get(url, headers={"X-Account-Id": f"a{n % 997}"}).status_code
                except httpx.HTTPError:
                    status = 0
                seen[status] = seen.get(status, 0) + 1

    thread = threading.Thread(target=drive, name="onboarding-traffic")
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(30)


def release(
    catalog: Path, state: Path, controller: str, service: str, to: str, capsys: pytest.CaptureFixture[str]
) -> str:
    argv = ["release", service, "--to", to, "--catalog", str(catalog), "--controller", controller]
    assert cli.main([*argv, "--state-dir", str(state)]) == 0
    printed = re.search(r"^rollout (\S+): ", capsys.readouterr().out, re.M)  # "rollout ID: hello 1 -> 2 (pending)"
    assert printed is not None
    return printed.group(1)


def onboard(
    catalog: Path, state: Path, service: str, bad: str, good: str, path: str, capsys: pytest.CaptureFixture[str]
) -> dict[str, float]:
    """lint, up, release the bad release (rolled back by the judge), then the good one (promoted)."""
    started = time.monotonic()
    assert cli.main(["lint", str(catalog)]) == 0
    token = admin_token(state)
    auth = {"Authorization": f"Bearer {token}"}
    with local_stack(state, None, token, catalog=str(catalog)) as (controller, router, _):
        up = time.monotonic()
        with traffic(f"{router}/{service}{path}") as seen:
            rid = release(catalog, state, controller, service, bad, capsys)
            done = wait_for_rollout(
                controller, rid, lambda r: r["phase"] in ("rolled_back", "failed", "succeeded"), auth, 120
            )
            assert (done["phase"], done["decided_by"]) == ("rolled_back", "judge"), done["reason"]
            rolled_back = time.monotonic()
            rid = release(catalog, state, controller, service, good, capsys)
            done = wait_for_rollout(
                controller, rid, lambda r: r["phase"] in ("rolled_back", "failed", "succeeded"), auth, 180
            )
            assert done["phase"] == "succeeded", done["reason"]
        routes = httpx.get(f"{controller}/api/routes", headers=auth).json()
        assert routes["services"][service]["releases"]["stable"] == good
        assert seen.get(200, 0) > 0
    figures = {"commands": 3, "to_up_s": up - started, "to_rolled_back_s": rolled_back - started}
    print(json.dumps({"onboarding": service, **{k: round(v, 2) for k, v in figures.items()}}))
    return figures


def test_a_service_never_seen_is_onboarded_rolled_back_by_the_judge_then_promoted(tmp_path, capsys):
    shutil.copy(HERE / "plain_service.py", tmp_path / "app.py")
    catalog = tmp_path / "hello.yaml"
    catalog.write_text(PLAIN)
    state = tmp_path / "state"
    onboard(catalog, state, "hello", "2", "3", "/", capsys)


def test_nginx_from_debian_is_rolled_back_by_the_judge_from_its_entry_alone(tmp_path, capsys):
    if not shutil.which("nginx"):
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed (Debian package nginx-light: `make test` installs it)")
        pytest.skip("nginx is not installed (Debian package nginx-light: `make test` installs it)")
    for name in ("release-1.conf", "release-2.conf"):
        shutil.copy(HERE / "nginx" / name, tmp_path / name)
    (tmp_path / "release-3.conf").write_text(
        (HERE / "nginx" / "release-1.conf").read_text().replace("release 1", "release 3")
    )
    entry = (HERE / "nginx" / "shop.yaml").read_text().replace('releases: ["1", "2"]', 'releases: ["1", "2", "3"]')
    catalog = tmp_path / "shop.yaml"
    catalog.write_text(entry + DEFAULTS)
    onboard(catalog, tmp_path / "state", "shop", "2", "3", "/checkout", capsys)


def test_canary_up_and_the_controller_refuse_a_wrong_entry_at_start_with_words_not_a_traceback(tmp_path):
    catalog = tmp_path / "hello.yaml"
    catalog.write_text(PLAIN.replace('"{port}"', '"{prot}"'))
    env = {**os.environ, "CANARY_CATALOG": str(catalog), "CANARY_ADMIN_TOKEN": "t"}
    for argv in (
        ["-m", "canary.cli", "up", "--catalog", str(catalog), "--state-dir", str(tmp_path / "up")],
        ["-m", "canary.controller", "--host", "127.0.0.1", "--port", "0"],
    ):
        run = {"capture_output": True, "text": True, "timeout": 120, "env": env, "cwd": tmp_path}
        out = subprocess.run([sys.executable, *argv], **run)  # type: ignore[call-overload]
        words = out.stdout + out.stderr
        assert out.returncode != 0 and "unknown placeholder {prot}" in words, (argv, words)
        assert "Traceback" not in words, (argv, words)


def test_canary_up_says_in_one_line_why_a_stable_release_cannot_start(tmp_path):
    catalog = tmp_path / "hello.yaml"  # well formed: lint passes it; its stable's script is missing
    catalog.write_text(PLAIN.replace("{catalog_dir}/app.py", "{catalog_dir}/missing_app.py"))
    assert cli.main(["lint", str(catalog)]) == 0
    from canary.platforms.processes import free_port

    ports = ["--controller-port", str(free_port()), "--router-port", str(free_port())]
    argv = ["-m", "canary.cli", "up", "--catalog", str(catalog), "--state-dir", str(tmp_path / "up"), *ports]
    out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=180, cwd=tmp_path)
    words = out.stdout + out.stderr
    assert out.returncode != 0, words
    # the reason (the release's own last words), not the server's "Application startup failed"
    assert "hello 1 exited at start" in words and "missing_app.py" in words, words
    assert "Traceback" not in words, words
    # again, the script there now and failing after a long traceback: this run's reason, its end
    # kept (the log still holds the run before's error line)
    (tmp_path / "missing_app.py").write_text(
        "import sys\nfor i in range(80): print('noise', i, file=sys.stderr)\nimport no_such_module_here\n"
    )
    out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=180, cwd=tmp_path)
    words = out.stdout + out.stderr
    assert out.returncode != 0 and "No module named 'no_such_module_here'" in words, words
    assert "missing_app.py': [Errno 2]" not in words, words  # not the run before's


def test_lint_and_release_refuse_a_wrong_entry_or_release_with_words_not_a_traceback(tmp_path, capsys):
    catalog = tmp_path / "hello.yaml"
    catalog.write_text(PLAIN.replace('"{port}"', '"{prot}"'))
    assert cli.main(["lint", str(catalog)]) == 1
    printed = capsys.readouterr().out
    assert f"{catalog}:7: local.command[5]: unknown placeholder {{prot}}" in printed
    assert cli.main(["lint", "--catalog", str(tmp_path)]) == 1  # a directory, through --catalog
    capsys.readouterr()
    argv = ["release", "hello", "--to", "2", "--catalog", str(catalog), "--controller", "http://127.0.0.1:9"]
    assert cli.main(argv) == 1
    assert "unknown placeholder {prot}" in capsys.readouterr().err
    catalog.write_text(PLAIN)
    assert cli.main([*argv[:3], "9", *argv[4:]]) == 1
    assert "hello has no release '9' (its catalog entry lists 1, 2, 3)" in capsys.readouterr().err
    assert cli.main(["release", "nope", "--to", "1", "--catalog", str(catalog)]) == 1
    assert "unknown service 'nope' (the catalog has: hello)" in capsys.readouterr().err
