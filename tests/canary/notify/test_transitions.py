"""Which decision of the controller makes which notification (a pure mapping)."""

from __future__ import annotations

import pytest

from canary.notify import EventKind
from canary.notify.transitions import Transition, event_for


def t(phase_from: str, phase_to: str, reason: str = "why", **kw: object) -> Transition:
    return Transition("r7", 3, "importer", "1.0", "1.1", phase_from, phase_to, reason, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("transition", "kind", "step"),
    [
        (t("pending", "progressing", step_from=None, step_to=0), EventKind.STARTED, None),
        (t("pending", "mirroring"), EventKind.STARTED, None),
        (t("mirroring", "progressing", step_to=0), EventKind.STEP_PASSED, None),
        (t("progressing", "progressing", step_from=0, step_to=1), EventKind.STEP_PASSED, 1),
        (t("progressing", "progressing", held=True, step_from=1, step_to=1), EventKind.HELD, 2),
        (t("progressing", "paused", step_from=1, step_to=1), EventKind.PAUSED, 2),
        (t("progressing", "paused", inconclusive=True, step_from=2), EventKind.INCONCLUSIVE, 3),
        (t("rolling_back", "rolled_back", "errors: canary worse"), EventKind.ROLLED_BACK, None),
        (t("progressing", "promoting", step_from=2), EventKind.PROMOTED, 3),
        (t("watching", "succeeded"), EventKind.WATCH_ENDED, None),
        (t("pending", "failed", "canary not ready after 120 s"), EventKind.FAILED, None),
    ],
)
def test_decisions_that_people_hear_about(transition, kind, step):
    event = event_for(transition)
    assert event is not None and event.kind is kind and event.step == step
    assert event.id == "r7-3" and event.reason == transition.reason  # deterministic: stored once


@pytest.mark.parametrize(
    "transition",
    [
        t("progressing", "rolling_back"),  # the rollback is announced when it is done
        t("promoting", "watching"),
        t("progressing", "progressing", "metrics available again after 12 s", step_from=1, step_to=1),
        t("paused", "progressing", "resumed"),
        t("rolled_back", "rolled_back"),
    ],
)
def test_bookkeeping_decisions_make_no_noise(transition):
    assert event_for(transition) is None
