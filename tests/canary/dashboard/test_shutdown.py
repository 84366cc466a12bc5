"""A controller stopped with an open dashboard stops promptly: its server tells the event stream it
is stopping (``core.serve``'s shutdown signal) before waiting for open responses, so the stream ends
instead of holding the controller for the rest of its life (``MAX_STREAM_S``): a controller process
on SIGTERM, and a controller served in a thread (``serve_in_thread``, as ``local_stack`` runs it)
whose block is left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from canary.controller.app import create_controller_app
from canary.controller.dashboard.live import MAX_STREAM_S
from canary.platforms.processes import free_port
from core.serve import serve_in_thread
from core.settings import Settings

# generous, and well inside a stream's life: a controller held by its open stream could not exit in time
DEADLINE_S = min(20.0, MAX_STREAM_S - 5)


def open_stream(url: str, token: str = "") -> threading.Event:
    """A dashboard's event stream open on ``url`` (its hello read; ``token`` in the address, as the
    page's EventSource sends it); the event is set when it ends."""
    lines: list[str] = []
    hello, ended = threading.Event(), threading.Event()

    def read() -> None:
        with httpx.stream("GET", f"{url}/api/events", params={"token": token} if token else None, timeout=60) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                lines.append(line)
                if line == "event: hello":
                    hello.set()
        ended.set()

    threading.Thread(target=read, daemon=True).start()
    assert hello.wait(30), f"no hello on the stream: {lines}"
    return ended


def test_a_sigtermed_controller_with_an_open_event_stream_exits_promptly(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "CANARY_DB_URL": f"sqlite:///{tmp_path / 'c.db'}",
        "CANARY_STATE_DIR": str(tmp_path),
        "CANARY_ADMIN_TOKEN": "shutdown-token",
    }
    argv = ["--host", "127.0.0.1", "--port", str(port), "--stable", "", "--router-url", "http://127.0.0.1:9"]
    proc = subprocess.Popen([sys.executable, "-m", "canary.controller", *argv], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "the controller exited at start"
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the controller never answered"
            time.sleep(0.1)

        ended = open_stream(url)
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + DEADLINE_S
        while proc.poll() is None:
            assert time.monotonic() < deadline, f"the controller did not exit within {DEADLINE_S} s of SIGTERM"
            time.sleep(0.05)
        assert ended.wait(10), "the stream did not end with the controller"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_leaving_serve_in_thread_with_an_open_event_stream_is_prompt(tmp_path: Path) -> None:
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'c.db'}", state_dir=str(tmp_path), admin_token="t", read_token="r"
    )
    app = create_controller_app(
        settings, stable={}, router_url="http://127.0.0.1:9", public_url="http://127.0.0.1:9", tick_s=3600
    )
    with serve_in_thread(app) as url:
        ended = open_stream(url, token="r")  # a read token set: the stream takes it in its address
    # left: a server that waited for the stream would have given up on its thread, the stream still open
    assert ended.wait(DEADLINE_S), "the stream outlived the server"
