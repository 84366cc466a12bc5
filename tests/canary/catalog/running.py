"""Starting a release the way a platform would, from a catalog entry's :class:`Launch`: on a free
port of 127.0.0.1, polled until its ready path answers (with a deadline), stopped afterwards with
everything it started."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from canary.catalog import Launch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running(launch: Launch, port: int, log: Path) -> Iterator[str]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            launch.argv,
            cwd=launch.working_dir,
            env={**os.environ, **launch.environment},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + launch.ready_timeout_s
        while True:
            assert proc.poll() is None, f"{launch.argv} exited with {proc.returncode}: {log.read_text()[-2000:]}"
            try:
                if httpx.get(url + launch.ready_path, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"{url}{launch.ready_path} not ready after {launch.ready_timeout_s}s"
            time.sleep(0.05)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
