"""The route table the controller publishes, and what its readers confirm back.

:meth:`TablePublisher.publish` builds the typed route table from every service's stable release,
its active rollout's desired state and where its releases answer (``routing.route_for``): a new
version (the clock's milliseconds) only when a route changed, and a changed weight goes to the
platform too (``set_weight``: where a gateway the platform sets splits traffic).  Routers and
queue consumers poll the table (:meth:`TablePublisher.poll`), which records what each one serves
(``routing.Readers``); it is refused (503, ``table_not_ready``) until a tick holding the lease has
built it from the stored rollouts (``ready``).  :meth:`TablePublisher.confirmation` says whether
every reader of a service's route serves the version that last changed it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from canary.controller import machine
from canary.controller.routing import Confirmation, Readers, route_for
from canary.platforms.base import Platform
from core.errors import ServiceUnavailable
from core.routes import RouteTable, ServiceRoute

log = logging.getLogger("releasewarden.controller")


class TablePublisher:
    def __init__(self, platform: Platform, clock: Callable[[], float]) -> None:
        self.platform = platform
        self.clock = clock
        self.table = RouteTable(0, {})
        self.published: dict[str, tuple[int, float]] = {}  # service -> (version, when) its route last changed
        self.readers = Readers(started_at=clock())
        # the table is served only once a tick holding the lease has built it from the stored
        # rollouts: before, it would name stable releases only (a 50% canary would get no traffic)
        self.ready = False

    def poll(self, reader: tuple[str, int] | None) -> dict[str, Any]:
        """A router's or consumer's poll: remember what it serves, answer the table."""
        if reader is not None:  # known even when refused: it serves a table, and must confirm the next
            self.readers.seen(reader[0], reader[1], self.clock())
        if not self.ready:  # routers keep the table they have on a 503
            raise ServiceUnavailable(
                "the route table is not built yet: this controller has not yet run a tick holding the lease",
                code="table_not_ready",
            )
        return self.table.to_dict()

    def reader_status(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [
            {"reader": r.name, "version": r.version, "seconds_since_poll": round(now - r.last_seen, 3)}
            for r in self.readers.current(now)
        ]

    async def publish(
        self,
        stable: dict[str, str],
        upstreams: dict[tuple[str, str], str],
        active: Iterable[machine.Rollout],
    ) -> None:
        """``stable``: service -> its stable release; ``upstreams``: (name, release) -> where it
        answers; ``active``: the active rollouts, as stored."""
        by_service = {r.spec.service: r for r in active}
        services: dict[str, ServiceRoute] = {}
        for service, release in stable.items():
            urls = {rel: url for (name, rel), url in upstreams.items() if name == service}
            try:
                route = route_for(service, release, urls, by_service.get(service))
                if route is not None:
                    _servable(route)
            except Exception as exc:  # one rollout the table cannot hold must not take every service's down
                log.error("%s: its rollout cannot be routed (%s: %s): stable alone", service, type(exc).__name__, exc)
                route = route_for(service, release, urls, None)
            if route is not None:
                services[service] = route
        if services == self.table.services:
            return
        before = self.table.services
        now = self.clock()
        # versions are milliseconds of the clock (and rise by at least one): a restarted controller's
        # table is newer than any a router kept from before, so "version >= N" still means "has it"
        self.table = RouteTable(max(self.table.version + 1, int(now * 1000)), services)
        for service, route in services.items():
            if before.get(service) != route:
                self.published[service] = (self.table.version, now)
            old = before.get(service)
            if route.weight != (old.weight if old else 0.0):
                await self.platform.set_weight(service, route.weight)

    def confirmation(self, service: str, consumers: tuple[str, ...]) -> Confirmation:
        """Has every reader of ``service``'s route (``consumers``: its queue consumers, by the
        catalog's names) applied the version that last changed it?"""
        version, since = self.published.get(service, (self.table.version, 0.0))
        return self.readers.confirm(service, version, since, self.clock(), consumers)


def _servable(route: ServiceRoute) -> None:
    """Raises unless every reader could take the route: a NaN (a stored spec an older version let
    through) would make every poll of the table fail, for every service."""
    json.dumps(RouteTable(0, {route.name: route}).to_dict(), allow_nan=False)
