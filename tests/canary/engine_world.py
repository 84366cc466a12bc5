"""The engine's test world: a real SQLite store, an injected clock, and in-process fakes at the
project's own Protocols (a platform that runs nothing, a provider whose counters the test drives);
the table's readers are simulated by polling with their headers.  Used by the engine's tests
(test_engine: the loop; test_engine_table: the route table and its readers; test_observing:
what a tick sees and judges) and the hooks' and groups'."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from canary.controller import machine as m
from canary.controller.bootstrap import bootstrap
from canary.controller.engine import Controller
from canary.controller.store import Store, metadata
from canary.platforms.base import Instance, NotReady
from canary.providers.base import Counts, MetricQuery, ProviderUnavailable, TrackCounts
from core.db import create_schema, make_engine
from core.errors import DependencyUnavailable, ServiceUnavailable
from core.settings import Settings

RELEASES = {"importer": ["1.0", "1.1", "1.2"], "resizer": ["1.0", "2.0", "2.1"]}


class FakePlatform:
    """Releases 'run' as entries; ``broken`` releases refuse to start, as a missing one would;
    ``hanging`` ones never finish starting (a process that never answers its ready path) until
    the start is cancelled, which ``cancelled`` records; ``said`` is what it says of a release
    that is not ready (by default nothing)."""

    warm_old_release = True

    def __init__(self) -> None:
        self.running_: dict[tuple[str, str], str] = {}
        self.broken: set[str] = set()
        self.hanging: set[str] = set()
        self.cancelled: list[tuple[str, str]] = []
        self.said: dict[tuple[str, str], NotReady] = {}
        self.starts = 0

    async def start(self, service: str, release: str, track: str) -> Instance:
        if release in self.broken:
            raise DependencyUnavailable(f"{service} {release} exited at start: unknown release {release!r}")
        if release in self.hanging:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.append((service, release))
                raise
        if (service, release) not in self.running_:
            self.starts += 1
        self.running_[(service, release)] = track
        return Instance(service, release, track, f"http://127.0.0.1:1/{service}/{release}")

    async def healthy(self, service: str, release: str) -> bool:
        return (service, release) in self.running_

    async def stop(self, service: str, release: str) -> None:
        self.running_.pop((service, release), None)

    async def running(self) -> list[Instance]:
        return [Instance(s, r, t, "") for (s, r), t in self.running_.items()]

    async def set_weight(self, service: str, weight: float) -> None:
        pass

    async def retire_canary(self, service: str) -> None:
        pass

    async def known_releases(self, service: str) -> list[str] | None:
        return RELEASES.get(service)

    async def not_ready(self, service: str, release: str) -> NotReady:
        return self.said.get((service, release), NotReady(""))

    async def close(self) -> None:
        pass


@dataclass
class Track:
    events: int = 0
    bad: int = 0


@dataclass
class FakeProvider:
    """Cumulative counters per (service, track, release), as the router keeps them."""

    counts: dict[tuple[str, str, str], Track] = field(default_factory=dict)
    down: bool = False

    def serve(self, service: str, track: str, release: str, events: int, bad: int = 0) -> None:
        t = self.counts.setdefault((service, track, release), Track())
        t.events, t.bad = t.events + events, t.bad + bad

    async def cumulative(self, q: MetricQuery) -> TrackCounts:
        if self.down:
            raise ProviderUnavailable("the router's stats did not answer")
        c = self.counts.get((q.service, "canary", q.canary_release), Track())
        s = self.counts.get((q.service, "stable", q.stable_release), Track())
        return TrackCounts(Counts(c.events, c.bad), Counts(s.events, s.bad))


SPEC = """
apiVersion: releasewarden/v1
kind: Rollout
spec:
  service: {service}
  stable: "1.0"
  canary: "{canary}"
  steps:
    - {{weight: 10, min_requests: 20, min_seconds: 2, max_seconds: 600}}
    - {{weight: 50, min_requests: 20, min_seconds: 2, max_seconds: 600}}
  metrics:
    - {{name: errors, kind: errors, rate_floor: 0.2, min_regression: 3}}
  watch: {{seconds: {watch}, holdback: 10}}
"""


class World:
    def __init__(self, tmp_path, stable=None) -> None:
        self.engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
        create_schema(self.engine, metadata)
        self.store = Store(self.engine)
        self.now = 1000.0
        self.platform = FakePlatform()
        self.provider = FakeProvider()
        self.stable = stable or {"importer": "1.0", "resizer": "1.0"}
        self.holder = "world"
        self.controller = self.new_controller()

    def new_controller(self) -> Controller:
        c = bootstrap(
            Settings(admin_token="t"),
            store=self.store,
            platform=self.platform,
            provider=self.provider,
            clock=lambda: self.now,
            stable=self.stable,
            holder=self.holder,  # a restart in place: the same name takes the lease back at once
        )
        asyncio.run(c.start_stable())
        return c

    def release(self, service="importer", canary="1.1", watch=30) -> m.Rollout:
        return asyncio.run(self.controller.create_rollout(SPEC.format(service=service, canary=canary, watch=watch)))

    def tick(self, seconds: float = 0.5, reader: str | None = None, lag: int = 0) -> None:
        self.now += seconds
        if reader:  # a router polls with the version it serves (lag: that many versions behind)
            served = self.controller.table.version - lag if lag >= 0 else 0
            with contextlib.suppress(ServiceUnavailable):  # before the first tick with the lease: kept table
                self.controller.poll_table((reader, served))
        asyncio.run(self.controller.tick())

    def get(self, r: m.Rollout) -> m.Rollout:
        return self.store.get(r.id)

    def traffic(self, service: str, canary: str, canary_bad: int = 0, stable_release: str = "1.0") -> None:
        self.provider.serve(service, "canary", canary, 20, canary_bad)
        self.provider.serve(service, "stable", stable_release, 200, 0)


def drive(world: World, r: m.Rollout, until, reader: str | None = "router/a", ticks: int = 200, **traffic) -> m.Rollout:
    for _ in range(ticks):
        world.traffic(r.spec.service, r.spec.canary, **traffic)
        world.tick(reader=reader)
        now = world.get(r)
        if until(now):
            return now
    raise AssertionError(f"never reached the condition: {world.get(r)}")
