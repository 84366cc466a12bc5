"""`canary status` and `canary why` put the judge's stored numbers in one line, whatever judged, and a
pending canary's not-ready words with how long it has waited and its deadline."""

from __future__ import annotations

from canary.cli_rollouts import evidence_words, not_ready_words

STEP = {
    "counts": {
        "canary": {"requests": 200, "bad": 9, "rate": 0.045},
        "stable": {"requests": 2000, "bad": 4, "rate": 0.002},
    },
    "regression": {"e_value": 412.0, "threshold": 100.0},
}


def test_a_steps_evidence_reads_as_counts_and_e_value():
    assert evidence_words(STEP) == "canary 9/200 bad (4.50%)  stable 4/2000 (0.20%)  e-value 412 of 100"


def test_the_mirror_and_the_watch_say_theirs():
    assert evidence_words({"compared": 120, "different": 3}) == "3 of 120 mirrored answers differ"
    watch = {"change_detector": {"bad": 12, "requests": 300, "reference_rate": 0.002}, "reversed": STEP}
    assert evidence_words(watch).startswith("since promotion 12/300 bad (was 0.002); canary 9/200 bad")
    assert evidence_words({}) == ""


def test_a_pending_canary_not_ready_says_for_how_long_until_when_and_why():
    waiting = {"reason": "hello 2: connection refused on port 8123", "waited_s": 12.4, "deadline_s": 120.0}
    assert not_ready_words({**waiting, "deadline_by": "controller"}) == (
        "not ready after 12 s of 120 s (the rollout's ready deadline): hello 2: connection refused on port 8123"
    )
    assert "of 120 s (the platform's start deadline)" in not_ready_words({**waiting, "deadline_by": "platform"})
