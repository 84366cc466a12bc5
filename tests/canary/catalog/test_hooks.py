"""Hooks against a real HTTP server on 127.0.0.1 and real commands: success, failure carrying the
entry's on_failure, a slow hook timing out with its name in the reason, output kept within bounds."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from canary.catalog import CommandCall, Hook, HookContext, HttpCall, Moment, OnFailure, run_hook
from canary.catalog.hooks import MAX_OUTPUT
from core.settings import Settings

pytestmark = pytest.mark.anyio


class Recorder:
    def __init__(self) -> None:
        self.requests: list[dict[str, object]] = []
        self.release = threading.Event()  # lets a slow request finish when the test is over


@pytest.fixture
def server() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            recorder.requests.append(
                {"path": self.path, "auth": self.headers.get("Authorization"), "x": self.headers.get("X-Rollout"),
                 "json": json.loads(body) if body else None}
            )  # fmt: skip
            if self.path == "/slow":
                recorder.release.wait(10)
            status = 500 if self.path == "/fail" else 200
            answer = b"x" * (MAX_OUTPUT * 2) if self.path == "/big" else json.dumps({"handed_back": 3}).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", recorder
    finally:
        recorder.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def context(stable_url: str = "", **settings: str) -> HookContext:
    return HookContext(
        service="plain",
        stable="1",
        canary="2",
        stable_url=stable_url,
        canary_url=stable_url,
        rollout_id="r-42",
        moment=Moment.AFTER_ROLLBACK,
        settings=Settings(admin_token="sekret", **settings),
    )


def http_hook(url: str, on_failure: OnFailure = OnFailure.HOLD, timeout_s: float = 5.0) -> Hook:
    call = HttpCall("POST", url, {"X-Rollout": "{rollout_id}"}, {"release": "{canary}", "n": 1}, "admin_token")
    return Hook("hand-back", Moment.AFTER_ROLLBACK, call, timeout_s, on_failure)


async def test_an_http_hook_sends_its_templates_and_token(server):
    url, recorder = server
    result = await run_hook(http_hook("{stable_url}/admin/reprocess?from={canary}"), context(url))
    assert result.ok and result.reason == "" and result.status == 200 and result.json() == {"handed_back": 3}
    assert recorder.requests == [
        {"path": "/admin/reprocess?from=2", "auth": "Bearer sekret", "x": "r-42", "json": {"release": "2", "n": 1}}
    ]


async def test_a_failing_http_hook_carries_its_on_failure_and_name(server):
    url, _ = server
    result = await run_hook(http_hook("{stable_url}/fail", OnFailure.ROLLBACK), context(url))
    assert not result.ok and result.on_failure is OnFailure.ROLLBACK and result.status == 500
    assert result.reason.startswith("hook hand-back (after_rollback) answered 500")


async def test_a_slow_http_hook_times_out_with_its_name(server):
    url, _ = server
    result = await run_hook(http_hook("{stable_url}/slow", timeout_s=0.3), context(url))
    assert not result.ok and result.reason == "hook hand-back (after_rollback) timed out after 0.3s"
    assert result.seconds < 5  # it did not wait for the answer (the server holds it 10 s)
    faster = await run_hook(http_hook("{stable_url}/slow", timeout_s=30), context(url), timeout=0.2)
    assert faster.reason.endswith("timed out after 0.2s")  # the caller's bound wins


async def test_an_unreachable_server_is_a_failure_not_an_exception():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once closed
    result = await run_hook(http_hook("{stable_url}/x"), context(url))
    assert not result.ok and result.reason.startswith("hook hand-back (after_rollback) failed: ConnectError")


async def test_an_answer_is_kept_within_bounds(server):
    url, _ = server
    result = await run_hook(http_hook("{stable_url}/big"), context(url))
    assert result.ok and len(result.output) == MAX_OUTPUT


def command_hook(*argv: str, timeout_s: float = 10.0, **env: str) -> Hook:
    return Hook("notify", Moment.AFTER_PROMOTION, CommandCall(argv, env), timeout_s, OnFailure.ROLLBACK)


async def test_a_command_hook_gets_its_templates_and_settings():
    code = "import os, sys; print(sys.argv[1:], os.environ['TOKEN'])"
    hook = command_hook("python", "-c", code, "{service}", "{canary}", TOKEN="{settings.admin_token}")
    result = await run_hook(hook, context())
    assert result.ok and result.status == 0 and result.output == "['plain', '2'] sekret\n"


async def test_a_failing_command_reports_its_status_and_the_end_of_its_output():
    code = "import sys; print('x' * 100000); print('the end: disk full'); sys.exit(3)"
    result = await run_hook(command_hook(sys.executable, "-c", code), context())
    assert not result.ok and result.status == 3 and result.on_failure is OnFailure.ROLLBACK
    assert result.reason.startswith("hook notify (after_promotion) exited with status 3: ")
    assert result.reason.endswith("the end: disk full\n")
    assert len(result.output) == MAX_OUTPUT and result.output.endswith("the end: disk full\n")


async def test_a_slow_command_times_out_and_everything_it_started_stops(tmp_path: Path):
    pid_file = tmp_path / "pid"
    script = f"sleep 30 & echo $! > {pid_file}; wait"
    started = time.monotonic()
    result = await run_hook(command_hook("sh", "-c", script, timeout_s=0.5), context())
    assert not result.ok and result.reason == "hook notify (after_promotion) timed out after 0.5s"
    assert time.monotonic() - started < 10
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline, f"the hook's child {pid} still runs"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has stopped (only its parent must reap it)


async def test_a_command_that_cannot_start_is_a_failure():
    result = await run_hook(command_hook("/nonexistent/notify"), context())
    assert not result.ok and result.reason.startswith("hook notify (after_promotion) could not start")


async def test_a_hook_without_a_url_to_call_fails_with_the_reason():
    result = await run_hook(http_hook("{stable_url}/admin/reprocess"), context(""))  # no stable is running
    assert not result.ok and result.reason.startswith("hook hand-back (after_rollback) failed: UnsupportedProtocol")
