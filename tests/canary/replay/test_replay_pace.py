"""The replay's paces, checked in the simulator (the judge's own code, many runs): with the bakes the
replay shortens, each faulty release of 13 April is still rolled back and each reworked one promoted.

The faulty releases' bad rates are the ones measured in the replay's own world (the load it sends):
the open tracker's 1.1 lost 7 of 433 canary events (1.6%), the importer's 1.1 failed 7 of 50
imports (14%).  The resizer's 2.0 is caught by the mirror's comparison of answers, which the
simulator does not draw; its metrics are not simulated here.  The open tracker's traffic is drawn
per request (its lost-opens are split by message, whatever the sticky key); the importer's by
customer (1,000 accounts, no history on stable before the canary: the replay's pending phase, the
canary's few seconds of start, gathers little)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import yaml

from canary.analysis import loop
from canary.analysis.scenario import Scenario
from canary.replay.plan import DEMO, MIX, QUICK, SPECS, Pace, paced

RUNS = 300


def outcome(service: str, pace: Pace, metric: str, canary_rate: float, sticky: bool) -> tuple[float, float]:
    """(promoted share, rolled-back share) of the paced shipped spec of ``service``."""
    spec: dict[str, Any] = yaml.safe_load((SPECS / f"{service}.yaml").read_text(encoding="utf-8"))["spec"]
    rollout = paced(spec, pace)
    rollout.pop("mirror", None)
    data: dict[str, Any] = {
        "name": f"{service} at {pace}",
        "duration": 400,
        "rate": pace.load_rate * MIX[service],
        "baseline_error_rate": 0.0,
        "canary_error_rate": canary_rate,
        "faulty_metrics": [metric],
        "rollout": rollout,
        "seed": 7,
    }
    if sticky:
        data["customers"] = {"count": 1000, "error_spread": 1.0}
    result = loop.run(Scenario.from_dict(data), RUNS, np.random.default_rng(7))
    return float((~np.isnan(result.promoted_at)).mean()), float((~np.isnan(result.rolled_back_at)).mean())


@pytest.mark.parametrize("pace", [QUICK, DEMO], ids=["quick", "demo"])
def test_each_faulty_release_is_rolled_back_at_the_replays_pace(pace):
    opens = outcome("opens", pace, "lost-opens", 0.016, sticky=False)
    importer = outcome("importer", pace, "errors", 0.14, sticky=True)
    assert opens[0] <= 0.01 and importer[0] <= 0.01, (opens, importer)


def test_each_reworked_release_is_promoted_at_the_quick_pace():
    assert outcome("opens", QUICK, "lost-opens", 0.0, sticky=False)[0] >= 0.99
    assert outcome("importer", QUICK, "errors", 0.0, sticky=True)[0] >= 0.99


def test_a_raised_rate_floor_lets_the_open_trackers_fault_through():
    # the quick pace once raised every floor to 0.2: the last step then ruled out only a 40% loss
    coarse = dataclasses.replace(QUICK, min_rate_floor=0.2)
    assert outcome("opens", coarse, "lost-opens", 0.016, sticky=False)[0] >= 0.2
