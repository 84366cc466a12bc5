"""Where the router gets its route table, and how changes reach every replica within a second.

A file (YAML or JSON) or a URL (the controller's API) is polled every half second; the admin
endpoint can also set a table directly.  A table that fails to load or parse is reported and
ignored: the router keeps serving on the last good one, also while the controller is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from core.routes import RouteTable, TableError, parse_table

log = logging.getLogger("releasewarden.router")
POLL_S = 0.5


class TableHolder:
    def __init__(self, source: str = "", token: str = "") -> None:
        self.source = source
        self.token = token
        self.table = RouteTable(0, {})
        self.loaded_at = 0.0
        self.last_error = ""
        self._mtime = 0.0
        self._task: asyncio.Task[None] | None = None

    def set(self, table: RouteTable) -> None:
        self.table = table
        self.loaded_at = time.time()
        self.last_error = ""

    def status(self) -> dict[str, Any]:
        return {
            "source": self.source or "admin endpoint",
            "version": self.table.version,
            "loaded_at": self.loaded_at,
            "last_error": self.last_error or None,
        }

    def load_file_now(self) -> None:
        """Read the file source at start-up, so that the first request already has a table."""
        if self.source and not self.source.startswith(("http://", "https://")):
            self._read_file(force=True)

    async def start(self) -> None:
        if self.source:
            self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    if self.source.startswith(("http://", "https://")):
                        await self._read_url(session)
                    else:
                        self._read_file()
                except (OSError, aiohttp.ClientError, TimeoutError, ValueError, TableError, yaml.YAMLError) as exc:
                    message = f"{type(exc).__name__}: {exc}"
                    if message != self.last_error:
                        log.warning(
                            "route table from %s not updated (%s); serving on version %d",
                            self.source,
                            message,
                            self.table.version,
                        )
                    self.last_error = message
                await asyncio.sleep(POLL_S)

    def _read_file(self, force: bool = False) -> None:
        path = Path(self.source)
        mtime = path.stat().st_mtime
        if not force and mtime == self._mtime:
            return
        self._mtime = mtime
        self.set(parse_table(yaml.safe_load(path.read_text(encoding="utf-8"))))

    async def _read_url(self, session: aiohttp.ClientSession) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with session.get(self.source, headers=headers, timeout=aiohttp.ClientTimeout(total=2)) as r:
            r.raise_for_status()
            table = parse_table(await r.json())
        if table.version != self.table.version or not self.loaded_at:
            self.set(table)
        else:
            self.last_error = ""
