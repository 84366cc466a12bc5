"""The replay's per-release figures, from recorded samples (no servers: the figures are pure)."""

from __future__ import annotations

from canary.replay.figures import release_figures
from canary.replay.recorder import Track


def sample(t: float, phase: str, lost: int | None) -> dict:
    judge = {} if lost is None else {"lost-opens": {"verdict": "continue", "canary": {"bad": lost}}}
    return {"t": t, "phase": phase, "weight": 10, "mirror_share": 0, "reason": "", "judge": judge, "router": {}}


def test_lost_messages_are_counted_even_when_the_last_sample_came_after_the_rollout_ended():
    # found by the replay: the controller drops the judge's words once a rollout ends, and a last
    # sample taken after that made opens 1.1's lost messages read as 0
    track = Track("r1", "opens", "1.1", "1.0", 0.0, lossy_metrics=("lost-opens",))
    track.samples = [sample(1, "progressing", 1), sample(2, "progressing", 3), sample(3, "rolled_back", None)]
    track.detail = {"phase": "rolled_back", "decisions": []}
    assert release_figures(track, {}, 0)["canary_failed_requests"] == 3
