"""Samples the controller and the router once a second while the replay runs.

A release is a group (``POST /api/groups``): :class:`GroupTrack` keeps the group's phase over time
and its decisions, and one :class:`Track` per member rollout.  Each sample of a rollout holds its
phase and weight, the judge's counts per track for each metric, the router's counts for the canary
and stable releases (requests, errors, failovers) and the mirror's comparisons: the timeline the
live view shows and the report's charts are drawn from.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx

from canary.controller.group_spec import load_group

TERMINAL = frozenset({"succeeded", "rolled_back", "failed"})


@dataclass
class Track:
    rollout_id: str
    service: str
    release: str
    stable: str
    started: float  # replay clock when the rollout was created
    samples: list[dict[str, Any]] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)  # the last answer of GET /api/rollouts/{id}
    baseline: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)  # router counts at creation
    lossy_metrics: tuple[str, ...] = ()  # conservation metrics: their bad events are lost messages

    @property
    def done(self) -> bool:
        return self.detail.get("phase") in TERMINAL


@dataclass
class GroupTrack:
    """One group release: its id, when it was created (replay clock and controller clock), its
    members' tracks, and its phase once a second (``{"t", "phase", "settled"}``)."""

    group_id: str
    name: str
    started: float  # replay clock when the group was created
    created_at: float  # the controller's clock then (its decisions' ``at`` are on that clock)
    members: list[Track] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)  # the last answer of GET /api/groups/{id}

    @property
    def settled(self) -> bool:
        return bool(self.detail.get("settled"))

    @property
    def done(self) -> bool:
        return self.settled and all(t.done for t in self.members)


class Recorder:
    def __init__(self, controller_url: str, router_url: str, token: str, interval_s: float = 1.0) -> None:
        self.controller = httpx.Client(
            base_url=controller_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        self.router = httpx.Client(base_url=router_url, timeout=10)
        self.interval_s = interval_s
        self.t0 = time.time()
        self.tracks: list[Track] = []
        self.groups: list[GroupTrack] = []
        self.problems: list[str] = []  # sampling failures, said once each in the report
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="replay-recorder", daemon=True)

    def now(self) -> float:
        return time.time() - self.t0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.sample()  # the final state of every rollout
        self.controller.close()
        self.router.close()

    def release_group(self, text: str, deadline_s: float = 60.0) -> GroupTrack:
        """Create the group and a track per member, once the controller has created its rollout (the
        group's first tick links and creates the members that wait for nothing)."""
        baseline = self.router_counts()
        created = self.controller.post("/api/groups", content=text)
        if created.status_code != 201:
            raise RuntimeError(f"the controller refused the group: {created.text}")
        body = created.json()
        group = GroupTrack(body["id"], body["name"], self.now(), float(body["since"]))
        spec = load_group(text, "group")
        deadline = time.monotonic() + deadline_s
        while True:
            shown = self.controller.get(f"/api/groups/{group.group_id}").json()
            waiting = [m["name"] for m in shown["members"] if m["rollout"] is None and m["state"] != "cancelled"]
            if not waiting or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for m in shown["members"]:
            if m["rollout"] is None:
                continue  # never started (cancelled, or after: a dependency): not this replay's groups
            metrics = spec.member(m["name"]).rollout["metrics"]
            lossy = tuple(x["name"] for x in metrics if x.get("kind") == "conservation")
            stable = m["rollout"]["stable"]
            group.members.append(
                Track(
                    m["rollout"]["id"],
                    m["service"],
                    m["release"],
                    stable,
                    group.started,
                    baseline=baseline,
                    lossy_metrics=lossy,
                )
            )
        group.detail = shown
        with self._lock:
            self.tracks.extend(group.members)
            self.groups.append(group)
        return group

    def router_counts(self) -> dict[tuple[str, str], dict[str, int]]:
        """Cumulative router counts per (service, release), and mirror counts per (service, "mirror")."""
        snap = self.router.get("/_router/stats").json()
        out: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for row in snap["counters"]:
            for key in ("requests", "errors", "failovers"):
                out[(row["service"], row["release"])][key] += row[key]
        for row in snap["mirror"]:
            for key in ("compared", "different"):
                out[(row["service"], "mirror")][key] += row[key]
        return {k: dict(v) for k, v in out.items()}

    def sample(self) -> None:
        with self._lock:
            live = [t for t in self.tracks if not t.done or not t.samples]
            groups = [g for g in self.groups if not g.settled or not g.samples]
        if not live and not groups:
            return
        try:
            counts = self.router_counts()
            for track in live:
                detail = self.controller.get(f"/api/rollouts/{track.rollout_id}").json()
                track.detail = detail
                track.samples.append(_sample(self.now(), detail, counts, track))
            for group in groups:
                shown = self.controller.get(f"/api/groups/{group.group_id}").json()
                group.detail = shown
                group.samples.append({"t": round(self.now(), 2), "phase": shown["phase"], "settled": shown["settled"]})
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            problem = f"a sample was missed: {type(exc).__name__}: {exc}"
            if problem not in self.problems:
                self.problems.append(problem)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()


def _sample(
    t: float, detail: dict[str, Any], counts: dict[tuple[str, str], dict[str, int]], track: Track
) -> dict[str, Any]:
    judge = {
        name: {
            "verdict": j["verdict"],
            "canary": j["evidence"]["counts"]["canary"],
            "stable": j["evidence"]["counts"]["stable"],
            "e_value": j["evidence"]["regression"]["e_value"],
            "threshold": j["evidence"]["regression"]["threshold"],
        }
        for name, j in detail.get("judge", {}).items()
    }
    mirror = (detail.get("mirror") or {}).get("evidence") or {}
    return {
        "t": round(t, 2),
        "phase": detail["phase"],
        "mirror_evidence": {k: mirror[k] for k in ("e_value", "threshold")} if "threshold" in mirror else None,
        "weight": detail["weight"],
        "mirror_share": detail["mirror_share"],
        "reason": detail["reason"],
        "judge": judge,
        "router": {
            "canary": counts.get((track.service, track.release), {}),
            "stable": counts.get((track.service, track.stable), {}),
            "mirror": counts.get((track.service, "mirror"), {}),
        },
    }
