"""``canary load``: drive realistic traffic at the services and report what consumers saw.

Open loop: arrivals follow a Poisson schedule at the asked rate, and a request starts at its
scheduled time whether or not earlier ones have answered (a slow service does not slow the load
down, as real customers would not wait for each other).  If the generator itself falls behind
(a request starts more than 50 ms late, or too many are in flight) it says so in the report.

Every request carries an ``X-Account-Id`` (a customer), so that stickiness can be checked through
the router.  For opens the report counts the valid pixel hits made, so that loss can be reconciled
with what the services recorded.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from canary.traffic import contacts, setup
from canary.traffic.agents import names_and_weights
from canary.traffic.record import ServiceRecord

LATE_S = 0.05
WIDTHS = tuple(range(100, 820, 20))  # editor thumbnails of many sizes: variants miss the cache at first
PAGE_IMAGES = (6, 24)  # an editor page view loads this many images at once
IMPORT_SIZES = (20, 50, 100, 200)
EXTRA_COUNTS = {
    "importer": ("imports_completed", "imports_failed", "rows_sent"),
    "opens": ("valid_hits", "valid_hits_answered", "forged_hits", "blank_agent_hits"),
    "resizer": ("page_views", "wrong_images"),
}


@dataclass
class LoadConfig:
    importer: str | None = None
    opens: str | None = None
    resizer: str | None = None
    rate: float = 20.0
    duration: float = 30.0
    # arrivals: an import, a pixel hit, or an editor page view (a burst of 6-24 image requests)
    mix: dict[str, float] = field(default_factory=lambda: {"importer": 0.05, "opens": 0.90, "resizer": 0.05})
    accounts: int = 20
    pool: int = 200
    suppressed_share: float = 0.01
    forged_share: float = 0.05
    admin_token: str = ""
    seed: int = 1
    timeout_s: float = 10.0
    max_in_flight: int = 512

    def targets(self) -> dict[str, str]:
        urls = {"importer": self.importer, "opens": self.opens, "resizer": self.resizer}
        return {name: url.rstrip("/") for name, url in urls.items() if url and self.mix.get(name, 0) > 0}


@dataclass
class Schedule:
    started: int = 0
    late: int = 0
    max_lag_s: float = 0.0
    skipped: int = 0


class Load:
    def __init__(self, config: LoadConfig, stop: threading.Event | None = None) -> None:
        self.config = config
        self.stop = stop  # set it to end the load early (the report covers the time it ran)
        self.elapsed_s = 0.0
        self.rng = random.Random(config.seed)
        self.records = {name: ServiceRecord() for name in config.targets()}
        for name, keys in EXTRA_COUNTS.items():  # report zeros as zeros, not as missing keys
            if name in self.records:
                self.records[name].extra.update(dict.fromkeys(keys, 0))
        self.schedule = Schedule()
        self.prepared = setup.Prepared()
        self.agents, self.agent_weights = names_and_weights()
        self.clients: dict[str, httpx.AsyncClient] = {}

    async def run(self, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        c = self.config
        targets = c.targets()
        if not targets:
            raise ValueError("no service to load: give at least one URL whose share in the mix is above 0")
        limits = httpx.Limits(max_connections=c.max_in_flight, max_keepalive_connections=64)
        for name, url in targets.items():
            self.clients[name] = httpx.AsyncClient(base_url=url, timeout=c.timeout_s, limits=limits)
        try:
            await self._prepare(progress)
            await self._drive(progress)
        finally:
            for client in self.clients.values():
                await client.aclose()
        return self.report()

    async def _prepare(self, progress: Callable[[str], None] | None) -> None:
        c = self.config
        if "importer" in self.clients:
            await setup.prepare_importer(self.clients["importer"], c.accounts, c.pool, c.suppressed_share)
        if "opens" in self.clients:
            self.prepared.tokens = await setup.prepare_opens(self.clients["opens"], c.accounts, c.pool, c.admin_token)
        if "resizer" in self.clients:
            self.prepared.images = await setup.prepare_resizer(self.clients["resizer"])
        if progress:
            progress(f"prepared {c.accounts} accounts; driving {c.rate:g} req/s for {c.duration:g} s")

    async def _drive(self, progress: Callable[[str], None] | None) -> None:
        c = self.config
        names = list(self.clients)
        weights = [c.mix[n] for n in names]
        loop = asyncio.get_running_loop()
        start = loop.time()
        due = 0.0
        tasks: set[asyncio.Task[None]] = set()
        next_progress = 5.0
        while True:
            due += self.rng.expovariate(c.rate)
            if due >= c.duration or (self.stop is not None and self.stop.is_set()):
                break
            delay = start + due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            lag = loop.time() - (start + due)
            self.schedule.max_lag_s = max(self.schedule.max_lag_s, lag)
            if len(tasks) >= c.max_in_flight:
                self.schedule.skipped += 1
                continue
            if lag > LATE_S:  # of the started ones: a skipped arrival is counted as skipped only
                self.schedule.late += 1
            name = self.rng.choices(names, weights)[0]
            task = asyncio.create_task(self._one(name, self.rng.randint(1, c.accounts)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            self.schedule.started += 1
            if progress and due >= next_progress:
                errors = sum(sum(r.errors.values()) for r in self.records.values())
                progress(f"{due:5.0f} s  {self.schedule.started} requests started, {errors} errors so far")
                next_progress += 5.0
        self.elapsed_s = min(due, c.duration)
        if tasks:
            await asyncio.wait(tasks)

    async def _one(self, name: str, account: int) -> None:
        record = self.records[name]
        t0 = time.perf_counter()
        try:
            outcome = await getattr(self, f"_{name}")(self.clients[name], account, record)
        except httpx.TimeoutException:
            outcome = "timeout"
        except httpx.TransportError as exc:
            outcome = type(exc).__name__
        if outcome is not None:  # a page view records each of its images itself
            record.add(outcome, time.perf_counter() - t0)

    async def _importer(self, client: httpx.AsyncClient, account: int, record: ServiceRecord) -> str:
        c = self.config
        rows = self.rng.choice(IMPORT_SIZES)
        body = contacts.make_csv(self.rng, account, rows, c.pool)
        r = await client.post(
            f"/address-books/{account}/imports",
            files={"file": ("contacts.csv", body)},
            data={"mapping": contacts.MAPPING},
            headers={"X-Account-Id": str(account), "Idempotency-Key": uuid.uuid4().hex},
        )
        record.extra["rows_sent"] += rows
        if r.status_code == 201:
            record.extra["imports_completed"] += 1
            return "ok"
        record.extra["imports_failed"] += 1
        return str(r.status_code)

    async def _opens(self, client: httpx.AsyncClient, account: int, record: ServiceRecord) -> str:
        c = self.config
        agent = self.rng.choices(self.agents, self.agent_weights)[0]
        if self.rng.random() < c.forged_share or not self.prepared.tokens:
            path = f"/o/{account}.1.1.forged.gif"
            record.extra["forged_hits"] += 1
        else:
            path = self.rng.choice(self.prepared.tokens)
            record.extra["valid_hits"] += 1
            if not agent:
                record.extra["blank_agent_hits"] += 1
        r = await client.get(path, headers={"User-Agent": agent, "X-Account-Id": str(account)})
        ok = r.status_code == 200 and r.headers.get("content-type") == "image/gif"
        if ok and not path.endswith(".forged.gif"):
            record.extra["valid_hits_answered"] += 1  # the tracker took it: from here on it must not be lost
        return "ok" if ok else str(r.status_code)

    async def _resizer(self, client: httpx.AsyncClient, account: int, record: ServiceRecord) -> None:
        """An editor page view: a burst of image requests at once."""
        count = self.rng.randint(*PAGE_IMAGES)
        picks = [(self.rng.choice(self.prepared.images), self.rng.choice(WIDTHS)) for _ in range(count)]
        record.extra["page_views"] += 1
        await asyncio.gather(*(self._image(client, account, record, image, w) for image, w in picks))

    async def _image(
        self, client: httpx.AsyncClient, account: int, record: ServiceRecord, image: setup.LibraryImage, width: int
    ) -> None:
        t0 = time.perf_counter()
        try:
            r = await client.get(f"/images/{image.id}", params={"w": width}, headers={"X-Account-Id": str(account)})
            outcome = "ok" if r.status_code == 200 else str(r.status_code)
            if r.status_code == 200 and not setup.image_is_right(r.content, image):
                record.extra["wrong_images"] += 1
        except httpx.TimeoutException:
            outcome = "timeout"
        except httpx.TransportError as exc:
            outcome = type(exc).__name__
        record.add(outcome, time.perf_counter() - t0)

    def report(self) -> dict[str, Any]:
        c, s = self.config, self.schedule
        return {
            "rate": c.rate,
            "duration_s": round(self.elapsed_s, 1),
            "schedule": {
                "requests_started": s.started,
                "achieved_rate": round(s.started / self.elapsed_s, 2) if self.elapsed_s else 0.0,
                "late_starts": s.late,
                "max_lag_ms": round(s.max_lag_s * 1000, 1),
                "skipped_too_many_in_flight": s.skipped,
                "fell_behind": s.late > 0.01 * max(s.started, 1) or s.skipped > 0,
            },
            "services": {name: record.summary() for name, record in self.records.items()},
        }


def run(
    config: LoadConfig, progress: Callable[[str], None] | None = None, stop: threading.Event | None = None
) -> dict[str, Any]:
    """The Python API for tests, benchmarks and the replay: run a load to completion (or until
    ``stop`` is set), return its report."""
    return asyncio.run(Load(config, stop).run(progress))
