"""The local platform: each release a supervised process on this machine.

Ports are allocated once per release and kept across restarts (the router's table stays right);
logs go to ``STATE/logs``; a supervisor task restarts a process that died without being asked to;
``close`` stops everything, newest first.  Starting a release that already runs is a no-op, so the
controller can apply its desired state again after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from canary.platforms.base import Instance
from canary.platforms.processes import MODULES, ServiceProcess, start_service, wait_ready

log = logging.getLogger("releasewarden.platform.local")
SUPERVISE_S = 0.5


@dataclass
class _Entry:
    proc: ServiceProcess
    track: str
    restarts: int = 0


class LocalPlatform:
    warm_old_release = True

    def __init__(self, state_dir: Path, db_urls: dict[str, str], env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.db_urls = db_urls  # service -> database URL (opens-processor shares opens')
        self.env = env or {}
        self.entries: dict[tuple[str, str], _Entry] = {}
        self._supervisor: asyncio.Task[None] | None = None
        self.record = state_dir / "platform.json"
        self.leftovers = self._stop_leftovers()

    def _stop_leftovers(self) -> int:
        """Processes a previous controller started and could not stop (it was killed): stop them now."""
        try:
            previous = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return 0
        stopped = 0
        for pid in previous.get("pids", []):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)  # each release runs in its own session (group = pid)
                stopped += 1
        if stopped:
            log.warning("stopped %d release processes left by a previous controller", stopped)
            time.sleep(1.0)
        self._save()
        return stopped

    def _save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        pids = [e.proc.popen.pid for e in self.entries.values() if e.proc.alive()]
        self.record.write_text(json.dumps({"pids": pids}))

    def _db(self, service: str) -> str:
        return self.db_urls["opens" if service == "opens-processor" else service]

    async def start(self, service: str, release: str, track: str) -> Instance:
        entry = self.entries.get((service, release))
        if entry is None or not entry.proc.alive():
            port = entry.proc.port if entry else None
            launching = asyncio.ensure_future(asyncio.to_thread(self._launch, service, release, track, port))
            try:
                proc = await asyncio.shield(launching)
            except asyncio.CancelledError:  # the controller is stopping: stop what was being started
                with contextlib.suppress(Exception):
                    (await launching).stop()
                raise
            entry = self.entries[(service, release)] = _Entry(proc, track, entry.restarts if entry else 0)
            self._save()
        entry.track = track
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(self._supervise())
        return self._instance(service, release, entry)

    def _launch(self, service: str, release: str, track: str, port: int | None) -> ServiceProcess:
        env = {**self.env, "CANARY_TRACK": track}
        proc = start_service(service, release, db_url=self._db(service), state_dir=self.state_dir, port=port, env=env)
        wait_ready(proc)
        return proc

    async def healthy(self, service: str, release: str) -> bool:
        entry = self.entries.get((service, release))
        if entry is None or not entry.proc.alive():
            return False
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"{entry.proc.url}/readyz", timeout=2)).status_code == 200
        except httpx.HTTPError:
            return False

    async def stop(self, service: str, release: str) -> None:
        entry = self.entries.pop((service, release), None)
        if entry is not None:
            await asyncio.to_thread(entry.proc.stop)
            self._save()

    async def set_weight(self, service: str, weight: float) -> None:
        """Traffic is split by the project's router, which reads the controller's table."""

    async def retire_canary(self, service: str) -> None:
        """Nothing to do: the canary's process is the new stable's after a promotion."""

    async def known_releases(self, service: str) -> list[str] | None:
        """The releases the service's module declares (``RELEASES``, what its ``--release`` accepts)."""
        module = MODULES.get(service)
        if module is None:
            return None
        releases = getattr(importlib.import_module(module), "RELEASES", None)
        return None if releases is None else [str(r) for r in releases]

    async def not_ready_reason(self, service: str, release: str) -> str:
        entry = self.entries.get((service, release))
        if entry is None:
            return f"{service} {release} is not running"
        state = "running" if entry.proc.alive() else "exited"
        return f"{service} {release} does not answer /readyz ({state}; log {entry.proc.log_path})"

    async def running(self) -> list[Instance]:
        return [self._instance(s, r, e) for (s, r), e in self.entries.items() if e.proc.alive()]

    def _instance(self, service: str, release: str, entry: _Entry) -> Instance:
        return Instance(service, release, entry.track, entry.proc.url, entry.restarts)

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(SUPERVISE_S)
            for (service, release), entry in list(self.entries.items()):
                if entry.proc.alive() or self.entries.get((service, release)) is not entry:
                    continue
                log.warning(
                    "%s %s exited (%s); restarting on port %d (log %s)",
                    service,
                    release,
                    entry.proc.popen.returncode,
                    entry.proc.port,
                    entry.proc.log_path,
                )
                try:
                    proc = await asyncio.to_thread(self._launch, service, release, entry.track, entry.proc.port)
                except Exception as exc:  # keep supervising the others; try again next round
                    log.error("restarting %s %s failed: %s", service, release, exc)
                    continue
                entry.proc, entry.restarts = proc, entry.restarts + 1
                self._save()

    async def close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        for key in reversed(list(self.entries)):
            await self.stop(*key)
