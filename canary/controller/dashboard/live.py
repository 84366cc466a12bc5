"""The dashboard's live stream: what the store saved, pushed to every open page as server-sent events.

Sits on the store as a :class:`~canary.controller.store.SaveHook`: after a save commits (a decision,
or the judge's state after a bin), ``committed`` hands the rollout id to the event loop, which adds
the bin's point to the chart series and then tells every subscriber ``{"rollout": id, "what": ...}``
(a group's save, ``{"group": id, "what": "group"}``; a pending rollout's not-ready words changing,
which the controller keeps in memory and does not store, ``{"rollout": id, "what": "waiting"}``).
The page re-reads what changed.  Idle, a stream costs nothing: each subscriber waits on its own
queue.  Every stream ends when the controller's server begins to stop (``core.serve``'s shutdown
signal: uvicorn waits for open responses to finish before the app hears of it), and in any case
after ``MAX_STREAM_S``, when the browser reconnects by itself.  Each event carries the number of
changes published so far as its id, and the stream's ``hello`` says it: a page that reconnects
re-reads the state only if it missed something.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from canary.controller.dashboard.groups import GroupReader
from canary.controller.dashboard.series import Series, point_figures
from canary.controller.store import Saved
from core.errors import ServiceUnavailable
from core.serve import ShutdownSignal

log = logging.getLogger("releasewarden.dashboard")
KEEPALIVE_S = 10.0
MAX_STREAM_S = 60.0  # no longer what a stopping controller waits for (the shutdown signal ends it)
MAX_SUBSCRIBERS = 64
QUEUE = 256


@dataclass(frozen=True)
class Change:
    about: str  # the rollout's id, or the group's for "group"
    # "created", "decision", "judged" (a new chart point), "group" (a group saved), "waiting" (a
    # pending rollout's not-ready words changed: kept in memory, not stored) or "resync"
    what: str
    number: int = 0  # changes published so far, this one included

    def sse(self) -> str:
        data = json.dumps({"group" if self.what == "group" else "rollout": self.about, "what": self.what})
        return f"id: {self.number}\nevent: {self.what}\ndata: {data}\n\n"


class Live:
    def __init__(
        self, controller: Any, series: Series, loop: asyncio.AbstractEventLoop, groups: GroupReader | None = None
    ) -> None:
        self.controller, self.series, self.loop = controller, series, loop
        self.groups = groups  # what the page reads of the groups (None: a stream without groups)
        self.subscribers: set[asyncio.Queue[Change | None]] = set()
        self.published = 0
        self.streams_opened = 0  # for the benchmark: what an idle page costs
        self.closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._watched: set[int] = set()

    # -- the store's side (any thread) ---------------------------------------------------------------

    def on_save(self, conn: Connection, saved: Saved) -> None:
        pass  # nothing to write with the transition: the page learns of it once it is committed

    def committed(self, rollout_id: str, what: str) -> None:
        self._call_soon(lambda: self._changed(Change(rollout_id, what)))

    def group_saved(self, group_id: str) -> None:
        """A group's save committed (a hook of the group store, any thread)."""
        self._call_soon(lambda: self.publish(Change(group_id, "group")))

    # -- the loop's side -----------------------------------------------------------------------------

    def _changed(self, change: Change) -> None:
        task = asyncio.ensure_future(self._record_then_publish(change))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record_then_publish(self, change: Change) -> None:
        if change.what == "judged":
            try:
                judged = await self.controller.latest_judgements(change.about)
                metrics = point_figures(_plain(judged.last)) | {
                    f"watch:{k}": v for k, v in point_figures(_plain(judged.last_watch)).items()
                }
                kept = await asyncio.to_thread(self.series.add, change.about, self.controller.clock(), metrics)
            except Exception as exc:  # a chart point lost is not worth a traceback in the loop
                log.warning("dashboard: no chart point for %s: %s: %s", change.about[:8], type(exc).__name__, exc)
                return
            if not kept:
                return  # nothing new to draw
        self.publish(change)

    def publish(self, change: Change) -> None:
        self.published += 1
        change = Change(change.about, change.what, self.published)
        for queue in list(self.subscribers):
            if queue.full():  # a page that does not read: it gets one "resync" instead of a backlog
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(Change(change.about, "resync", change.number))
            else:
                queue.put_nowait(change)

    def close(self) -> None:
        """End every open stream now (and any opened later at once): the server is stopping."""
        self.closed = True
        for queue in list(self.subscribers):
            while not queue.empty():  # the end is told even to a page that does not read
                queue.get_nowait()
            queue.put_nowait(None)

    def stop_with(self, signal: ShutdownSignal) -> None:
        """Close when ``signal`` is set (from the server's thread: handed to this loop)."""
        if id(signal) not in self._watched:
            self._watched.add(id(signal))
            signal.watch(lambda: self._call_soon(self.close))

    def _call_soon(self, callback: Any) -> None:
        with contextlib.suppress(RuntimeError):  # a loop that has closed: no stream is open
            self.loop.call_soon_threadsafe(callback)

    async def stream(self) -> AsyncIterator[str]:
        if self.closed:
            raise ServiceUnavailable("the controller is stopping")
        if len(self.subscribers) >= MAX_SUBSCRIBERS:
            raise ServiceUnavailable(f"more than {MAX_SUBSCRIBERS} open dashboards")
        queue: asyncio.Queue[Change | None] = asyncio.Queue(QUEUE)
        self.subscribers.add(queue)
        self.streams_opened += 1
        return self._events(queue)

    async def _events(self, queue: asyncio.Queue[Change | None]) -> AsyncIterator[str]:
        try:
            yield f"retry: 1000\nevent: hello\ndata: {json.dumps({'published': self.published})}\n\n"
            ends = self.loop.time() + MAX_STREAM_S
            while (left := ends - self.loop.time()) > 0:
                try:
                    change = await asyncio.wait_for(queue.get(), min(KEEPALIVE_S, left))
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if change is None:
                    return
                yield change.sse()
        finally:
            self.subscribers.discard(queue)


def _plain(judgements: dict[str, Any]) -> dict[str, Any]:
    return {m: {"evidence": j.evidence} for m, j in judgements.items()}
