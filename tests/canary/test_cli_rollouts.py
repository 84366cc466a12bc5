"""`canary status` and `canary why` put the judge's stored numbers in one line, whatever judged."""

from __future__ import annotations

from canary.cli_rollouts import evidence_words

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
