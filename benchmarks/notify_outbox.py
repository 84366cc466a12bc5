"""Notifications: what ``Outbox.enqueue`` costs a controller tick, and how fast the sender delivers.

- enqueue: per-call latency (p50, p99) of storing an event with two webhook deliveries, on SQLite
  (a file, WAL) and, when ``CANARY_TEST_PG_URL`` is set, PostgreSQL; the reference is one bare
  single-row insert per transaction on the same engine (``enqueue_ratio``: how many bare inserts
  an enqueue costs).
- delivery: events per second from the outbox to a real receiver on 127.0.0.1 (``http.server``),
  one webhook, signed; reference: the same POSTs made directly with httpx, no outbox
  (``delivery_ratio``).

Run: ``python -m benchmarks.notify_outbox``; prints one JSON object last.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, text

from benchmarks.common import report
from canary.notify import EventKind, Outbox, RolloutEvent, Sender, Webhook, WebhookKind, payloads
from core.db import create_schema, make_engine, write_transaction
from tests.canary.notify.receiver import Receiver

N_ENQUEUE = 500
N_DELIVER = 300


def _event(i: int) -> RolloutEvent:
    return RolloutEvent(EventKind.STEP_PASSED, "bench", "resizer", "1.0", "2.1", reason="step passed", id=f"b-{i}")


def _quantiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99) - 1] * 1000


def enqueue_figures(url: str) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        hooks = [Webhook("http://127.0.0.1:9/a", WebhookKind.GENERIC, "s"), Webhook("http://127.0.0.1:9/b")]
        outbox = Outbox(engine, hooks)
        bare_meta = MetaData()
        bare = Table("bench_bare", bare_meta, Column("id", Integer, primary_key=True), Column("v", String(64)))
        create_schema(engine, bare_meta)
        times, bare_times = [], []
        for i in range(N_ENQUEUE):
            start = time.perf_counter()
            outbox.enqueue(_event(i))
            times.append(time.perf_counter() - start)
            start = time.perf_counter()
            with write_transaction(engine) as conn:
                conn.execute(insert(bare), [{"v": f"row {i}"}])
            bare_times.append(time.perf_counter() - start)
        p50, p99 = _quantiles(times)
        bare50, bare99 = _quantiles(bare_times)
        return {
            "enqueue_p50_ms": round(p50, 3),
            "enqueue_p99_ms": round(p99, 3),
            "bare_insert_p50_ms": round(bare50, 3),
            "bare_insert_p99_ms": round(bare99, 3),
            "enqueue_ratio": round(p50 / bare50, 2),
        }
    finally:
        _drop_tables(engine)
        engine.dispose()


def _drop_tables(engine: Any) -> None:
    with write_transaction(engine) as conn:
        conn.execute(text("DROP TABLE IF EXISTS bench_bare"))
        conn.execute(text("DROP TABLE IF EXISTS notify_deliveries"))
        conn.execute(text("DROP TABLE IF EXISTS notify_events"))


async def delivery_figures(url: str) -> dict[str, Any]:
    receiver = Receiver().start()
    engine = make_engine(url)
    try:
        hook = Webhook(receiver.url, WebhookKind.GENERIC, "secret")
        outbox = Outbox(engine, [hook])
        for i in range(N_DELIVER):
            outbox.enqueue(_event(i))
        sender = Sender(outbox, batch=100)
        start = time.perf_counter()
        while len(receiver.events()) < N_DELIVER:
            await sender.pass_once()
        outbox_s = time.perf_counter() - start
        async with httpx.AsyncClient() as client:
            start = time.perf_counter()
            for i in range(N_DELIVER):
                e = _event(N_DELIVER + i)
                data = payloads.body(e, hook.kind)
                await client.post(hook.url, content=data, headers=payloads.headers(e, hook, data, time.time()))
            direct_s = time.perf_counter() - start
        return {
            "delivered_per_s": round(N_DELIVER / outbox_s),
            "direct_posts_per_s": round(N_DELIVER / direct_s),
            "delivery_ratio": round((N_DELIVER / outbox_s) / (N_DELIVER / direct_s), 2),
        }
    finally:
        receiver.stop()
        _drop_tables(engine)
        engine.dispose()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        urls = {"sqlite": f"sqlite:///{Path(tmp) / 'bench.db'}"}
        if os.environ.get("CANARY_TEST_PG_URL"):
            urls["postgres"] = os.environ["CANARY_TEST_PG_URL"]
        result: dict[str, Any] = {"name": "notify_outbox", "events_enqueued": N_ENQUEUE, "events_delivered": N_DELIVER}
        for name, url in urls.items():
            result[name] = {**enqueue_figures(url), **asyncio.run(delivery_figures(url))}
        result["ratio"] = result["sqlite"]["enqueue_ratio"]
    report(result)


if __name__ == "__main__":
    main()
