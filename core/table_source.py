"""The one async source of the route table (``core.routes``) for everything that reads it: the
router (``canary.router.source``) and queue consumers (``core.queue_share``).

A file (YAML or JSON) or a URL (the controller's ``GET /api/routes``) is polled every half second
from a task in the reader's own event loop: nothing blocks the loop.  A table that cannot be read or
parsed is reported once and ignored: the reader keeps the last good one, also while the controller
is away.  Each poll of a URL says who reads and what it serves now (the controller's side of the
weight-confirmation contract counts on it)::

    X-Table-Reader: router/127.0.0.1:8080        (or consumer/opens-processor@1.1)
    X-Table-Version: 7                           (0 before any table)

With a ``state_file`` every new table is also kept on disk (written atomically) and read back at
start, so a restarted reader serves the table it served before without waiting for the controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import aiohttp
import yaml

from core.routes import RouteTable, TableError, parse_table

log = logging.getLogger("releasewarden.table_source")
POLL_S = 0.5
MAX_TABLE_BYTES = 1 << 20
READER_HEADER = "X-Table-Reader"
VERSION_HEADER = "X-Table-Version"
EMPTY = RouteTable(0, {})


class ReaderKind(StrEnum):
    ROUTER = "router"
    CONSUMER = "consumer"


@dataclass(frozen=True)
class TableReader:
    """Who polls: the id is stable across that reader's restarts (a router's address, a consumer's
    name and release), so the controller sees one reader, not a new one per restart."""

    kind: ReaderKind
    id: str

    @property
    def header(self) -> str:
        return f"{self.kind.value}/{self.id}"


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


class TableSource:
    def __init__(
        self,
        location: str,
        *,
        token: str = "",
        reader: TableReader | None = None,
        state_file: Path | None = None,
        on_change: Callable[[RouteTable], None] | None = None,
        served_version: Callable[[], int] | None = None,
        poll_s: float = POLL_S,
    ) -> None:
        self.location = location
        self.token = token
        self.reader = reader
        self.state_file = state_file
        self.on_change = on_change
        # what the reader really serves: the router, its table; a consumer, the table whose share it applies
        self.served_version = served_version or (lambda: self.table.version)
        self.poll_s = poll_s
        self.table: RouteTable = EMPTY
        self.loaded_at = 0.0
        self.last_error = ""
        self._mtime = 0.0
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- the table --------------------------------------------------------------------------------
    def set(self, table: RouteTable) -> None:
        self.table = table
        self.loaded_at = time.time()
        self.last_error = ""
        if self.state_file is not None:
            try:
                _write_atomically(self.state_file, json.dumps(table.to_dict()))
            except OSError as exc:  # serving matters more than keeping: say so, go on
                log.warning("route table version %d not kept in %s (%s)", table.version, self.state_file, exc)
        if self.on_change is not None:
            self.on_change(table)

    def load_now(self) -> None:
        """At start-up, before the first request: the file source, else the table kept on disk."""
        if self.location and not is_url(self.location):
            try:
                self._read_file(force=True)
                return
            except (OSError, ValueError, TableError, yaml.YAMLError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"  # the poll keeps trying
        if self.state_file is None or not self.state_file.exists():
            return
        try:
            kept = parse_table(json.loads(_read_limited(self.state_file)))
        except (OSError, ValueError, TableError) as exc:
            self.last_error = f"kept table {self.state_file} unreadable ({type(exc).__name__}: {exc})"
            log.warning("%s; starting without a table", self.last_error)
            return
        self.table, self.loaded_at = kept, time.time()
        if self.on_change is not None:
            self.on_change(kept)
        log.info("serving the kept route table version %d from %s", kept.version, self.state_file)

    # -- polling ----------------------------------------------------------------------------------
    async def start(self, read_first: bool = False) -> None:
        """Poll from now on; with ``read_first``, once before returning (a queue consumer then takes
        its share from its first batch on, not everything stable would take before any table)."""
        if not self.location or self._task is not None:
            return
        self._session = aiohttp.ClientSession()
        if read_first:
            await self.poll_once(self._session)
        self._task = asyncio.create_task(self._poll(self._session, wait_first=read_first))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _poll(self, session: aiohttp.ClientSession, wait_first: bool) -> None:
        if wait_first:
            await asyncio.sleep(self.poll_s)
        while True:
            await self.poll_once(session)
            await asyncio.sleep(self.poll_s)

    async def poll_once(self, session: aiohttp.ClientSession) -> None:
        try:
            if is_url(self.location):
                await self._read_url(session)
            else:
                self._read_file()
        except (OSError, aiohttp.ClientError, TimeoutError, ValueError, TableError, yaml.YAMLError) as exc:
            message = f"{type(exc).__name__}: {exc}"
            if message != self.last_error:
                log.warning(
                    "route table from %s not updated (%s); serving on version %d",
                    self.location,
                    message,
                    self.table.version,
                )
            self.last_error = message

    def request_headers(self) -> dict[str, str]:
        headers = {VERSION_HEADER: str(self.served_version())}
        if self.reader is not None:
            headers[READER_HEADER] = self.reader.header
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def _read_url(self, session: aiohttp.ClientSession) -> None:
        timeout = aiohttp.ClientTimeout(total=2)
        async with session.get(self.location, headers=self.request_headers(), timeout=timeout) as r:
            r.raise_for_status()
            # read(n) returns what is buffered now, not n bytes: a table sent in several writes
            # needs several reads, up to one byte past the cap (enough to know it is over)
            body = bytearray()
            while len(body) <= MAX_TABLE_BYTES:
                chunk = await r.content.read(MAX_TABLE_BYTES + 1 - len(body))
                if not chunk:
                    break
                body += chunk
        if len(body) > MAX_TABLE_BYTES:
            raise TableError(f"route table: larger than {MAX_TABLE_BYTES} bytes")
        self._accept(parse_table(json.loads(body)))

    def _read_file(self, force: bool = False) -> None:
        path = Path(self.location)
        mtime = path.stat().st_mtime
        if not force and mtime == self._mtime:
            return
        self._mtime = mtime
        self._accept(parse_table(yaml.safe_load(_read_limited(path))))

    def _accept(self, table: RouteTable) -> None:
        # by content, not version alone: a restarted controller may count versions from 1 again
        if table != self.table or not self.loaded_at:
            self.set(table)
        else:
            self.last_error = ""


def _read_limited(path: Path) -> str:
    if path.stat().st_size > MAX_TABLE_BYTES:
        raise TableError(f"route table {path}: larger than {MAX_TABLE_BYTES} bytes")
    return path.read_text(encoding="utf-8")


def _write_atomically(path: Path, text: str) -> None:
    """A reader killed mid-write leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
