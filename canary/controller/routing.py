"""What the controller tells the data plane, and what the data plane confirms back.

``route_for`` turns a service's stable release and its active rollout's desired state into a typed
:class:`core.routes.ServiceRoute` (sticky routing salted per rollout, so no customer is on every
canary of a service; during the watch the old release holds back a share on the canary track).

:class:`Readers` records every router and queue consumer that polls ``GET /api/routes`` with
``X-Table-Reader: <kind>/<id>`` and ``X-Table-Version: <version it serves>``.  A reader is *live*
while it polled within ``LIVE_S``; one silent longer is *unconfirmed* (it may still serve an old
table: the rollout holds, with its name in the reason) until ``FORGET_S``, after which it is taken
for gone (a router removed on purpose must not hold rollouts for ever); a queue consumer of a
release the controller stopped is forgotten at once.  A queue consumer is named
``consumer/<name>@<release>`` and confirms only its own service's route; routers confirm all.
A weight counts as applied when every reader known has confirmed a version at least the one
that carried it; when no reader ever polled (traffic split by a gateway the platform sets), the
platform's ``set_weight`` is the confirmation, after ``APPLY_GRACE_S``.  A reader still behind
``HOLD_AFTER_S`` after a change is named (the rollout holds, and says who); before that the change
is merely not confirmed yet.
"""

from __future__ import annotations

from dataclasses import dataclass

from canary.controller import machine
from canary.controller.judging import bucket_boundaries
from canary.controller.spec import MirrorBaseline, RolloutSpec
from core.routes import Mirror, ServiceRoute, Sticky

LIVE_S = 3.0  # readers poll every 0.5 s: three seconds of silence is six missed polls
FORGET_S = 120.0
APPLY_GRACE_S = 1.0
HOLD_AFTER_S = 2.0  # a reader behind for longer than this after a change is named and holds the rollout
READER_KINDS = ("router", "consumer")
MAX_READER_NAME = 200


@dataclass
class Reader:
    name: str  # router/127.0.0.1:8080, consumer/mail-worker@1.1
    version: int  # the table version it serves
    first_seen: float
    last_seen: float


@dataclass(frozen=True)
class Confirmation:
    confirmed: bool
    waiting_for: str = ""  # readers that do not confirm yet, named, with what they serve


class Readers:
    def __init__(self, started_at: float = 0.0) -> None:
        self.known: dict[str, Reader] = {}
        # a controller that just (re)started has not heard from the readers yet: "no reader" is
        # believed only after they have had time to poll, not at once
        self.started_at = started_at

    def seen(self, name: str, version: int, now: float) -> None:
        r = self.known.get(name)
        if r is None:
            self.known[name] = Reader(name, version, now, now)
        else:
            r.version, r.last_seen = version, now

    def current(self, now: float) -> list[Reader]:
        for name in [n for n, r in self.known.items() if now - r.last_seen > FORGET_S]:
            del self.known[name]
        return sorted(self.known.values(), key=lambda r: r.name)

    def forget(self, name: str) -> None:
        """A reader the controller stopped itself (a release's queue consumer) is not waited for."""
        self.known.pop(name, None)

    def confirm(
        self, service: str, version: int, since: float, now: float, consumers: tuple[str, ...] = ()
    ) -> Confirmation:
        """Has every reader of ``service``'s route applied ``version`` (published at ``since``)?
        ``consumers``: the service's queue consumers, by the catalog's names."""
        readers = [r for r in self.current(now) if reads(r.name, service, consumers)]
        if not readers:
            return Confirmation(now - since >= APPLY_GRACE_S and now - self.started_at >= LIVE_S)
        behind = []
        fresh = now - since < HOLD_AFTER_S  # readers poll every 0.5 s: not behind yet, only not there yet
        for r in readers:
            if now - r.last_seen > LIVE_S:
                # no seconds in the words: the reason stays the same while it lasts (one decision, not one a tick)
                behind.append(f"{r.name} (silent for over {LIVE_S:g} s, last serving table {r.version})")
            elif r.version < version:
                behind.append(f"{r.name} (serving table {r.version}, needs {version})")
        return Confirmation(not behind, "" if fresh else ", ".join(behind))


def reads(reader: str, service: str, consumers: tuple[str, ...] = ()) -> bool:
    """Routers route every service; a queue consumer ``consumer/NAME@RELEASE`` reads only its own
    service's route: NAME is one of the service's consumers in the catalog (whatever it is called),
    or the service itself, or named after it (``mail-worker`` reads ``mail``)."""
    kind, _, ident = reader.partition("/")
    if kind != "consumer":
        return True
    name = ident.partition("@")[0]
    return name == service or name in consumers or name.startswith(f"{service}-")


def parse_reader(kind_and_id: str | None, version: str | None) -> tuple[str, int] | None:
    """The headers of a poll -> (reader name, version), or None when it is not a reader's poll."""
    if not kind_and_id:
        return None
    kind, sep, ident = kind_and_id.partition("/")
    if not sep or kind not in READER_KINDS or not ident or len(kind_and_id) > MAX_READER_NAME:
        return None
    try:
        served = int(version or 0)
    except ValueError:
        served = 0
    return kind_and_id, max(0, served)


GROUPED = (machine.PENDING, machine.MIRRORING, machine.PROGRESSING, machine.PAUSED)


def sticky_for(r: machine.Rollout) -> Sticky:
    s = r.spec.sticky
    salt = r.id[:16]  # per rollout: the canary's customers change from one rollout to the next
    # until promotion the routers count per bucket group of this salt (the judge's sticky test),
    # from the moment the salt is in the table: the first group's history is measured on stable
    if not s:  # sticky: none: each request draws its own bucket, no groups to count
        return Sticky(salt=salt)
    groups = bucket_boundaries(r.spec) if r.phase in GROUPED else ()
    if "cookie" in s:
        return Sticky(cookie=str(s["cookie"]), salt=salt, groups=groups)
    if "path_param" in s:
        return Sticky(path_param=int(s["path_param"]), salt=salt, groups=groups)
    return Sticky(header=str(s.get("header", "X-Account-Id")).lower(), salt=salt, groups=groups)


def route_for(
    service: str, stable_release: str, urls: dict[str, str], r: machine.Rollout | None
) -> ServiceRoute | None:
    """``urls``: release -> where it answers.  None when stable does not run (yet)."""
    stable_url = urls.get(stable_release, "")
    if r is None:
        return ServiceRoute(service, {"stable": stable_url}, {"stable": stable_release}) if stable_url else None
    d = machine.desired(r)
    stable_url = urls.get(d.stable_release, "")
    if not stable_url:
        return None
    upstreams, releases = {"stable": stable_url}, {"stable": d.stable_release}
    weight, mirror = 0.0, Mirror()
    other = _other_release(r.spec, d)
    other_url = urls.get(other, "") if other else ""
    if other and other_url:
        upstreams["canary"], releases["canary"] = other_url, other
        weight = d.weight
        if d.mirror_share and r.spec.mirror:
            m = r.spec.mirror
            mirror = Mirror(
                share=d.mirror_share,
                ignore_fields=m.ignore_fields,
                pixel_tolerance=m.pixel_tolerance,
                stable_baseline=m.baseline == MirrorBaseline.STABLE,
            )
    return ServiceRoute(
        service, upstreams, releases, weight=weight, sticky=sticky_for(r), mirror=mirror, failover=r.spec.failover
    )


def _other_release(spec: RolloutSpec, d: machine.Desired) -> str:
    """The release on the canary track: the canary, or during the watch the held-back old release."""
    if d.canary_running and d.stable_release != spec.canary:
        return spec.canary
    if d.holdback:
        return spec.stable
    return ""
