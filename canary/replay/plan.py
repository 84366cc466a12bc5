"""What the replay releases, what the incident report says happened, and how fast the replay runs.

The incident (``../shared/seed/incident-report.txt``), in minutes after the release began at 06:31
UTC: the importer's errors were seen at +4 and it was rolled back at +14; the open tracker's at +4
and reverted at +34, with open data lost; the resizer showed its first errors at +93, customers
reported missing images at +153, and it was reverted at +167.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canary.controller.group_spec import inline, load_group
from canary.traffic.load import LoadConfig

SERVICES = ("importer", "opens", "resizer")
STABLE = {"importer": "1.0", "opens": "1.0", "resizer": "1.0"}
FAULTY = {"importer": "1.1", "opens": "1.1", "resizer": "2.0"}
REWORKED = {"importer": "1.2", "opens": "1.2", "resizer": "2.1"}
MIX = {"importer": 0.15, "opens": 0.82, "resizer": 0.03}
MANIFESTS = Path(__file__).resolve().parent.parent.parent / "manifests"
SPECS = MANIFESTS / "rollouts"
GROUP = MANIFESTS / "groups" / "april-13.yaml"  # the release as one group (independent members)


@dataclass(frozen=True)
class IncidentEvent:
    minute: float
    what: str


INCIDENT: dict[str, list[IncidentEvent]] = {
    "importer": [
        IncidentEvent(0, "release 1.1 begins"),
        IncidentEvent(4, "errors seen in the contact importer"),
        IncidentEvent(14, "rolled back, 10 minutes after the errors were seen"),
    ],
    "opens": [
        IncidentEvent(0, "release 1.1 begins"),
        IncidentEvent(4, "errors seen in the event parser"),
        IncidentEvent(34, "reverted, 30 minutes later: open data was lost meanwhile"),
    ],
    "resizer": [
        IncidentEvent(0, "release 2.0 begins"),
        IncidentEvent(93, "a few errors, taken for a brief database connection issue"),
        IncidentEvent(153, "customers report missing images in the editor"),
        IncidentEvent(167, "reverted, 74 minutes after the first errors"),
    ],
}
INCIDENT_ROLLBACK_MIN = {"importer": 10, "opens": 30, "resizer": 74}


@dataclass(frozen=True)
class Pace:
    """How much shorter than the shipped specs the replay's bakes are.

    ``factor`` scales every bake's minimum (seconds and request counts, mirror phase included);
    the watch after promotion is scaled too and capped at ``max_watch_s``.  Time limits stay as
    shipped, and the judge's statistics are not changed.  A shorter bake is not free: a step
    before the last passes on "no strong evidence yet", and the last step's pass rule rules out
    ``min_regression`` times the rate floor, so a raised floor (``min_rate_floor``) promotes a
    canary whose bad rate is below it unless the regression test has caught it by then.  The
    paces below are checked in the simulator against the faulty releases' measured bad rates
    (``tests/canary/test_replay_pace.py``).
    """

    factor: float = 0.2
    max_watch_s: float = 20.0
    load_rate: float = 90.0
    min_rate_floor: float = 0.0  # raises each metric's rate floor to at least this (a coarser pass rule)


# `make demo`: a few minutes.  Its last steps need to see a 5% bad rate double; with the shipped
# floors (0.5-2%) and this machine's traffic they would take 10-30 minutes to pass a healthy canary.
DEMO = Pace(min_rate_floor=0.05)
# the test suite's replay: seconds, not minutes, at the shipped rate floors.  A raised floor made it a
# coin toss: at 0.2 the open tracker's 1.1 (1.6% of events lost) was promoted in 43% of simulated
# runs, the importer's 1.1 in 19% (both were, once each, in CI)
QUICK = Pace(factor=0.05, max_watch_s=4.0, load_rate=70.0)


def group_text(name: str, releases: dict[str, str], pace: Pace) -> str:
    """The shipped group of 13 April (``manifests/groups/april-13.yaml``: one member per service, its
    own shipped rollout spec) named ``name``, releasing ``releases``, every member's bakes shortened
    by ``pace``; its members' rollouts inline, as ``canary release --group`` sends it."""
    shipped = load_group(GROUP.read_text(encoding="utf-8"), str(GROUP), GROUP.parent)
    if {m.service for m in shipped.members} != set(releases):
        raise ValueError(f"{GROUP} releases {', '.join(m.service for m in shipped.members)}, not {', '.join(releases)}")
    members = tuple(
        dataclasses.replace(m, release=releases[m.service], rollout=paced(m.rollout, pace)) for m in shipped.members
    )
    return inline(dataclasses.replace(shipped, name=name, members=members))


def paced(spec: dict[str, Any], pace: Pace) -> dict[str, Any]:
    """A rollout spec's fields with the bakes shortened by ``pace`` (a deep copy: the input is kept)."""
    spec = copy.deepcopy(spec)
    for step in spec["steps"]:
        _shorten(step, pace.factor, "min_seconds", "min_requests")
    if "mirror" in spec:
        _shorten(spec["mirror"], pace.factor, "min_seconds", "min_compared")
    if pace.min_rate_floor:
        for metric in spec["metrics"]:
            metric["rate_floor"] = max(metric.get("rate_floor", 0.0), pace.min_rate_floor)
    if "watch" in spec:
        spec["watch"]["seconds"] = round(min(spec["watch"]["seconds"] * pace.factor, pace.max_watch_s), 1)
    return spec


def _shorten(block: dict[str, Any], factor: float, seconds: str, count: str) -> None:
    if seconds in block:
        block[seconds] = round(block[seconds] * factor, 1)
    if count in block:
        block[count] = max(10, round(block[count] * factor))


def load_config(router_url: str, admin_token: str, pace: Pace, seed: int) -> LoadConfig:
    """Traffic shaped like the product's: mostly pixel hits, some imports, a few editor page views
    (each a burst of image requests).  The load runs until the replay stops it."""
    return LoadConfig(
        importer=f"{router_url}/importer",
        opens=f"{router_url}/opens",
        resizer=f"{router_url}/resizer",
        rate=pace.load_rate,
        duration=3600,
        mix=MIX,
        accounts=1000,  # enough customers that sticky routing gives even a 1% step a few of them
        pool=30,
        admin_token=admin_token,
        seed=seed,
    )
