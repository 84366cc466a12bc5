"""The local platform: each release a supervised process on this machine.

What runs is the catalog's business (``Catalog.launch``: a service or a queue consumer by its own
name); this module knows no service.  Ports are allocated once per release and kept across
restarts (the router's table stays right; ``ports``: only while no other program took one); logs go
to ``STATE/logs``; a supervisor task restarts a process that died without being asked to;
``close`` stops everything, newest first.  Starting a release that already runs is a no-op, so the
controller can apply its desired state again after a crash.  While a start waits for the release's
ready path (up to its entry's ``ready_timeout_s``), ``not_ready`` says what that path answered last
(``503``, nothing listening on its port), for how long it has been waited for, and its deadline;
once started, what it answered when ``healthy`` asked it (``ready_answers``: once a tick).

Releases outlive the controller (``local_records``: each process recorded in ``STATE/platform.json``;
the next controller adopts what still runs and answers as itself, and cleans up stale records).  An
adopted process the new controller never asks for within ``ADOPT_CLAIM_S`` (a canary whose rollout
ended meanwhile) is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from canary.catalog import Catalog, Launch
from canary.platforms.base import Instance, NotReady
from canary.platforms.local_records import ProcessRecord, ProcessRecords, check_leftovers, environment_digest
from canary.platforms.ports import bindable, if_free
from canary.platforms.processes import (
    ServiceProcess,
    exited_words,
    free_port,
    start_launch,
    wait_ready,
)
from canary.platforms.ready_answers import ReadyAnswer, ask_ready, worded
from core.errors import DependencyUnavailable
from core.http_client import LoopClient
from core.settings import Settings

log = logging.getLogger("releasewarden.platform.local")
SUPERVISE_S = 0.5
ADOPT_CLAIM_S = 30.0


@dataclass
class _Entry:
    proc: ServiceProcess
    track: str
    restarts: int = 0
    claimed: bool = True  # False: adopted, and this controller has not asked for it yet
    adopted_at: float = field(default_factory=time.monotonic)
    heard: ReadyAnswer | None = None  # what its ready path answered when last asked


class LocalPlatform:
    warm_old_release = True

    def __init__(
        self,
        state_dir: Path,
        catalog: Catalog,
        settings: Settings | None = None,
        *,
        route_table: str = "",
        env: dict[str, str] | None = None,
        withheld: Collection[str] = (),
    ) -> None:
        """``withheld``: values no release may inherit from the controller's environment whatever
        the variable's name (its tokens, its database URL, its webhooks' secrets)."""
        self.state_dir = state_dir
        self.catalog = catalog
        self.settings = settings or Settings()
        self.route_table = route_table  # the controller's /api/routes, for the {route_table} placeholder
        self.env = env or {}
        self.withheld = frozenset(withheld)
        self.entries: dict[tuple[str, str], _Entry] = {}
        # at most one launch of a release at a time: start() and the supervisor both relaunch a
        # release that died, and two launches on its port left one copy running untracked
        self._launching: dict[tuple[str, str], asyncio.Future[ServiceProcess]] = {}
        # the launches waiting for their ready path (set and cleared by the launching thread)
        self._waited_for: dict[tuple[str, str], ServiceProcess] = {}
        self._supervisor: asyncio.Task[None] | None = None
        self.records = ProcessRecords(state_dir / "platform.json")
        self.adopted: list[Instance] = []  # what a previous controller left running, taken over
        self.cleaned = 0  # stale records of a previous controller, cleaned up
        self.ports: dict[tuple[str, str], int] = {}  # the ports of stale records
        self._looked_for_leftovers = False
        self._leftovers_lock = asyncio.Lock()
        self.http = LoopClient()  # the controller checks each canary's health every tick

    # -- what a previous controller left ------------------------------------------------------------
    async def _take_over_leftovers(self) -> None:
        async with self._leftovers_lock:
            if not self._looked_for_leftovers:
                await asyncio.to_thread(self._adopt_or_clean)
                self._looked_for_leftovers = True

    def _adopt_or_clean(self) -> None:
        found = check_leftovers(self.records.read(), self._launch_of, self._given)
        for record, proc in found.adopted:
            entry = self.entries[(record.service, record.release)] = _Entry(proc, record.track, claimed=False)
            self.adopted.append(self._instance(record.service, record.release, entry))
        for record in found.stale:
            self.ports[(record.service, record.release)] = record.port  # again, if still free: tables stay right
        self.cleaned += len(found.stale)
        if self.adopted or self.cleaned:
            log.warning(
                "adopted %d running releases left by a previous controller (%s); cleaned %d stale records",
                len(self.adopted),
                ", ".join(f"{i.service} {i.release} on {i.url}" for i in self.adopted) or "none",
                self.cleaned,
            )
        self._save()

    def _save(self) -> None:
        records = []
        for (service, release), e in self.entries.items():
            if e.proc.alive():
                # the environment it would be given on its track now (a promoted canary's is
                # stable's, as the next controller compares it), not the one it was launched with
                launch = self._launch_of(service, release, e.track, e.proc.port)
                records.append(ProcessRecord.of(e.proc, e.track, "" if launch is None else self._given(launch)))
        self.records.save(records)

    def _given(self, launch: Launch) -> str:
        """The digest of the environment this platform gives ``launch`` beyond what it inherits."""
        return environment_digest({**self.env, **launch.environment})

    def _launch_of(self, service: str, release: str, track: str, port: int) -> Launch | None:
        """What the catalog starts for ``service`` at ``release`` on ``port`` (None: not in it)."""
        try:
            return self.catalog.launch(
                service,
                release,
                port=port,
                state_dir=self.state_dir,
                settings=self.settings,
                track=track,
                route_table=self.route_table,
            )
        except (KeyError, LookupError):
            return None

    async def start(self, service: str, release: str, track: str) -> Instance:
        await self._take_over_leftovers()
        entry = self.entries.get((service, release))
        if entry is None or not entry.proc.alive():
            port = entry.proc.port if entry else if_free(self.ports.pop((service, release), None))
            launching = self._launch_once(service, release, track, port)
            try:
                proc = await asyncio.shield(launching)
            except asyncio.CancelledError:  # the controller is stopping: stop what was being started
                with contextlib.suppress(Exception):
                    (await launching).stop()
                raise
            now = self.entries.get((service, release))
            if now is not None and now.proc is not proc and now.proc.alive():  # the supervisor's, meanwhile
                await asyncio.to_thread(proc.stop)
                entry = now
            else:
                entry = self.entries[(service, release)] = _Entry(proc, track, entry.restarts if entry else 0)
            self._save()
        if entry.track != track or not entry.claimed:
            entry.track, entry.claimed = track, True
            self._save()
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(self._supervise())
        return self._instance(service, release, entry)

    def _launch_once(self, service: str, release: str, track: str, port: int | None) -> asyncio.Future[ServiceProcess]:
        """The launch of ``service`` ``release`` going on, or a new one: whoever asks while one goes
        on (start, the supervisor) waits for that one."""
        key = (service, release)
        going = self._launching.get(key)
        if going is None:
            going = asyncio.ensure_future(asyncio.to_thread(self._launch, service, release, track, port))
            self._launching[key] = going
            going.add_done_callback(lambda done: self._launching.pop(key) if self._launching.get(key) is done else None)
        return going

    def _launch(self, service: str, release: str, track: str, port: int | None) -> ServiceProcess:
        if port and not bindable(port, reuse_address=True):  # a ready answer there would be another program's
            raise DependencyUnavailable(f"{service} {release}: port {port} is taken by another process")
        port = port or free_port()
        launch = self._launch_of(service, release, track, port)
        if launch is None:
            raise DependencyUnavailable(f"{service} {release}: the catalog cannot run it here (no local command)")
        proc = start_launch(
            service, release, launch, port=port, state_dir=self.state_dir, env=self.env, withheld=self.withheld
        )
        self._waited_for[(service, release)] = proc
        try:
            wait_ready(proc)
        except DependencyUnavailable:
            proc.stop(grace_s=2.0)  # a release that never answered is not left running
            raise
        finally:
            if self._waited_for.get((service, release)) is proc:
                del self._waited_for[(service, release)]
        return proc

    async def healthy(self, service: str, release: str) -> bool:
        """Its ready path answers 200, asked once (``ready_answers``: ``not_ready`` reuses the answer)."""
        await self._take_over_leftovers()
        entry = self.entries.get((service, release))
        if entry is None or not entry.proc.alive():
            return False
        entry.heard = await ask_ready(entry.proc, self.http.get())
        return entry.heard.ready

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
        """The releases the service's catalog entry lists (None: "any", or not in the catalog)."""
        try:
            releases = self.catalog.entry_of(service).releases
        except KeyError:
            return None
        return None if releases is None else list(releases)

    async def not_ready(self, service: str, release: str) -> NotReady:
        """While its start waits: what its ready path answered last, how long it has waited and its
        ``ready_timeout_s``; else what that path answered when last asked (by ``healthy``, earlier
        in the same tick; asked here only if it has not asked this process), or that its process
        exited (and its log's last line)."""
        waited = self._waited_for.get((service, release))
        if waited is not None:
            said = waited.not_ready or f"started, {waited.ready_path} not asked yet"
            return NotReady(
                f"{service} {release}: {said} (log {waited.log_path})",
                waited_s=time.monotonic() - waited.started_at,
                deadline_s=waited.ready_timeout_s,
            )
        entry = self.entries.get((service, release))
        if entry is None:
            return NotReady(f"{service} {release} is not running")
        if not entry.proc.alive():
            said = exited_words(entry.proc)
        else:
            entry.heard = await worded(entry.proc, entry.heard, self.http.get())
            said = entry.heard.words
        return NotReady(f"{service} {release}: {said or 'ready now'} (log {entry.proc.log_path})")

    async def running(self) -> list[Instance]:
        await self._take_over_leftovers()
        return [self._instance(s, r, e) for (s, r), e in self.entries.items() if e.proc.alive()]

    def _instance(self, service: str, release: str, entry: _Entry) -> Instance:
        return Instance(service, release, entry.track, entry.proc.url, entry.restarts)

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(SUPERVISE_S)
            for (service, release), entry in list(self.entries.items()):
                if self.entries.get((service, release)) is not entry:
                    continue
                if not entry.claimed and time.monotonic() - entry.adopted_at > ADOPT_CLAIM_S:
                    log.warning("%s %s was adopted but is not wanted any more: stopping it", service, release)
                    await self.stop(service, release)
                    continue
                if entry.proc.alive():
                    continue
                log.warning(
                    "%s %s exited (%s); restarting on port %d (log %s)",
                    service,
                    release,
                    "adopted" if entry.proc.adopted else entry.proc.returncode,
                    entry.proc.port,
                    entry.proc.log_path,
                )
                try:
                    proc = await asyncio.shield(self._launch_once(service, release, entry.track, entry.proc.port))
                except Exception as exc:  # keep supervising the others; try again next round
                    log.error("restarting %s %s failed: %s", service, release, exc)
                    continue
                now = self.entries.get((service, release))
                if now is not entry:  # start() or stop() took it meanwhile: never two copies running
                    if now is None or now.proc is not proc:
                        await asyncio.to_thread(proc.stop)
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
