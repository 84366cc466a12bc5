"""Release 2.0's data access, from the port to the new framework: one connection per worker thread.

Checking a connection out of the pool for every request looked wasteful, so each worker thread
keeps the connection it first gets and reuses it for every later request it serves.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from sqlalchemy import Connection, Engine

from services.resizer.store import ImageStore


class ThreadReusedStore(ImageStore):
    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._local = threading.local()

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self.engine.connect()
            self._local.conn = conn
        try:
            yield conn
        finally:
            if conn.in_transaction():
                conn.rollback()  # end the transaction; the connection stays with this thread
