"""The route table, the one contract between the controller (which owns it), the routers and the
queue consumers (which read it): per service, its upstreams per track, the canary weight,
stickiness and its per-rollout salt, mirroring and failover.  It lives in ``core`` because services
(queue consumers) read it too and never import ``canary``.
Parsed from a mapping (YAML file, admin endpoint or the controller's API) with errors
that name the field: ``services.resizer.weight: must be between 0 and 100``.

    version: 3
    services:
      resizer:
        upstreams: {stable: http://127.0.0.1:8101, canary: http://127.0.0.1:8102,
                    baseline: http://127.0.0.1:8103}
        releases: {stable: "1.0", canary: "2.0", baseline: "1.0"}
        weight: 5                     # percent of live traffic on the canary (fractions allowed)
        sticky: {header: X-Account-Id, salt: r-4f2a, groups: [500, 2500, 5000]}  # or {cookie: NAME} or
                                      # {path_param: 1}; salt: per rollout; groups: count per bucket group
        mirror: {share: 1.0, ignore_fields: [id, created_at], safe_routes: [], pixel_tolerance: 8,
                 stable_baseline: false}  # true: stable answers a mirrored request twice, the second
                                      # answer the baseline (where no baseline copy runs)
        failover: true
        timeout_s: 10
        routes: ["/images/{image_id}", "/images/{image_id}/info"]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

TRACKS = ("stable", "canary", "baseline")


class TableError(ValueError):
    """A route table that cannot be used; the message names the field."""


@dataclass(frozen=True)
class Sticky:
    header: str | None = None
    cookie: str | None = None
    path_param: int | None = None
    salt: str = ""  # per rollout, so that no customer is on every canary of a service
    # bucket-group boundaries (of 10,000, rising): the router counts requests and bad events per
    # group of the salted hash space (the reference group last), for the judge's sticky test
    groups: tuple[int, ...] = ()


@dataclass(frozen=True)
class Mirror:
    share: float = 0.0  # of safe requests to stable, also sent to the canary and compared
    ignore_fields: tuple[str, ...] = ()
    safe_routes: tuple[str, ...] = ()  # route templates safe to mirror besides GET/HEAD
    pixel_tolerance: float = 8.0  # mean absolute difference per channel (0-255) below which images match
    samples: int = 50
    # no baseline copy: stable answers each mirrored request a second time, and that answer is the
    # baseline (what differs between stable's two answers to one request is noise)
    stable_baseline: bool = False


@dataclass(frozen=True)
class ServiceRoute:
    name: str
    upstreams: dict[str, str]
    releases: dict[str, str] = field(default_factory=dict)
    weight: float = 0.0
    sticky: Sticky = Sticky()
    mirror: Mirror = Mirror()
    failover: bool = True
    timeout_s: float = 10.0
    routes: tuple[str, ...] = ()

    @property
    def threshold(self) -> int:
        """Buckets below this (of 10,000) go to the canary."""
        return round(self.weight * 100) if "canary" in self.upstreams else 0

    def release(self, track: str) -> str:
        return self.releases.get(track, "")


@dataclass(frozen=True)
class RouteTable:
    version: int
    services: dict[str, ServiceRoute]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.version, "services": {}}
        for name, r in self.services.items():
            out["services"][name] = {
                "upstreams": r.upstreams,
                "releases": r.releases,
                "weight": r.weight,
                # no sticky key at all reads back as no stickiness (an empty mapping would not parse)
                **({"sticky": sticky} if (sticky := _sticky_dict(r.sticky)) else {}),
                "mirror": {
                    **vars(r.mirror),
                    "ignore_fields": list(r.mirror.ignore_fields),
                    "safe_routes": list(r.mirror.safe_routes),
                },
                "failover": r.failover,
                "timeout_s": r.timeout_s,
                "routes": list(r.routes),
            }
        return out


def _sticky_dict(sticky: Sticky) -> dict[str, Any]:
    out = {k: v for k, v in vars(sticky).items() if v not in (None, "", ())}
    if "groups" in out:
        out["groups"] = list(out["groups"])
    return out if set(out) - {"salt", "groups"} else {}


def parse_table(data: Any) -> RouteTable:
    if not isinstance(data, dict):
        raise TableError("route table: must be a mapping with 'services'")
    version = data.get("version", 0)
    if not isinstance(version, int) or version < 0:
        raise TableError("version: must be a non-negative integer")
    services = data.get("services")
    if not isinstance(services, dict):
        raise TableError("services: must be a mapping of service name -> route")
    return RouteTable(version, {str(name): _service(str(name), raw) for name, raw in services.items()})


def _service(name: str, raw: Any) -> ServiceRoute:
    at = f"services.{name}"
    if not isinstance(raw, dict):
        raise TableError(f"{at}: must be a mapping")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise TableError(f"{at}: service names are letters, digits, - and _")
    upstreams = raw.get("upstreams")
    if not isinstance(upstreams, dict) or "stable" not in upstreams:
        raise TableError(f"{at}.upstreams: must map tracks to URLs and include stable")
    for track, url in upstreams.items():
        if track not in TRACKS:
            raise TableError(f"{at}.upstreams.{track}: unknown track (stable, canary, baseline)")
        _upstream_url(url, f"{at}.upstreams.{track}")
    releases = raw.get("releases", {})
    if not isinstance(releases, dict):
        raise TableError(f"{at}.releases: must map tracks to release names")
    weight = _num(raw.get("weight", 0), f"{at}.weight", 0, 100)
    if weight > 0 and "canary" not in upstreams:
        raise TableError(f"{at}.weight: a canary weight needs upstreams.canary")
    return ServiceRoute(
        name=name,
        upstreams={k: str(v).rstrip("/") for k, v in upstreams.items()},
        releases={str(k): str(v) for k, v in releases.items()},
        weight=weight,
        sticky=_sticky(raw.get("sticky"), f"{at}.sticky"),
        mirror=_mirror(raw.get("mirror"), f"{at}.mirror", "canary" in upstreams),
        failover=bool(raw.get("failover", True)),
        timeout_s=_num(raw.get("timeout_s", 10), f"{at}.timeout_s", 0.01, 600),
        routes=tuple(_strings(raw.get("routes", []), f"{at}.routes")),
    )


def _upstream_url(url: Any, at: str) -> None:
    """The router dials every request's upstream from this URL: refuse here what it could not dial
    (urlsplit raises on an unclosed IPv6 bracket; ``.port`` on a port that is no number 1-65535)."""
    try:
        parts = urlsplit(str(url))
        host = parts.hostname
    except ValueError:
        raise TableError(f"{at}: {url!r} is not an http(s) URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise TableError(f"{at}: {url!r} is not an http(s) URL")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:  # 0 too: the router would read it as no port and dial 80/443 instead
        raise TableError(f"{at}: bad port in {url!r}")


def _sticky(raw: Any, at: str) -> Sticky:
    if raw is None or raw == {}:  # to_dict writes no stickiness as {}
        return Sticky()
    if not isinstance(raw, dict):
        raise TableError(f"{at}: one of {{header: NAME}}, {{cookie: NAME}}, {{path_param: INDEX}}")
    raw = dict(raw)
    salt = raw.pop("salt", "")
    if not isinstance(salt, str) or len(salt) > 64:
        raise TableError(f"{at}.salt: must be a string of at most 64 characters")
    groups = _groups(raw.pop("groups", []), f"{at}.groups")
    if len(raw) != 1:
        raise TableError(f"{at}: one of {{header: NAME}}, {{cookie: NAME}}, {{path_param: INDEX}}")
    ((kind, value),) = raw.items()
    if kind == "header" and isinstance(value, str) and value:
        return Sticky(header=value.lower(), salt=salt, groups=groups)
    if kind == "cookie" and isinstance(value, str) and value:
        return Sticky(cookie=value, salt=salt, groups=groups)
    if kind == "path_param" and isinstance(value, int) and value >= 0:
        return Sticky(path_param=value, salt=salt, groups=groups)
    raise TableError(f"{at}.{kind}: not a valid sticky key")


MAX_GROUPS = 32  # the router keeps counters per group: a bounded label set


def _groups(raw: Any, at: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_GROUPS:
        raise TableError(f"{at}: must be a list of at most {MAX_GROUPS} bucket boundaries")
    if any(isinstance(b, bool) or not isinstance(b, int) or not 0 < b < 10_000 for b in raw):
        raise TableError(f"{at}: boundaries are whole buckets between 1 and 9999")
    if raw != sorted(set(raw)):
        raise TableError(f"{at}: boundaries must rise")
    return tuple(raw)


def _mirror(raw: Any, at: str, has_canary: bool) -> Mirror:
    if raw is None:
        return Mirror()
    if not isinstance(raw, dict):
        raise TableError(f"{at}: must be a mapping")
    share = _num(raw.get("share", 0), f"{at}.share", 0, 1)
    if share > 0 and not has_canary:
        raise TableError(f"{at}.share: mirroring needs upstreams.canary")
    return Mirror(
        share=share,
        ignore_fields=tuple(_strings(raw.get("ignore_fields", []), f"{at}.ignore_fields")),
        safe_routes=tuple(_strings(raw.get("safe_routes", []), f"{at}.safe_routes")),
        pixel_tolerance=_num(raw.get("pixel_tolerance", 8.0), f"{at}.pixel_tolerance", 0, 255),
        samples=int(_num(raw.get("samples", 50), f"{at}.samples", 0, 10_000)),
        stable_baseline=_flag(raw.get("stable_baseline", False), f"{at}.stable_baseline"),
    )


def _flag(value: Any, at: str) -> bool:
    if not isinstance(value, bool):
        raise TableError(f"{at}: must be true or false")
    return value


def _num(value: Any, at: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TableError(f"{at}: must be a number")
    if not lo <= value <= hi:
        raise TableError(f"{at}: must be between {lo:g} and {hi:g}")
    return float(value)


def _strings(value: Any, at: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TableError(f"{at}: must be a list of strings")
    return list(value)
