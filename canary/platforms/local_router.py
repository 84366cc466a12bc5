"""The router as a supervised local process, as ``canary up`` runs it (and the replay).

``python -m canary.router`` runs in its own session, so a ``canary up`` killed outright leaves it
serving on the last table it had; the router keeps that table in ``STATE/router-table.json`` and
serves it at once when it starts again.  Its pid, port and table URL are recorded in
``STATE/router.json``: the next ``canary up`` ADOPTS a recorded router that still runs and answers
on the same port for the same table instead of replacing it (consumers see nothing), and stops a
stale one (another port or table).  While ``canary up`` runs, a supervisor thread restarts the
router when it dies, from a spare kept ready beside it (``router_standby``: its imports done, it
binds the port the moment it is told), else from scratch; a stop (Ctrl-C, SIGTERM) stops it,
adopted or not.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from canary.platforms.processes import pid_alive, runs_module, stop_group, wait_until_answers
from core.errors import DependencyUnavailable

log = logging.getLogger("releasewarden.platform.router")
MODULE = "canary.router"
SPARE = "canary.platforms.router_standby"
RECORD = "router.json"
TABLE_STATE = "router-table.json"
SPARE_RETRY_S = 5.0
WATCH_S = 0.05  # how often the supervisor looks: part of the time a dead router costs consumers


@dataclass(frozen=True)
class RouterRecord:
    pid: int
    port: int
    table_url: str

    @classmethod
    def read(cls, path: Path) -> RouterRecord | None:
        try:
            raw = json.loads(path.read_text())
            return cls(int(raw["pid"]), int(raw["port"]), str(raw["table_url"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None


class LocalRouter:
    def __init__(self, state_dir: Path, table_url: str, port: int, *, admin_token: str) -> None:
        """``admin_token`` guards the router's own admin endpoints and reads the route table (a
        router's confirmations hold every rollout: the table token may not speak for one)."""
        self.state_dir = state_dir
        self.table_url, self.port = table_url, port
        self.admin_token = admin_token
        self.url = f"http://127.0.0.1:{port}"
        self.pid = 0
        self.adopted = False  # this run took over a router a killed `canary up` left running
        self.restarts = 0
        self._popen: subprocess.Popen[bytes] | None = None
        self._spare: subprocess.Popen[bytes] | None = None
        self._next_spare_at = 0.0
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> str:
        """Adopt the recorded router if it is ours and answers, else start one; then supervise it."""
        self.adopted = self._adopt()
        if not self.adopted:
            self._launch()
        self._watcher = threading.Thread(target=self._supervise, name="router-supervisor", daemon=True)
        self._watcher.start()
        return self.url

    def stop(self) -> None:
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(5)
        if self._spare is not None:
            self._spare.kill()
            self._spare.wait()
        if self._popen is not None:
            self._popen.terminate()
            try:
                self._popen.wait(10)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()
        elif self.pid:
            stop_group(self.pid)
        (self.state_dir / RECORD).unlink(missing_ok=True)

    def alive(self) -> bool:
        return self._popen.poll() is None if self._popen is not None else pid_alive(self.pid)

    def _adopt(self) -> bool:
        record = RouterRecord.read(self.state_dir / RECORD)
        if record is None or not pid_alive(record.pid) or not _is_router(record.pid, record.port):
            return False  # nothing recorded, or the pid is gone or someone else's now: never signal it
        if (record.port, record.table_url) == (self.port, self.table_url) and self._answers():
            self.pid = record.pid
            log.warning("adopted the router left running on %s (pid %d)", self.url, self.pid)
            return True
        log.warning("stopping the router left running on port %d (pid %d): not the one wanted", record.port, record.pid)
        stop_group(record.pid, grace_s=5.0)
        return False

    def _answers(self) -> bool:
        try:
            return bool(httpx.get(f"{self.url}/healthz", timeout=2).json().get("service") == "router")
        except (httpx.HTTPError, ValueError, AttributeError):
            return False

    def _argv(self) -> list[str]:
        return ["--table", self.table_url, "--port", str(self.port), "--table-state", str(self.state_dir / TABLE_STATE)]

    def _popen_of(self, module: str, **kw: object) -> subprocess.Popen[bytes]:
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with (logs / "router.log").open("ab") as out:
            return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
                [sys.executable, "-m", module, *self._argv()],
                env={**os.environ, "CANARY_TABLE_TOKEN": self.admin_token, "CANARY_ADMIN_TOKEN": self.admin_token},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives a `canary up` killed outright
                **kw,
            )

    def _launch(self) -> None:
        """The spare becomes the router if one is ready, else a router starts from scratch."""
        spare, self._spare = self._spare, None
        if spare is not None and spare.poll() is None and spare.stdin is not None:
            try:
                spare.stdin.write(b"go\n")
                spare.stdin.close()
                self._popen = spare
            except OSError:
                spare.kill()
                self._popen = self._popen_of(MODULE)
        else:
            self._popen = self._popen_of(MODULE)
        self.pid = self._popen.pid
        tmp = self.state_dir / f".{RECORD}.tmp"
        tmp.write_text(json.dumps(asdict(RouterRecord(self.pid, self.port, self.table_url))))
        os.replace(tmp, self.state_dir / RECORD)
        outcome = wait_until_answers(f"{self.url}/healthz", self.alive, 30.0)
        if outcome != "ready":
            raise DependencyUnavailable(f"the router on {self.url} did not start ({outcome}; log in {self.state_dir})")

    def _keep_a_spare(self) -> None:
        if self._spare is not None and self._spare.poll() is None:
            return
        if time.monotonic() < self._next_spare_at:  # a spare that keeps dying is not retried in a spin
            return
        if self._spare is not None:
            log.warning("the spare router exited (%s); see the router log", self._spare.returncode)
        self._spare = self._popen_of(SPARE, stdin=subprocess.PIPE)
        self._next_spare_at = time.monotonic() + SPARE_RETRY_S

    def _supervise(self) -> None:
        while not self._stopping.wait(WATCH_S):
            if self.alive():
                self._keep_a_spare()
                continue
            died = time.monotonic()
            code = self._popen.returncode if self._popen is not None else "adopted"
            log.warning("the router on %s died (%s); starting it again", self.url, code)
            try:
                self._launch()
            except (DependencyUnavailable, OSError) as exc:  # try again on the next look
                log.error("restarting the router failed: %s", exc)
                continue
            self.restarts += 1
            log.warning("the router answers again after %.2f s", time.monotonic() - died)


def _is_router(pid: int, port: int) -> bool:
    return runs_module(pid, MODULE, port) or runs_module(pid, SPARE, port)
