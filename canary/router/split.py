"""Choosing a track for a request, and naming its route for metrics.

A request with a sticky key (a header, cookie or path segment, such as the account id) hashes to a
bucket in 0..9999 (``core.hashing``: the same on every replica), salted per rollout so that the
same customers are not on every canary of a service; buckets below the weight's
threshold go to the canary.  Raising the weight only adds buckets, so a customer moves only from
stable to canary, never back, while the rollout advances.  Without a key each request draws its own
bucket.  ``X-Canary: always|never`` overrides both, for testers.  A baseline copy of stable, when
configured, takes the same share of traffic as the canary, from the buckets just above it.
"""

from __future__ import annotations

import bisect
import random
import re
from http.cookies import SimpleCookie

from canary.router.stats import StickyGroupCounts
from core.hashing import BUCKETS, bucket
from core.routes import ServiceRoute

OVERRIDE = "x-canary"
_ID_SEGMENT = re.compile(r"^(\d+|[0-9a-f]{16,}|[0-9a-fA-F-]{32,36}|.*\.gif|[^/]*\.[^/]*\.[^/]*\..+)$")


def sticky_key(route: ServiceRoute, headers: dict[str, str], segments: list[str]) -> str | None:
    s = route.sticky
    if s.header:
        return headers.get(s.header) or None
    if s.cookie:
        raw = headers.get("cookie")
        if raw:
            morsel = SimpleCookie(raw).get(s.cookie)
            return morsel.value if morsel else None
        return None
    if s.path_param is not None and s.path_param < len(segments):
        return segments[s.path_param] or None
    return None


def sticky_bucket(route: ServiceRoute, key: str) -> int:
    salt = route.sticky.salt
    return bucket(f"{route.name}:{salt}:{key}" if salt else f"{route.name}:{key}")


def sticky_group(route: ServiceRoute, headers: dict[str, str], segments: list[str]) -> int:
    """The bucket group of the request's customer (``route.sticky.groups`` cut the salted hash
    space; the last group, above the last boundary, is the reference), or -1 without a key."""
    key = sticky_key(route, headers, segments)
    if key is None:
        return -1
    return bisect.bisect_right(route.sticky.groups, sticky_bucket(route, key))


def choose_track(route: ServiceRoute, headers: dict[str, str], segments: list[str]) -> str:
    return Splitter(route).choose(headers, "/".join(segments))[0]


class Splitter:
    """One route's split, with what depends only on the table worked out once (the proxy keeps one
    per route per table): the threshold, the canary's share, and the buckets of sticky keys seen
    (a bounded cache: hashing a key is most of a sticky request's split)."""

    BUCKETS_CACHED = 10_000
    KEY_CACHED_CHARS = 128  # longer keys are hashed each time: the cache stays a few megabytes at most

    def __init__(self, route: ServiceRoute, customers: StickyGroupCounts | None = None) -> None:
        """``customers``: where the sticky groups' distinct customers are counted (the router's stats;
        only for a route whose table asks for bucket groups)."""
        self.route = route
        self.customers = customers
        self.threshold = route.threshold
        self.share = self.threshold / BUCKETS  # a keyless request: canary below, baseline below twice it
        self.always = "canary" if "canary" in route.upstreams else None
        self.baseline = "baseline" in route.upstreams
        sticky = route.sticky
        self.keyed = bool(sticky.header or sticky.cookie or sticky.path_param is not None)
        self.header = sticky.header
        self.groups = sticky.groups
        self._buckets: dict[str, int] = {}

    def bucket(self, key: str) -> int:
        b = self._buckets.get(key)
        if b is None:
            b = sticky_bucket(self.route, key)
            if self.customers is not None:  # a key new to this split: perhaps a customer new to the rollout
                self.customers.saw(key, bisect.bisect_right(self.groups, b))
            if len(key) <= self.KEY_CACHED_CHARS:
                if len(self._buckets) >= self.BUCKETS_CACHED:
                    self._buckets.clear()
                self._buckets[key] = b
        return b

    def choose(self, headers: dict[str, str], rest: str) -> tuple[str, int]:
        """(the track, the sticky bucket group or -1) of a request; ``rest``: its path after the
        service's name, without the leading slash."""
        key: str | None = None
        if self.keyed:
            key = headers.get(self.header) or None if self.header else sticky_key(self.route, headers, rest.split("/"))
        b = -1 if key is None else self.bucket(key)
        group = bisect.bisect_right(self.groups, b) if self.groups and b >= 0 else -1
        override = headers.get(OVERRIDE)
        if override is not None:
            if override == "always" and self.always:
                return self.always, group
            if override == "never":
                return "stable", group
        if self.threshold <= 0:
            return "stable", group
        if b < 0:
            r = random.random()
            if r < self.share:
                return "canary", group
            return "baseline" if self.baseline and r < 2 * self.share else "stable", group
        if b < self.threshold:
            return "canary", group
        if self.baseline and b < 2 * self.threshold:
            return "baseline", group
        return "stable", group


def route_template(route: ServiceRoute, path: str) -> str:
    """The route's template for metric labels: configured templates first, else ids folded to ``{id}``."""
    segments = path.strip("/").split("/") if path.strip("/") else []
    for template in route.routes:
        parts = template.strip("/").split("/")
        if len(parts) == len(segments) and all(
            p.startswith("{") or p == s for p, s in zip(parts, segments, strict=True)
        ):
            return template
    return "/" + "/".join("{id}" if _ID_SEGMENT.match(seg) else seg for seg in segments)
