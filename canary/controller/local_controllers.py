"""The controller as ``canary up`` runs it: a supervised local process, with a warm standby.

``canary up`` keeps two ``python -m canary.controller --standby`` processes on the controller's
port (``canary.controller.standby``): the one holding ``STATE/controller.lock`` acts, the other is
started ahead, imported, and blocked on that lock.  When the acting one dies (SIGKILL included) the
kernel frees the lock, the standby takes it and its first tick acts; this supervisor then starts a
new standby (once the new acting controller answers, so that the standby's start does not slow the
takeover down).  Both serve on one listening socket made here and handed down: the controller's URL
never refuses a connection while ``canary up`` runs, one made during a takeover waits on it.

The controllers run in sessions of their own, like the router and the releases: a ``canary up``
killed outright leaves the acting controller running (its standby exits), and the next ``canary up``
on the same state directory and port ADOPTS it (the pid the lock file names) and starts a standby
beside it.  A stop (Ctrl-C, SIGTERM) stops the standbys first, then the acting controller (which
stops the releases), adopted or not.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from canary.controller.lease_holder import lock_holder_pid
from canary.platforms.processes import (
    command_line,
    last_log_line,
    pid_alive,
    runs_module,
    stop_group,
    wait_until_answers,
)
from core.errors import DependencyUnavailable

log = logging.getLogger("releasewarden.controller.local")
MODULE = "canary.controller"
WATCH_S = 0.05  # how often the supervisor looks
EARLY_DEATH_S = 10.0  # a controller that dies this soon after its start is not restarted in a spin
RETRY_S = 5.0
START_TIMEOUT_S = 90.0


class LocalControllers:
    def __init__(self, state_dir: Path, port: int, argv: list[str], env: dict[str, str]) -> None:
        self.state_dir, self.port = state_dir, port
        self.url = f"http://127.0.0.1:{port}"
        self._argv = [sys.executable, "-m", MODULE, "--host", "127.0.0.1", "--port", str(port), *argv, "--standby"]
        self._env = {**os.environ, **env}
        self.adopted = 0  # the pid of an acting controller a killed `canary up` left running
        self.takeovers = 0
        self._procs: list[tuple[subprocess.Popen[bytes], float]] = []  # with their start time
        self._socket: socket.socket | None = None
        self._next_launch_at = 0.0
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> str:
        """Adopt the acting controller a killed run left, else start one; then supervise, with a standby."""
        self._adopt()
        if not self.adopted:
            self._socket = _listen(self.port)
            log_file = self.state_dir / "logs" / "controller.log"
            written_before = log_file.stat().st_size if log_file.exists() else 0  # earlier runs' words
            proc = self._launch()
            outcome = wait_until_answers(f"{self.url}/healthz", lambda: proc.poll() is None, START_TIMEOUT_S)
            if outcome != "ready":
                self.stop()
                # this run's last "error: ..." line (a setting it refused, a stable release that could not
                # start, followed by the server's traceback), else its last line
                said = last_log_line(log_file, written_before, prefer="error: ")
                raise DependencyUnavailable(
                    f"the controller on {self.url} did not start ({outcome}): {said} (log: {log_file})"
                )
        self._watcher = threading.Thread(target=self._supervise, name="controller-supervisor", daemon=True)
        self._watcher.start()
        return self.url

    def acting_pid(self) -> int | None:
        return lock_holder_pid(self.state_dir)

    def pids(self) -> list[int]:
        """Every controller process this run looks after: the acting one and its standby."""
        own = [p.pid for p, _ in self._procs if p.poll() is None]
        return own + ([self.adopted] if self.adopted and pid_alive(self.adopted) else [])

    def stop(self) -> None:
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(5)
        acting = self.acting_pid()
        # the standbys first: one left waiting would take the lock the moment the acting one stops
        for proc, _ in self._procs:
            if proc.pid != acting:
                _end(proc, 10.0)
        for proc, _ in self._procs:
            _end(proc, 60.0)  # a graceful stop stops the releases it started
        if self.adopted:
            stop_group(self.adopted, grace_s=60.0)
        if self._socket is not None:
            self._socket.close()

    def _adopt(self) -> None:
        pid = self.acting_pid()
        if pid is None or not pid_alive(pid) or MODULE not in command_line(pid):
            return  # none acts, or the pid is someone else's now: never signal it
        if runs_module(pid, MODULE, self.port):
            self.adopted = pid
            log.warning("adopted the controller left running on %s (pid %d)", self.url, pid)
            return
        log.warning("stopping the controller left running as pid %d: not on port %d", pid, self.port)
        stop_group(pid, grace_s=60.0)

    def _launch(self) -> subprocess.Popen[bytes]:
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        fds = () if self._socket is None else (self._socket.fileno(),)
        argv = self._argv + ([] if self._socket is None else ["--listen-fd", str(self._socket.fileno())])
        with (logs / "controller.log").open("ab") as out:
            proc = subprocess.Popen(
                argv,
                env=self._env,
                stdin=subprocess.PIPE,  # its end tells a waiting standby that this run is gone
                stdout=out,
                stderr=subprocess.STDOUT,
                pass_fds=fds,
                start_new_session=True,  # the acting one outlives a `canary up` killed outright
            )
        self._procs.append((proc, time.monotonic()))
        return proc

    def _supervise(self) -> None:
        while not self._stopping.wait(WATCH_S):
            self._reap()
            if len(self.pids()) >= 2 or time.monotonic() < self._next_launch_at:
                continue
            acting = self.acting_pid()
            if acting is not None and self._procs_or_adopted(acting) and not _answers(self.url):
                continue  # a takeover under way: its standby starts once it answers, not beside it
            if self._stopping.is_set():
                return
            self._launch()

    def _procs_or_adopted(self, pid: int) -> bool:
        return pid == self.adopted or any(p.pid == pid for p, _ in self._procs)

    def _reap(self) -> None:
        for entry in list(self._procs):
            proc, started = entry
            if proc.poll() is None:
                continue
            self._procs.remove(entry)
            if time.monotonic() - started < EARLY_DEATH_S:
                self._next_launch_at = time.monotonic() + RETRY_S
            log.warning("the controller pid %d exited (%s)", proc.pid, proc.returncode)
            self.takeovers += 1
        if self.adopted and not pid_alive(self.adopted):
            log.warning("the adopted controller pid %d exited", self.adopted)
            self.adopted = 0
            self.takeovers += 1


def _listen(port: int) -> socket.socket:
    """The controller's listening socket, made once by `canary up` and shared by its controllers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise DependencyUnavailable(f"the controller's port {port} is taken ({exc.strerror})") from exc
    sock.listen(2048)
    return sock


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _end(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
