"""The local platform with real processes on 127.0.0.1: start, health, supervision, stop, and what it
says of a release that is not ready yet."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from pathlib import Path

import httpx
import pytest

from canary.catalog import load_catalog
from canary.catalog.settings import shipped_catalog
from canary.platforms.base import NotReady
from canary.platforms.local import LocalPlatform
from core.settings import Settings

pytestmark = pytest.mark.anyio


async def test_releases_run_side_by_side_are_restarted_and_stopped(tmp_path):
    platform = LocalPlatform(tmp_path, shipped_catalog())
    try:
        stable = await platform.start("resizer", "1.0", "stable")
        canary = await platform.start("resizer", "2.0", "canary")
        assert stable.url != canary.url
        assert httpx.get(f"{canary.url}/healthz").json()["release"] == "2.0"
        assert await platform.start("resizer", "2.0", "canary") == canary  # idempotent: nothing new
        assert await platform.healthy("resizer", "2.0")
        entry = platform.entries[("resizer", "2.0")]
        os.kill(entry.proc.pid, signal.SIGKILL)  # the release dies on its own
        for _ in range(100):
            await asyncio.sleep(0.1)
            if platform.entries[("resizer", "2.0")].restarts == 1 and await platform.healthy("resizer", "2.0"):
                break
        running = {i.release: i for i in await platform.running()}
        assert running["2.0"].restarts == 1 and running["2.0"].url == canary.url  # same port after restart
        assert (tmp_path / "logs").is_dir()
        await platform.stop("resizer", "2.0")
        assert not await platform.healthy("resizer", "2.0")
        assert [i.release for i in await platform.running()] == ["1.0"]
    finally:
        await platform.close()
    assert await platform.running() == []


async def test_a_new_controller_adopts_healthy_releases_and_cleans_stale_records(tmp_path):
    """A controller killed outright leaves its releases running; the next one takes them over (same
    process, same port) instead of restarting them, and starts afresh only what is gone."""
    import json
    import subprocess

    from canary.platforms.processes import pid_alive

    dbs = shipped_catalog()
    first = LocalPlatform(tmp_path, dbs)
    stable = await first.start("resizer", "1.0", "stable")
    canary = await first.start("resizer", "2.1", "canary")
    pids = {r: first.entries[("resizer", r)].proc.pid for r in ("1.0", "2.1")}
    first._supervisor.cancel()  # the controller dies: nothing of it runs any more, nothing is stopped
    os.kill(pids["2.1"], signal.SIGKILL)  # and the canary died meanwhile too
    stranger = subprocess.Popen(["sleep", "60"])  # a pid the record names that is not ours any more
    record = json.loads((tmp_path / "platform.json").read_text())
    record["releases"].append({**record["releases"][0], "release": "1.2", "pid": stranger.pid, "port": 9})
    (tmp_path / "platform.json").write_text(json.dumps(record))
    second = LocalPlatform(tmp_path, dbs)
    try:
        again = await second.start("resizer", "1.0", "stable")
        assert again.url == stable.url and second.entries[("resizer", "1.0")].proc.pid == pids["1.0"]
        assert [(i.release, i.url) for i in second.adopted] == [("1.0", stable.url)]
        assert second.cleaned == 2  # the dead canary, and the record whose pid is someone else's now
        assert pid_alive(stranger.pid)  # never signalled
        assert await second.healthy("resizer", "1.0")
        fresh = await second.start("resizer", "2.1", "canary")  # the dead one starts afresh
        assert second.entries[("resizer", "2.1")].proc.pid != pids["2.1"] and fresh.url == canary.url
        saved = {r["release"]: r["pid"] for r in json.loads((tmp_path / "platform.json").read_text())["releases"]}
        assert saved == {"1.0": pids["1.0"], "2.1": second.entries[("resizer", "2.1")].proc.pid}
    finally:
        await second.close()
        stranger.kill()
        stranger.wait()
    assert not pid_alive(pids["1.0"])  # a stop is a stop: adopted processes end too


async def test_a_release_running_with_tokens_the_controller_no_longer_gives_is_restarted_not_adopted(tmp_path):
    """A controller whose service token changed (rotated, or derived per service since) does not
    take over a release that holds the old one: it stops it and starts it with what it gives now."""
    import json

    from canary.platforms.processes import pid_alive

    dbs = shipped_catalog()
    first = LocalPlatform(tmp_path, dbs, Settings(service_token="the-old-service-token"))
    old = await first.start("resizer", "1.0", "stable")
    old_pid = first.entries[("resizer", "1.0")].proc.pid
    first._supervisor.cancel()  # the controller dies, its release runs on
    second = LocalPlatform(tmp_path, dbs, Settings(service_token="the-new-service-token"))
    try:
        again = await second.start("resizer", "1.0", "stable")
        assert second.adopted == [] and second.cleaned == 1 and not pid_alive(old_pid)
        assert again.url == old.url and await second.healthy("resizer", "1.0")  # same port: tables stay right
        record = json.loads((tmp_path / "platform.json").read_text())["releases"][0]
        assert record["environment"] and "the-new-service-token" not in json.dumps(record)  # a digest
        del record["environment"]  # a record written before digests: restarted too
        (tmp_path / "platform.json").write_text(json.dumps({"releases": [record]}))
        pid = second.entries[("resizer", "1.0")].proc.pid
        second._supervisor.cancel()
        third = LocalPlatform(tmp_path, dbs, Settings(service_token="the-new-service-token"))
        try:
            await third.start("resizer", "1.0", "stable")
            assert third.adopted == [] and not pid_alive(pid)
        finally:
            await third.close()
    finally:
        await second.close()


async def test_an_adopted_release_nobody_asks_for_is_stopped(tmp_path, monkeypatch):
    from canary.platforms import local
    from canary.platforms.processes import pid_alive

    monkeypatch.setattr(local, "ADOPT_CLAIM_S", 0.5)
    dbs = shipped_catalog()
    first = LocalPlatform(tmp_path, dbs)
    await first.start("resizer", "1.0", "stable")
    await first.start("resizer", "2.1", "canary")  # its rollout ends while no controller runs
    leftover = first.entries[("resizer", "2.1")].proc.pid
    first._supervisor.cancel()
    second = LocalPlatform(tmp_path, dbs)
    try:
        await second.start("resizer", "1.0", "stable")
        for _ in range(200):
            if not pid_alive(leftover):
                break
            await asyncio.sleep(0.05)
        assert not pid_alive(leftover)
        assert [i.release for i in await second.running()] == ["1.0"]
    finally:
        await second.close()


async def test_a_damaged_record_adopts_nothing_and_starting_still_works(tmp_path, caplog):
    import json

    dbs = shipped_catalog()
    record = tmp_path / "platform.json"
    record.write_text(json.dumps({"releases": [{"service": "resizer", "pid": "x"}, "nonsense"]}))
    platform = LocalPlatform(tmp_path, dbs)
    try:
        started = await platform.start("resizer", "1.0", "stable")
        assert platform.adopted == [] and await platform.healthy("resizer", "1.0")
        assert "releases[0] skipped" in caplog.text and "releases[1] skipped" in caplog.text
        assert [r["port"] for r in json.loads(record.read_text())["releases"]] == [int(started.url.rsplit(":", 1)[1])]
    finally:
        await platform.close()
    record.write_text("{cut sho")  # a torn file (it is written atomically, but a person may edit it)
    again = LocalPlatform(tmp_path, dbs)
    try:
        await again.start("resizer", "1.0", "stable")
        assert again.adopted == [] and await again.healthy("resizer", "1.0")
    finally:
        await again.close()


def test_stopping_a_release_stops_the_children_its_command_started(tmp_path):
    """A command that does not exec its server (a shell wrapper) leaves the server as a child: the
    stop reaches it too, so the port is free for the next start."""
    import sys
    from pathlib import Path

    from canary.catalog.model import Launch
    from canary.platforms.processes import free_port, pid_alive, start_launch, wait_ready

    port = free_port()
    server = f"{sys.executable} -m http.server {port} --bind 127.0.0.1"
    launch = Launch(("sh", "-c", f"{server} & echo $! > {tmp_path}/child; wait; true"), {}, None, "/", "/", 30.0)
    proc = start_launch("wrapped", "1", launch, port=port, state_dir=tmp_path)
    wait_ready(proc)
    child = int(Path(tmp_path / "child").read_text())
    assert pid_alive(child) and child != proc.pid
    proc.stop(grace_s=5.0)
    assert not pid_alive(child)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)


async def test_a_release_that_died_is_relaunched_once_however_many_ask(tmp_path, monkeypatch):
    """The controller's start and the supervisor both relaunch a release that died; two launches
    on its port left one copy running that nothing tracked (it held the port, so every later
    restart failed, and it outlived the controller)."""
    import subprocess

    from canary.platforms import local

    monkeypatch.setattr(local, "SUPERVISE_S", 0.05)  # the supervisor looks while start() relaunches
    platform = LocalPlatform(tmp_path, shipped_catalog())
    try:
        first = await platform.start("resizer", "2.0", "canary")
        died = platform.entries[("resizer", "2.0")].proc
        os.kill(died.pid, signal.SIGKILL)
        assert died.popen is not None
        died.popen.wait(10)  # reaped: the entry's process is seen dead by all who ask
        again = await asyncio.gather(*(platform.start("resizer", "2.0", "canary") for _ in range(3)))
        assert {i.url for i in again} == {first.url}
        for _ in range(20):  # the supervisor's rounds, relaunching nothing more
            await asyncio.sleep(0.05)
        tracked = platform.entries[("resizer", "2.0")].proc.pid
        running = subprocess.run(["pgrep", "-f", "--", f"--port {first.url.rsplit(':', 1)[1]}"], capture_output=True)
        assert [int(p) for p in running.stdout.split()] == [tracked]  # one copy, the one tracked
    finally:
        await platform.close()
        left = subprocess.run(["pgrep", "-f", "--", str(tmp_path)], capture_output=True, text=True)
        subprocess.run(["pkill", "-KILL", "-f", "--", str(tmp_path)], check=False)  # a failed run leaves none
    assert left.stdout == ""


async def test_a_release_is_not_relaunched_on_a_port_another_program_listens_on(tmp_path):
    import socket

    from core.errors import DependencyUnavailable

    platform = LocalPlatform(tmp_path, shipped_catalog())
    try:
        first = await platform.start("resizer", "2.0", "canary")
        entry = platform.entries[("resizer", "2.0")]
        os.kill(entry.proc.pid, signal.SIGKILL)
        assert entry.proc.popen is not None
        entry.proc.popen.wait(10)
        with socket.socket() as other:  # another program takes the port meanwhile, and answers there
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            other.bind(("127.0.0.1", entry.proc.port))
            other.listen()
            with pytest.raises(DependencyUnavailable, match=f"port {entry.proc.port} is taken by another process"):
                await platform.start("resizer", "2.0", "canary")
        assert (await platform.start("resizer", "2.0", "canary")).url == first.url  # free again: relaunched
    finally:
        await platform.close()


HELLO = """apiVersion: releasewarden/v1
kind: Service
name: hello
stable: "1"
releases: ["1", "2"]
local:
  command: [python, "{catalog_dir}/app.py", --release, "{release}", --port, "{port}",
            --ready-when, "{catalog_dir}/ready-{release}"]
  health_path: /healthz
  ready_timeout_s: 60
"""
MUTE = """apiVersion: releasewarden/v1
kind: Service
name: mute
stable: "1"
releases: ["1"]
local:
  command: [python, -c, "import time; time.sleep(600)", "{port}"]
  health_path: /healthz
  ready_timeout_s: 3
"""


def slow_catalog(tmp_path: Path) -> Path:
    """A catalog directory whose hello (tests/canary/catalog/plain_service.py) answers 503 on
    /healthz until the file ``ready-RELEASE`` exists in it."""
    where = tmp_path / "catalog"
    where.mkdir()
    shutil.copy(Path(__file__).parent / "catalog" / "plain_service.py", where / "app.py")
    (where / "hello.yaml").write_text(HELLO)
    return where


async def said_until(platform: LocalPlatform, service: str, release: str, words: str, seconds: float = 30) -> NotReady:
    deadline = time.monotonic() + seconds
    while True:
        said = await platform.not_ready(service, release)
        if words in said.reason:
            return said
        assert time.monotonic() < deadline, f"{service} {release}: never said {words!r}, last {said}"
        await asyncio.sleep(0.05)


async def test_a_release_waited_for_says_what_its_ready_path_answers_meanwhile(tmp_path, monkeypatch):
    """While a start waits for the ready path, the platform says what that path answers (and for
    how long, and until when); once ready, what it answers now; a process that died, its exit code
    and its log's last line; nothing listening, the port; a start that gives up, its last words."""
    from canary.platforms import local
    from core.errors import DependencyUnavailable

    monkeypatch.setattr(local, "SUPERVISE_S", 3600.0)  # a release that dies stays dead: its words are read
    catalog = slow_catalog(tmp_path)
    (catalog / "mute.yaml").write_text(MUTE)  # never listens on its port
    platform = LocalPlatform(tmp_path / "state", load_catalog([catalog]))
    try:
        start = asyncio.ensure_future(platform.start("hello", "2", "canary"))
        said = await said_until(platform, "hello", "2", "ready path /healthz answered 503: warming up until")
        assert said.reason.startswith("hello 2: ") and "/logs/hello-2-" in said.reason  # where to look
        assert said.deadline_s == 60 and said.waited_s is not None and 0 < said.waited_s < 60
        assert not start.done()
        (tmp_path / "catalog" / "ready-2").touch()
        await asyncio.wait_for(start, 30)
        assert (await platform.not_ready("hello", "2")).reason.startswith("hello 2: ready now (log ")
        proc = platform.entries[("hello", "2")].proc
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.popen is not None
        proc.popen.wait(10)
        said = await platform.not_ready("hello", "2")
        assert said.reason.startswith("hello 2: process exited with code -9: release 2 serves on port")
        assert (said.waited_s, said.deadline_s) == (None, None)  # the platform waits for nothing here

        start = asyncio.ensure_future(platform.start("mute", "1", "canary"))
        said = await said_until(platform, "mute", "1", "connection refused on port ")
        port = platform._waited_for[("mute", "1")].port
        assert f"mute 1: connection refused on port {port} (log " in said.reason and said.deadline_s == 3
        with pytest.raises(
            DependencyUnavailable, match=f"mute 1 not ready after 3s: connection refused on port {port}"
        ):
            await start  # the start's own deadline: its failure says what was heard last
    finally:
        await platform.close()


async def test_a_release_inherits_none_of_the_controllers_secrets(tmp_path, monkeypatch):
    """A release under judgment must not hold what commands the controller: neither the controller's
    own settings from its environment (its tokens, its database URL, its config file) nor a
    webhook's secret, whatever the variable holding it is called; the rest it inherits."""
    from canary.controller.bootstrap import bootstrap
    from core.scoped_tokens import scoped_token

    secrets = {
        "CANARY_ADMIN_TOKEN": "admin-secret-value",
        "CANARY_ALERT_TOKEN": "alert-secret-value",
        "CANARY_READ_TOKEN": "read-secret-value",
        "RELEASE_HOOK_SECRET": "webhook-secret-value-0123456789",
    }
    kept = {"KEEP_ME": "kept", "CANARY_LOG_LEVEL": "info"}  # a service's own setting passes
    for name, value in {**secrets, **kept, "CANARY_CONFIG": "/etc/controller.yaml"}.items():
        monkeypatch.setenv(name, value)
    webhooks = tmp_path / "webhooks.yaml"
    webhooks.write_text("webhooks:\n  - {url: 'http://127.0.0.1:9/hook', secret_env: RELEASE_HOOK_SECRET}\n")
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'c.db'}",
        state_dir=str(tmp_path),
        admin_token=secrets["CANARY_ADMIN_TOKEN"],
        alert_token=secrets["CANARY_ALERT_TOKEN"],
        read_token=secrets["CANARY_READ_TOKEN"],
        service_token="service-token-value",
        webhooks=str(webhooks),
    )
    controller = bootstrap(settings, public_url="http://127.0.0.1:9", router_url="http://127.0.0.1:9")
    try:
        started = await controller.platform.start("resizer", "1.0", "canary")
        pid = controller.platform.entries[("resizer", "1.0")].proc.pid  # type: ignore[attr-defined]
        environ = dict(
            item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item
        )
        assert httpx.get(f"{started.url}/healthz").status_code == 200
        held = {name: value for name, value in environ.items() if value in secrets.values()}
        assert held == {}
        assert settings.db_url not in environ.values()
        # its own, from its entry: its service's, derived from the controller's service token
        assert environ["CANARY_ADMIN_TOKEN"] == scoped_token("service-token-value", "service_token", "resizer")
        assert "service-token-value" not in environ.values()
        assert {name: environ.get(name) for name in kept} == kept
        assert "CANARY_CONFIG" not in environ
    finally:
        await controller.platform.close()
