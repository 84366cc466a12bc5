"""Two releases of the importer writing one SQLite file, as during a canary on the embedded default.

An open-loop load of contact imports (Poisson arrivals at ``RATE``/s, ``COUNT`` in all, 20-200
rows each) goes half to importer 1.0 and half to importer 1.2, both on the same database file.
Reference, same run: the same load to one importer process alone.  Reported: answers by status,
latency percentiles, and ``ratio`` = p99 latency with two writers / p99 with one.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import report, service_process
from canary.traffic import contacts

RATE = 30.0
COUNT = 600


async def drive(urls: list[str]) -> dict[str, Any]:
    rng = random.Random(7)
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    async with httpx.AsyncClient(timeout=30) as client:

        async def one(i: int) -> None:
            account = rng.randint(1, 50)
            body = contacts.make_csv(rng, account, rng.choice((20, 50, 100, 200)), 200)
            t0 = time.perf_counter()
            try:
                r = await client.post(
                    f"{urls[i % len(urls)]}/address-books/{account}/imports",
                    files={"file": ("c.csv", body)},
                    data={"mapping": contacts.MAPPING},
                    headers={"Idempotency-Key": uuid.uuid4().hex},
                )
                statuses[str(r.status_code)] += 1
            except httpx.TransportError as exc:
                statuses[type(exc).__name__] += 1
            latencies.append(time.perf_counter() - t0)

        tasks, start, due = [], time.perf_counter(), 0.0
        for i in range(COUNT):
            due += rng.expovariate(RATE)
            await asyncio.sleep(max(0.0, start + due - time.perf_counter()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1)

    return {"statuses": dict(statuses), "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0)}


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        with service_process("importer", f"sqlite:///{tmp / 'one.db'}", tmp) as url:
            one = asyncio.run(drive([url]))
        with contextlib.ExitStack() as stack:
            db = f"sqlite:///{tmp / 'two.db'}"
            urls = [stack.enter_context(service_process("importer", db, tmp, release)) for release in ("1.0", "1.2")]
            two = asyncio.run(drive(urls))
    report(
        {
            "name": "shared_sqlite",
            "rate_per_s": RATE,
            "imports": COUNT,
            "one_writer": one,
            "two_writers": two,
            "ratio": round(two["p99_ms"] / one["p99_ms"], 2),
        }
    )


if __name__ == "__main__":
    main()
