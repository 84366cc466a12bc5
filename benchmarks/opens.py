"""Pixel events stored per second through the HTTP endpoint, and processor events per second.

References, same run: the same server answering the pixel without storing anything (``/healthz``
of the same app, the ceiling of the HTTP stack), and a bare ``executemany`` insert of the same
number of raw events (the ceiling of the database).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.common import report, service_process
from benchmarks.loadclient import run_gets
from core.db import create_schema, make_engine
from services.opens import handling
from services.opens.intake import insert_events
from services.opens.processing import process_batch
from services.opens.schema import metadata

HITS = 20_000
CONCURRENCY = 64
ADMIN = "bench-admin"
UA = {"User-Agent": "Mozilla/4.0 (compatible; ms-office; MSOffice 16) Microsoft Outlook 16.0"}


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        db_url = f"sqlite:///{tmp / 'opens.db'}"
        with service_process("opens", db_url, tmp, env={"CANARY_ADMIN_TOKEN": ADMIN}) as url:
            sends = [{"campaign_id": 1, "contact_id": i, "send_id": i} for i in range(1000)]
            minted = httpx.post(
                f"{url}/admin/tokens", json={"sends": sends}, headers={"Authorization": f"Bearer {ADMIN}"}
            ).json()["tokens"]
            paths = [minted[i % len(minted)]["url"] for i in range(HITS)]
            asyncio.run(run_gets(url, paths[:500], CONCURRENCY, UA))  # warm up
            ceiling = asyncio.run(run_gets(url, ["/healthz"] * HITS, CONCURRENCY, UA))
            stored = asyncio.run(run_gets(url, paths, CONCURRENCY, UA))
            stats = httpx.get(f"{url}/stats").json()
        assert stored.errors == 0 and stats["events_stored"] == HITS + 500, stats

        engine = make_engine(db_url)
        t0 = time.perf_counter()
        processed = 0
        while n := process_batch(engine, "1.0", handling.outcomes, limit=1000).claimed:
            processed += n
        processor_s = time.perf_counter() - t0

        ref_engine = make_engine(f"sqlite:///{tmp / 'ref.db'}")
        create_schema(ref_engine, metadata)
        events = [
            {
                "event_id": f"{i:032x}",
                "campaign_id": 1,
                "contact_id": i,
                "send_id": i,
                "user_agent": UA["User-Agent"],
                "client_ip": "127.0.0.1",
                "received_at": "2026-01-01T00:00:00+00:00",
                "bucket": i % 10000,
            }
            for i in range(processed)
        ]
        t0 = time.perf_counter()
        for i in range(0, len(events), 1000):
            insert_events(ref_engine, events[i : i + 1000])
        insert_s = time.perf_counter() - t0
    report(
        {
            "name": "opens",
            "hits": HITS,
            "concurrency": CONCURRENCY,
            "pixel_events_stored_per_s": round(stored.rate),
            "pixel_p50_ms": round(stored.percentile(0.5) * 1000, 2),
            "pixel_p99_ms": round(stored.percentile(0.99) * 1000, 2),
            "reference_same_server_no_store_per_s": round(ceiling.rate),
            "ratio": round(stored.rate / ceiling.rate, 3),
            "processor_events_per_s": round(processed / processor_s),
            "reference_bare_insert_events_per_s": round(processed / insert_s),
            "processor_ratio": round(insert_s / processor_s, 3),
        }
    )


if __name__ == "__main__":
    main()
