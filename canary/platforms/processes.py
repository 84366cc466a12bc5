"""Running service releases as child processes on this machine: ports, logs, readiness, stopping.

The building block of the local platform: a process per release, its output in a log file in the
state directory, readiness by polling ``/readyz``, and a stop that sends SIGTERM, waits, then kills.
Each runs in its own session, so it outlives a controller killed outright; a process adopted from
such a controller is known by its pid only, and is checked to still be ours (its command line)
before it is ever signalled.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from core.errors import DependencyUnavailable

MODULES = {
    "importer": "services.importer",
    "opens": "services.opens",
    "opens-processor": "services.opens.processor",
    "resizer": "services.resizer",
}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class ServiceProcess:
    """A release's process: one this controller started (``popen``), or one it adopted from a
    controller that was killed (only its pid: it is no child of ours, init reaps it)."""

    name: str
    release: str
    port: int
    log_path: Path
    popen: subprocess.Popen[bytes] | None
    pid: int = 0
    started_at: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.popen is not None:
            self.pid = self.popen.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def adopted(self) -> bool:
        return self.popen is None

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode if self.popen is not None else None

    def alive(self) -> bool:
        return self.popen.poll() is None if self.popen is not None else pid_alive(self.pid)

    def stop(self, grace_s: float = 10.0) -> int | None:
        if self.popen is None:
            stop_group(self.pid, grace_s)
            return None
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust the signal
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def command_line(pid: int) -> list[str]:
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def runs_module(pid: int, module: str, port: int) -> bool:
    """Is ``pid`` still the process we recorded (``python -m MODULE ... --port PORT``)?  A pid can be
    reused by another program after ours died: never signal that one."""
    argv = command_line(pid)
    return module in argv and any(a == "--port" and b == str(port) for a, b in itertools.pairwise(argv))


def stop_group(pid: int, grace_s: float = 10.0) -> None:
    """SIGTERM the process group of a process we did not start (each runs in its own session),
    wait for it to end, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while pid_alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            return
        time.sleep(0.05)


def start_service(
    name: str,
    release: str,
    *,
    db_url: str,
    state_dir: Path,
    port: int | None = None,
    env: dict[str, str] | None = None,
) -> ServiceProcess:
    port = port or free_port()
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}-{release}-{port}.log"
    command = [
        sys.executable,
        "-m",
        MODULES[name],
        "--release",
        release,
        "--port",
        str(port),
        "--db",
        db_url,
        "--state-dir",
        str(state_dir),
    ]
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # Ctrl-C in the terminal reaches us; we stop children in order
        )
    return ServiceProcess(name, release, port, log_path, popen)


def wait_until_answers(url: str, alive: Callable[[], bool], timeout_s: float) -> str:
    """Poll ``url`` until it answers 200 (``ready``), the process exits (``exited``) or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            return "exited"
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return "ready"
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return "timeout"


def wait_ready(proc: ServiceProcess, timeout_s: float = 30.0) -> None:
    outcome = wait_until_answers(f"{proc.url}/readyz", proc.alive, timeout_s)
    if outcome == "exited":
        tail = proc.log_path.read_text(errors="replace")[-2000:]
        raise DependencyUnavailable(f"{proc.name} {proc.release} exited at start; its log ends:\n{tail}")
    if outcome == "timeout":
        raise DependencyUnavailable(
            f"{proc.name} {proc.release} not ready after {timeout_s:.0f}s (log: {proc.log_path})"
        )


def wait_ready_url(url: str, popen: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Wait until ``url`` answers 200, failing early if the process exits."""
    outcome = wait_until_answers(url, lambda: popen.poll() is None, timeout_s)
    if outcome == "exited":
        raise DependencyUnavailable(f"process exited at start ({popen.args!r})")
    if outcome == "timeout":
        raise DependencyUnavailable(f"{url} not ready after {timeout_s:.0f}s")
