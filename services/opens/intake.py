"""Storing pixel events durably before the pixel answers, at batch speed (group commit).

Each hit puts its event on a queue and waits; one writer task takes whatever has queued within a
few milliseconds and commits it as one batch, then wakes every waiter of that batch.  If the
database refuses the batch, it goes to the spool (fsync) instead, and a drain task moves the spool
back into the database once it answers again.  Either way the event is on disk before the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from core.db import placeholder
from services.opens.spool import Event, Spool

log = logging.getLogger("releasewarden.opens")
COLUMNS = ("event_id", "campaign_id", "contact_id", "send_id", "user_agent", "client_ip", "received_at", "bucket")
MAX_BATCH = 1000


def insert_events(engine: Engine, events: list[Event]) -> None:
    p = placeholder(engine)
    sql = (
        f"INSERT INTO raw_events ({', '.join(COLUMNS)}) VALUES ({', '.join([p] * len(COLUMNS))})"
        " ON CONFLICT (event_id) DO NOTHING"
    )
    rows = [tuple(_column_value(e, c) for c in COLUMNS) for e in events]
    with engine.begin() as conn:
        conn.exec_driver_sql(sql, rows)


def _column_value(event: Event, column: str) -> Any:
    value = event[column]
    if column == "received_at" and isinstance(value, str):
        return datetime.fromisoformat(value)
    return value


class EventWriter:
    def __init__(self, engine: Engine, spool: Spool, batch_window_s: float, metrics: Any = None) -> None:
        self.engine = engine
        self.spool = spool
        self.window = batch_window_s
        self.queue: asyncio.Queue[tuple[Event, asyncio.Future[str]]] = asyncio.Queue()
        self.metrics = metrics
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._write_loop()), asyncio.create_task(self._drain_loop())]

    async def stop(self) -> None:
        while not self.queue.empty():  # let queued hits finish before we go
            await asyncio.sleep(self.window)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def submit(self, event: Event) -> str:
        """Returns where the event went: ``db``, ``spool``, or ``lost`` when the disk refused too."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        await self.queue.put((event, future))
        return await future

    async def _write_loop(self) -> None:
        while True:
            batch = [await self.queue.get()]
            # Let the hits that arrive within one window join this commit (no per-event timers).
            await asyncio.sleep(self.window)
            while len(batch) < MAX_BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            events = [e for e, _ in batch]
            where = await run_in_threadpool(self._store, events)
            for _, future in batch:
                if not future.done():
                    future.set_result(where)

    def _store(self, events: list[Event]) -> str:
        try:
            insert_events(self.engine, events)
            return "db"
        except Exception as exc:
            log.warning("database refused %d events (%s); spooling them", len(events), type(exc).__name__)
        try:
            self.spool.append(events)
            return "spool"
        except OSError as exc:
            log.error("spool refused %d events too (%s): they are lost", len(events), exc)
            return "lost"

    async def _drain_loop(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                moved = await run_in_threadpool(self.spool.drain, lambda ev: insert_events(self.engine, ev))
                if moved:
                    log.warning("drained %d spooled events into the database", moved)
            except Exception as exc:
                log.info("spool drain waits for the database (%s)", type(exc).__name__)
