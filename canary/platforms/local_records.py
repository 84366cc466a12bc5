"""The local platform's record of the processes it runs, and the check of what a previous
controller left running, for the next one to take over.

Releases outlive the controller: each runs in its own session, so a controller killed outright
(SIGKILL, a crash) leaves them serving.  Every process is recorded in ``STATE/platform.json``
(service, release, track, port, pid); the next controller ADOPTS each recorded process that still
runs the command its catalog entry gives for that release and port, with the environment the
platform would give it now (a digest of it is recorded: tokens rotated or derived anew, an entry's
``environment`` changed, a record from before digests: the process is stopped and started afresh,
so that no release keeps settings the controller no longer gives), and answers the entry's health
path (and, if it says which service and release it is, says so), instead of restarting it.
A stale record (the pid is gone, or the port answers as something else) is cleaned up, and the
release is started afresh when the controller asks for it.  Which adopted process is claimed, and
when one nobody claims is stopped, is the platform's business (``canary.platforms.local``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from canary.catalog import Launch
from canary.platforms.processes import ServiceProcess, runs_argv, start_ticks, stop_group
from core.http_client import tls_context

log = logging.getLogger("releasewarden.platform.local")

# what the catalog starts for a service at a release on a track and port (None: not in it)
LaunchOf = Callable[[str, str, str, int], Launch | None]
# the digest of the environment the platform gives that launch now
GivenEnvironment = Callable[[Launch], str]


@dataclass(frozen=True)
class ProcessRecord:
    """One line of ``platform.json``: enough to find a release's process again after a crash."""

    service: str
    release: str
    track: str
    port: int
    pid: int
    log: str
    started: int = 0  # the process's start (start_ticks); 0 in records written before it was kept
    environment: str = ""  # environment_digest of what the platform gave it; "" before it was kept

    @classmethod
    def parse(cls, raw: Any) -> ProcessRecord:
        if not isinstance(raw, dict):
            raise ValueError("not a mapping")
        return cls(
            service=str(raw["service"]),
            release=str(raw["release"]),
            track=str(raw["track"]),
            port=int(raw["port"]),
            pid=int(raw["pid"]),
            log=str(raw["log"]),
            started=int(raw.get("started", 0)),
            environment=str(raw.get("environment", "")),
        )

    @classmethod
    def of(cls, proc: ServiceProcess, track: str, environment: str) -> ProcessRecord:
        """The record of a running ``proc`` (its service is its name), given ``environment``'s digest."""
        log_path = str(proc.log_path)
        return cls(proc.name, proc.release, track, proc.port, proc.pid, log_path, start_ticks(proc.pid), environment)


def environment_digest(environment: Mapping[str, str]) -> str:
    """What a record keeps of the environment a release was given (a digest: it holds tokens)."""
    return hashlib.sha256(json.dumps(sorted(environment.items())).encode()).hexdigest()


class ProcessRecords:
    """``STATE/platform.json``: the processes the platform runs, written whole on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[ProcessRecord]:
        try:
            previous = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("%s unreadable (%s): no release adopted", self.path, exc)
            return []
        if isinstance(previous, dict) and "pids" in previous:  # the format before adoption: stop them
            for pid in previous.get("pids", []):
                with contextlib.suppress(ProcessLookupError, PermissionError, TypeError):
                    os.killpg(int(pid), signal.SIGTERM)
            return []
        records = []
        for i, raw in enumerate(previous.get("releases", []) if isinstance(previous, dict) else []):
            try:
                records.append(ProcessRecord.parse(raw))
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("%s: releases[%d] skipped (%s)", self.path, i, exc)
        return records

    def save(self, records: Iterable[ProcessRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps({"releases": [asdict(record) for record in records]}, indent=1))
        os.replace(tmp, self.path)  # a controller killed mid-write leaves a whole record


@dataclass(frozen=True)
class Leftovers:
    """What a previous controller's records came to, once checked."""

    adopted: list[tuple[ProcessRecord, ServiceProcess]]  # still ours and answering: taken over as they run
    stale: list[ProcessRecord]  # gone, someone else's, or not answering as itself (then stopped)


def check_leftovers(records: list[ProcessRecord], launch_of: LaunchOf, given: GivenEnvironment) -> Leftovers:
    """Which of ``records`` still run what ``launch_of`` gives for them, with the environment
    ``given`` says, and answer as themselves; a process that is ours but runs with another
    environment or does not answer as itself is stopped (it is started afresh when asked for)."""
    # every record checked at once, on one client: a restarted controller acts again after the
    # slowest health check, not after their sum
    with httpx.Client(timeout=2, verify=tls_context()) as client, ThreadPoolExecutor(max_workers=8) as pool:
        checked = list(pool.map(lambda record: _check(record, launch_of, given, client), records))
    adopted, stale = [], []
    for record, (proc, ours, answers) in zip(records, checked, strict=True):
        if ours and answers:
            adopted.append((record, proc))
            continue
        if ours:  # running but not answering as itself: stop it, it is started afresh when asked for
            stop_group(record.pid, grace_s=5.0)
        stale.append(record)
    return Leftovers(adopted, stale)


def _check(
    record: ProcessRecord, launch_of: LaunchOf, given: GivenEnvironment, client: httpx.Client
) -> tuple[ServiceProcess, bool, bool]:
    """The record's process; whether it runs what the catalog gives for it; whether it runs with
    the environment it would be given now and answers as it."""
    proc = ServiceProcess(record.service, record.release, record.port, Path(record.log), None, pid=record.pid)
    launch = launch_of(record.service, record.release, record.track, record.port)
    ours = launch is not None and proc.alive() and _same_process(record, launch)
    current = ours and launch is not None and record.environment == given(launch)
    return proc, ours, current and launch is not None and _answers_as(record, launch.health_path, client)


def _answers_as(record: ProcessRecord, health_path: str, client: httpx.Client) -> bool:
    """The health path answers 200; a body that says which service and release it is must say ours
    (any HTTP service will do: one that says nothing is known by its command line alone)."""
    try:
        answer = client.get(f"http://127.0.0.1:{record.port}{health_path}")
    except httpx.HTTPError:
        return False
    if answer.status_code != 200:
        return False
    try:
        health = answer.json()
    except ValueError:
        return True
    if not isinstance(health, dict) or "service" not in health:
        return True
    return (health.get("service"), str(health.get("release"))) == (record.service, record.release)


def _same_process(record: ProcessRecord, launch: Launch) -> bool:
    """Is the recorded pid still the process we started?  By its start time where the record keeps
    it (a command that execs, like ``sh -c '... exec nginx'``, no longer shows its argv), else by
    its command line; a pid reused by another program is never taken (nor signalled)."""
    if record.started:
        return start_ticks(record.pid) == record.started
    return runs_argv(record.pid, launch.argv)
