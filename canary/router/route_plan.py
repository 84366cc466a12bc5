"""Everything about routing a request that depends only on the route table, worked out once per
table rather than once per request.

Where it sits: the proxy (``canary.router.proxy``) asks :meth:`TablePlans.plan` for the service of
each request and gets a :class:`RoutePlan`: the split (``canary.router.split.Splitter``), per track
the upstream's origin and the encoded pieces of a request line to it, and per path seen its
route template and the keys it is counted under (``canary.router.stats``: past a service's bound
on route labels, the template is ``OTHER_ROUTE``).  A new table (a new
object from the table source) gets new plans at its first request.
"""

from __future__ import annotations

from dataclasses import dataclass

from canary.router.split import Splitter, route_template
from canary.router.stats import RouterStats
from canary.router.upstream import Origin, origin_of
from core.routes import RouteTable, ServiceRoute

PATHS_CACHED = 10_000  # per route: ids make paths without end, so the cache is emptied when full
PATH_CACHED_CHARS = 256  # longer paths are named each time: the cache stays a few megabytes at most


@dataclass(frozen=True)
class Target:
    """One track's upstream, with the request line's fixed parts encoded."""

    track: str
    url: str
    origin: Origin
    release: str
    line_start: bytes  # b"GET " and the upstream URL's own path prefix
    line_end: bytes  # b" HTTP/1.1\r\nhost: <host:port>\r\n"


@dataclass(frozen=True)
class PathPlan:
    """A path's route template, and per track the key it is counted under."""

    template: str
    keys: dict[str, tuple[str, str, str, str]]  # track -> (service, track, release, template)


class RoutePlan:
    def __init__(self, route: ServiceRoute, stats: RouterStats | None = None) -> None:
        self.route = route
        self.name = route.name
        counts = stats.group_counts(route.name, route.sticky) if stats is not None and route.sticky.groups else None
        self.splitter = Splitter(route, counts)
        self.lean = route.mirror.share <= 0  # a mirrored request needs its answer kept: the task path
        self.failover = route.failover
        self.timeout_s = route.timeout_s
        self.targets: dict[str, Target] = {}
        for track, url in route.upstreams.items():
            origin = origin_of(url)
            self.targets[track] = Target(
                track,
                url,
                origin,
                route.release(track),
                b"GET " + origin.prefix.encode("latin-1"),
                b" HTTP/1.1\r\nhost: " + origin.host_header + b"\r\n",
            )
        self.paths: dict[str, PathPlan] = {}  # by path (the proxy looks here first)
        self.stats = stats
        self.configured = frozenset(route.routes) | frozenset(route.mirror.safe_routes)

    def path(self, rest: str) -> PathPlan:
        """``rest``: the request's path after the service's name, without its slash and the query."""
        plan = self.paths.get(rest)
        if plan is None:
            if len(self.paths) >= PATHS_CACHED:
                self.paths.clear()
            template = route_template(self.route, "/" + rest)
            if self.stats is not None:  # the label it is counted under: bounded per service
                template = self.stats.route_label(self.name, template, self.configured)
            keys = {t.track: (self.name, t.track, t.release, template) for t in self.targets.values()}
            plan = PathPlan(template, keys)
            if len(rest) <= PATH_CACHED_CHARS:
                self.paths[rest] = plan
        return plan


class TablePlans:
    """The plans of the table being served; rebuilt when the table object changes."""

    def __init__(self, stats: RouterStats | None = None) -> None:
        self.stats = stats
        self.of: RouteTable | None = None  # the table ``current`` was made for
        self.current: dict[str, RoutePlan] = {}  # by service (the proxy looks here first)

    def plan(self, table: RouteTable, service: str) -> RoutePlan | None:
        if table is not self.of:
            self.of, self.current = table, {}
        plan = self.current.get(service)
        if plan is None:
            route = table.services.get(service)
            if route is None:
                return None
            plan = self.current[service] = RoutePlan(route, self.stats)
        return plan
