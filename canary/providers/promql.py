"""The PromQL the Prometheus provider asks, per metric kind: what the router and the queue consumers
expose, as ``string.Template`` texts (PromQL's braces stay literal) that ``fill`` completes.

The built-in templates select raw counter series, never ``sum(...)`` of them: the provider adds
the series up itself, so that one restarted router or consumer (its series going down) is taken
as that series counting from zero, not as every series starting again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from string import Template

from canary.providers.base import ConservationCounters, MetricQuery, ProviderUnavailable, conservation_of

_TRACK = '{service="$service",track="$track",release="$release"}'
# kind -> (events, bad): per track, counter series
COUNTERS: dict[str, tuple[str, str]] = {
    "errors": (f"router_requests_total{_TRACK}", f"router_errors_total{_TRACK}"),
}
# mirror, per side: the canary's answers compared with stable's, and (on the stable side) the
# baseline's answers compared with stable's: the noise; no baseline, no series: nothing compared
_SERVICE = '{service="$service"}'
MIRROR: dict[str, tuple[str, str]] = {
    "canary": (f"router_mirror_compared_total{_SERVICE}", f"router_mirror_different_total{_SERVICE}"),
    "stable": (f"router_mirror_baseline_compared_total{_SERVICE}", f"router_mirror_baseline_different_total{_SERVICE}"),
}
OPTIONAL_STABLE = frozenset({"mirror"})  # kinds whose stable side may have no series at all
_WINDOW = re.compile(r"\$(?:window\b|\{window\})")
# latency: one series per bucket boundary (``le``), the whole histogram of a track
LATENCY_BUCKETS = f"router_request_duration_seconds_bucket{_TRACK}"
# sticky routing: per bucket group (``group``) of the rollout's salt and boundaries, whatever track
_GROUPS = '{service="$service",salt="$salt",boundaries="$boundaries"}'
STICKY_GROUPS = (
    f"router_sticky_group_requests_total{_GROUPS}",
    f"router_sticky_group_errors_total{_GROUPS}",
    f"router_sticky_group_canary_requests_total{_GROUPS}",
)
# a gauge (a level per router): the distinct customers a router has seen per group; never summed
# over routers (one customer may reach several): the provider takes the router that has seen most
STICKY_CUSTOMERS = f"router_sticky_group_customers{_GROUPS}"


@dataclass(frozen=True)
class Conservation:
    """A conservation metric's counters, each read by itself: acknowledged, and those accounted for."""

    acknowledged: str
    accounted: tuple[str, ...]


def conservation(sources: dict[str, ConservationCounters], service: str) -> Conservation:
    source = conservation_of(sources, service)
    return Conservation(_by_release(source.acknowledged), tuple(_by_release(n) for n in source.accounted))


def _by_release(counter: str) -> str:
    return counter + '{release="$release"}'  # a name the catalog checked: [a-zA-Z_:][a-zA-Z0-9_:]*


def query_templates(query: MetricQuery, track: str) -> tuple[str, str]:
    """The (events, bad) templates of a kind read as a pair of counters on ``track``, or a query
    metric's own."""
    if query.kind == "query":
        if not (query.events_query and query.bad_query):
            raise ProviderUnavailable("a query metric needs events_query and bad_query")
        return query.events_query, query.bad_query
    if query.kind == "mirror":
        return MIRROR[track]
    if query.kind not in COUNTERS:
        raise ProviderUnavailable(f"the Prometheus provider has no metric of kind {query.kind!r}")
    return COUNTERS[query.kind]


def fill(template: str, values: dict[str, str]) -> str:
    """The template with the values, each escaped as the inside of a PromQL string ("..."); the
    names it does not know (``$window``) stay for later."""
    return Template(template).safe_substitute({k: _escaped(v) for k, v in values.items()})


def with_window(promql: str, seconds: float) -> str:
    """An increase template's ``$window`` (or ``${window}``) as a PromQL duration."""
    return _WINDOW.sub(f"{round(seconds * 1000)}ms", promql)


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")  # a PromQL string's escapes


def is_increase(template: str) -> bool:
    """An increase template names ``$window``; a counter template does not (see the provider)."""
    return _WINDOW.search(template) is not None
