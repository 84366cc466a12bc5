"""A local append-only spool for raw events the database could not take.

Each process appends JSON lines to ``events-<pid>.jsonl`` and fsyncs before the pixel answers.
Draining renames the file first (so new events go to a fresh file), inserts its events (duplicates
ignored, so a drain cut short is simply repeated) and deletes it.  Files of processes that died
are drained by whichever process finds them.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

Event = dict[str, Any]


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.active = directory / f"events-{os.getpid()}.jsonl"
        self._lock = threading.Lock()

    def append(self, events: Iterable[Event]) -> None:
        payload = "".join(json.dumps(e, separators=(",", ":"), default=str) + "\n" for e in events).encode()
        with self._lock:
            fd = os.open(self.active, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)

    def pending_files(self) -> list[Path]:
        files = []
        for path in sorted(self.directory.glob("events-*")):
            if path.suffix == ".draining" or path == self.active or not _owner_alive(path):
                files.append(path)
        return files

    def drain(self, insert: Callable[[list[Event]], None], batch: int = 1000) -> int:
        """Move spooled events into the database; returns how many were handed to ``insert``."""
        moved = 0
        for path in self.pending_files():
            if path.suffix != ".draining":
                target = path.with_name(f"{path.name}.{time.time_ns()}.draining")
                with self._lock:
                    if not path.exists():
                        continue
                    path.rename(target)
                path = target
            events = list(_read_lines(path))
            for i in range(0, len(events), batch):
                insert(events[i : i + batch])
            moved += len(events)
            path.unlink()
        return moved

    def size(self) -> int:
        return sum(sum(1 for _ in _read_lines(p)) for p in sorted(self.directory.glob("events-*")))


def _read_lines(path: Path) -> Iterable[Event]:
    with path.open("rb") as f:
        for line in f:
            try:
                yield json.loads(line)
            except ValueError:
                continue  # a line torn by a crash mid-write was never acknowledged


def _owner_alive(path: Path) -> bool:
    try:
        pid = int(path.name.split("-", 1)[1].split(".", 1)[0])
    except (IndexError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
