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
    override = headers.get(OVERRIDE)
    if override == "always" and "canary" in route.upstreams:
        return "canary"
    if override == "never":
        return "stable"
    threshold = route.threshold
    if threshold <= 0:
        return "stable"
    key = sticky_key(route, headers, segments)
    b = sticky_bucket(route, key) if key is not None else random.randrange(BUCKETS)
    if b < threshold:
        return "canary"
    if "baseline" in route.upstreams and b < 2 * threshold:
        return "baseline"
    return "stable"


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
