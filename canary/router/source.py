"""Where the router gets its route table: ``core.table_source`` (a file or the controller's URL,
polled every half second, the last good table kept while the source is away), plus what only the
router has: the admin endpoint can set a table directly, and ``/_router/table`` reports the status.

A router given a state file (``python -m canary.router --table-state FILE``) keeps the last table it
served there and serves it at once when it starts again: it never answers ``unknown_service`` for a
service it served before, even while the controller is down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.table_source import ReaderKind, TableReader, TableSource

POLL_S = 0.5


class TableHolder(TableSource):
    def __init__(self, source: str = "", token: str = "") -> None:
        super().__init__(source, token=token, poll_s=POLL_S)

    @property
    def source(self) -> str:
        return self.location

    def configure(self, *, address: str = "", state_file: Path | None = None) -> None:
        """Before start: who this router is to the controller (its ``host:port``, stable across its
        restarts) and where it keeps its table."""
        if address:
            self.reader = TableReader(ReaderKind.ROUTER, address)
        if state_file is not None:
            self.state_file = state_file

    def status(self) -> dict[str, Any]:
        return {
            "source": self.location or "admin endpoint",
            "version": self.table.version,
            "loaded_at": self.loaded_at,
            "last_error": self.last_error or None,
            "kept_in": str(self.state_file) if self.state_file else None,
        }

    def load_file_now(self) -> None:
        """At start-up, before the first request: the file source, or the table kept on disk."""
        self.load_now()
