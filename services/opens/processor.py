"""The open-event processor as its own process: ``python -m services.opens.processor --release R``.

It serves ``/healthz``, ``/readyz`` and ``/metrics`` on its port and runs the processing loop as a
background task.  With ``--route-table`` and ``--track`` it takes only its track's share of
the queue (``core.queue_share``, its table polled asynchronously in the same loop), so a canary
release processes the canary weight's share of events.
Per release it counts events claimed and acknowledged, opens recorded, events
filtered (by reason) and failures, so that "acknowledged but not accounted for" is measurable from
outside: acknowledged - recorded - filtered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool

from core.app import create_app
from core.hashing import BUCKETS
from core.queue_share import QueueShare
from core.serve import serve_main
from core.settings import Settings
from services.opens import RELEASES
from services.opens.processing import process_batch
from services.opens.releases import HANDLERS
from services.opens.schema import metadata

log = logging.getLogger("releasewarden.opens.processor")
POLL_IDLE_S = 0.05
RETRY_S = 1.0
BATCH = 500


def create_processor_app(settings: Settings) -> Starlette:
    settings = settings.with_overrides(service="opens-processor")
    app: Starlette

    @contextlib.asynccontextmanager
    async def lifespan(app_: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(run_loop(app, app.state.engine))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = create_app(settings, [], lifespan=lifespan, metadata=metadata)
    m = app.state.metrics
    app.state.counters = {
        "claimed": m.counter("opens_events_claimed_total", "Raw events claimed by the processor.", []),
        "acknowledged": m.counter("opens_events_acknowledged_total", "Raw events marked processed (acknowledged).", []),
        "recorded": m.counter("opens_recorded_total", "Opens recorded.", []),
        "filtered": m.counter("opens_events_filtered_total", "Events that are not opens, by reason.", ["reason"]),
        "failures": m.counter("opens_processing_failures_total", "Batches that failed and were retried.", []),
    }
    return app


async def run_loop(app: Starlette, engine: Engine) -> None:
    s: Settings = app.state.settings
    c = app.state.counters
    share = None
    if s.route_table:
        consumer = f"{s.service}@{s.release}"
        share = QueueShare(s.route_table, "opens", s.track, s.table_token, release=s.release, consumer=consumer)
        await share.start()  # polls the table in this loop: nothing here blocks on it
    try:
        await _process_forever(s, c, share, engine)
    finally:
        if share is not None:
            await share.stop()


async def _process_forever(s: Settings, c: dict[str, Any], share: QueueShare | None, engine: Engine) -> None:
    labels = (s.service, s.release)
    while True:
        buckets = share.current() if share else (0, BUCKETS)
        if buckets[0] == buckets[1]:  # no share of the queue right now
            await asyncio.sleep(POLL_IDLE_S)
            continue
        try:
            result = await run_in_threadpool(
                process_batch, engine, s.release, HANDLERS[s.release], limit=BATCH, buckets=buckets
            )
        except Exception as exc:
            c["failures"].labels(*labels).inc()
            log.warning("processing batch failed (%s); retrying", type(exc).__name__)
            await asyncio.sleep(RETRY_S)
            continue
        if not result.claimed:
            await asyncio.sleep(POLL_IDLE_S)
            continue
        c["claimed"].labels(*labels).inc(result.claimed)
        c["acknowledged"].labels(*labels).inc(result.acknowledged)
        c["recorded"].labels(*labels).inc(result.recorded)
        for reason, n in result.filtered.items():
            c["filtered"].labels(*labels, reason).inc(n)


def main() -> int:
    return serve_main(
        "opens-processor",
        RELEASES,
        create_processor_app,
        description="Open-event processor.",
        prog="python -m services.opens.processor",
    )


if __name__ == "__main__":
    sys.exit(main())
