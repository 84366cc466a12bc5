"""Groups in the controller tick by tick (injected clock, real SQLite store, the engine tests'
in-process platform and provider): policies, `after:` order, promotion together, and a controller
restarted mid-group that takes no decision twice."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from canary.controller import machine as m
from canary.controller.group_machine import GroupPhase
from core.errors import NotFound
from tests.canary.engine_world import World

ROLLOUT = (
    "{steps: [{weight: 10, min_requests: 20, min_seconds: 2, max_seconds: 600},"
    " {weight: 50, min_requests: 20, min_seconds: 2, max_seconds: 600}],"
    " metrics: [{name: errors, kind: errors, rate_floor: 0.2, min_regression: 3}], watch: {seconds: 5, holdback: 10}}"
)
STABLE = {"importer": "1.0", "resizer": "1.0", "shop": "1.0"}


def group_text(policy: str, promote: str = "each", resizer_after: str = "[{member: importer, step: 1}]") -> str:
    return f"""apiVersion: releasewarden/v1
kind: Group
metadata: {{name: april}}
spec:
  policy: {policy}
  promote: {promote}
  members:
    - {{service: importer, release: "1.1", rollout: {ROLLOUT}}}
    - {{service: resizer, release: "2.0", rollout: {ROLLOUT}, after: {resizer_after}}}
    - {{service: shop, release: "2.0", rollout: {ROLLOUT}}}
"""


def run(w: World, group_id: str, failing: str = "", ticks: int = 400, until=None, restart_at: int = -1):
    """Tick with traffic on every member's canary (``failing``'s bad) until the group settles."""
    seen_promoted: list[str] = []
    for i in range(ticks):
        if i == restart_at:
            w.controller = w.new_controller()  # the old one's memory is gone; the store is all it has
        g = w.controller.groups.store.get(group_id)
        for name, link in g.members.items():
            if link.rollout_id:
                try:
                    r = w.store.get(link.rollout_id)
                except Exception:
                    continue
                w.traffic(r.spec.service, r.spec.canary, canary_bad=15 if r.spec.service == failing else 0)
                if r.phase in (m.PROMOTING, m.WATCHING, m.SUCCEEDED) and name not in seen_promoted:
                    seen_promoted.append(name)
        w.tick(reader="router/a")
        g = w.controller.groups.store.get(group_id)
        if (until or (lambda g: g.settled))(g):
            return g, seen_promoted
    raise AssertionError(f"the group never settled: {w.controller.groups.store.get(group_id)}")


def phases(w: World, g) -> dict[str, str]:
    out = {}
    for name, link in g.members.items():
        try:
            out[name] = w.store.get(link.rollout_id).phase.value if link.rollout_id else "cancelled"
        except NotFound:  # linked, its rollout never made (refused)
            out[name] = "cancelled" if link.cancelled else "linked"
    return out


def test_independent_only_the_failing_member_rolls_back_and_after_order_holds(tmp_path):
    w = World(tmp_path, stable=dict(STABLE))
    g = asyncio.run(w.controller.groups.create(group_text("independent", resizer_after="[importer]")))
    g, promoted = run(w, g.id, failing="shop")
    assert phases(w, g) == {"importer": "succeeded", "resizer": "succeeded", "shop": "rolled_back"}
    assert g.phase == GroupPhase.PARTLY_ROLLED_BACK and g.settled
    assert promoted.index("importer") < promoted.index("resizer")  # resizer waited for importer's promotion
    importer = w.store.decisions(g.members["importer"].rollout_id)
    promoted_at = next(d.at for d in importer if d.phase_to == "promoting")
    assert w.store.get(g.members["resizer"].rollout_id).phase_since > promoted_at


def test_dependents_a_rollback_cancels_the_waiting_dependent_and_the_rest_go_on(tmp_path):
    w = World(tmp_path, stable=dict(STABLE))
    g = asyncio.run(w.controller.groups.create(group_text("dependents")))
    g, _ = run(w, g.id, failing="importer")
    assert phases(w, g) == {"importer": "rolled_back", "resizer": "cancelled", "shop": "succeeded"}
    assert "importer" in g.members["resizer"].cancelled
    assert g.phase == GroupPhase.PARTLY_ROLLED_BACK


def test_all_rolls_everything_back_and_a_restarted_controller_takes_no_decision_twice(tmp_path):
    w = World(tmp_path, stable=dict(STABLE))
    g = asyncio.run(w.controller.groups.create(group_text("all", resizer_after="[]")))
    # resizer fails once the others are under way; the controller is restarted mid-group
    g, _ = run(w, g.id, failing="resizer", restart_at=6)
    assert phases(w, g) == {"importer": "rolled_back", "resizer": "rolled_back", "shop": "rolled_back"}
    assert g.phase == GroupPhase.ROLLED_BACK and g.settled
    made = w.controller.groups.store.decisions(g.id)
    assert Counter((d.member, d.action) for d in made if d.member) == {
        ("importer", "start"): 1,
        ("resizer", "start"): 1,
        ("shop", "start"): 1,
        ("importer", "abort"): 1,
        ("shop", "abort"): 1,
    }
    for name in ("importer", "shop"):  # aborted by the group, once each, in words
        rolled = [d for d in w.store.decisions(g.members[name].rollout_id) if d.phase_to == "rolling_back"]
        assert len(rolled) == 1 and rolled[0].decided_by == "person"
    assert [r.id for r in w.store.list_rollouts()] == [g.members[n].rollout_id for n in ("importer", "resizer", "shop")]


def test_together_holds_each_member_after_its_last_step_until_every_member_is_ready(tmp_path):
    w = World(tmp_path, stable=dict(STABLE))
    g = asyncio.run(w.controller.groups.create(group_text("independent", "together", resizer_after="[]")))
    g, _ = run(w, g.id, until=lambda g: any(w.store.get(x.rollout_id).promotion_held for x in g.members.values()))
    g, _ = run(w, g.id)
    assert phases(w, g) == {"importer": "succeeded", "resizer": "succeeded", "shop": "succeeded"}
    assert g.phase == GroupPhase.PROMOTED
    promoting = [
        next(d.at for d in w.store.decisions(x.rollout_id) if d.phase_to == "promoting") for x in g.members.values()
    ]
    assert len(set(promoting)) == 1  # one tick: together
    held = [d for x in g.members.values() for d in w.store.decisions(x.rollout_id) if "held until" in d.reason]
    assert held, "at least one member waited for the others"


def test_a_group_abort_aborts_its_members_and_cancels_those_not_started(tmp_path):
    w = World(tmp_path, stable=dict(STABLE))
    g = asyncio.run(w.controller.groups.create(group_text("independent", resizer_after="[importer]")))
    w.tick(reader="router/a")
    w.tick(reader="router/a")
    w.controller.groups.command(g.id, "abort")
    g, _ = run(w, g.id)
    assert phases(w, g) == {"importer": "rolled_back", "resizer": "cancelled", "shop": "rolled_back"}
    assert g.phase == GroupPhase.ROLLED_BACK


def test_an_alert_labelled_with_the_group_rolls_back_every_active_member(tmp_path):
    from canary.controller.alerts import _group_alert

    w = World(tmp_path, stable=dict(STABLE))
    g = asyncio.run(w.controller.groups.create(group_text("independent", resizer_after="[importer]")))
    w.tick(reader="router/a")
    answer = asyncio.run(_group_alert(w.controller, "april", "ReleaseBroken: errors everywhere"))
    assert answer["action"] == "rolling back importer, shop"
    g, _ = run(w, g.id)
    assert phases(w, g) == {"importer": "rolled_back", "resizer": "cancelled", "shop": "rolled_back"}
    importer = w.store.get(g.members["importer"].rollout_id)
    assert (importer.decided_by, importer.reason) == ("alert", "alert ReleaseBroken: errors everywhere fired")


def test_a_group_pause_holds_every_stepping_member_and_resume_lets_the_group_finish(tmp_path):
    w = World(tmp_path, stable=dict(STABLE))
    g = asyncio.run(w.controller.groups.create(group_text("independent", resizer_after="[importer]")))

    def stepping(g) -> bool:
        return {phases(w, g).get(n) for n in ("importer", "shop")} == {"progressing"}

    g, _ = run(w, g.id, until=stepping)
    w.controller.groups.command(g.id, "pause")
    g, _ = run(w, g.id, until=lambda g: {phases(w, g)[n] for n in ("importer", "shop")} == {"paused"}, ticks=5)
    held = {n: w.store.get(g.members[n].rollout_id).step for n in ("importer", "shop")}
    for _ in range(20):  # well past each step's min_seconds, with traffic: a paused member stays
        g, _ = run(w, g.id, until=lambda g: True, ticks=1)
    assert {n: w.store.get(g.members[n].rollout_id).phase for n in held} == dict.fromkeys(held, m.PAUSED)
    assert {n: w.store.get(g.members[n].rollout_id).step for n in held} == held
    assert "resizer" not in phases(w, g)  # after importer: not started while importer is held
    w.controller.groups.command(g.id, "resume")
    g, promoted = run(w, g.id)
    assert g.phase == GroupPhase.PROMOTED and sorted(promoted) == ["importer", "resizer", "shop"]


def test_a_member_that_cannot_be_released_is_refused_when_the_group_is_made(tmp_path):
    from core.errors import Conflict, Unprocessable

    w = World(tmp_path, stable={**STABLE, "shop": "2.0"})  # shop already runs the release asked
    with pytest.raises(Unprocessable, match=r"member shop: spec\.canary: must differ from spec\.stable"):
        asyncio.run(w.controller.groups.create(group_text("independent")))
    w = World(tmp_path / "busy", stable=dict(STABLE))
    busy = w.release(service="shop", canary="1.1")
    with pytest.raises(Conflict, match=f"member shop: shop already has an active rollout \\({busy.id[:8]}\\)"):
        asyncio.run(w.controller.groups.create(group_text("independent")))
    assert w.controller.groups.store.list_groups(False) == []


@pytest.mark.parametrize(("policy", "others"), [("independent", "succeeded"), ("all", "rolled_back")])
def test_a_member_refused_when_its_turn_comes_is_cancelled_and_the_group_goes_on(tmp_path, policy, others):
    # resizer waits for importer's promotion; meanwhile a person made its release resizer's stable:
    # its rollout is refused when its turn comes, and it is cancelled with why (it held the group
    # for ever: starts, aborts and commands of every member stopped at the refusal)
    w = World(tmp_path, stable=dict(STABLE))
    g = asyncio.run(w.controller.groups.create(group_text(policy, resizer_after="[importer]")))
    w.controller.stable["resizer"] = "2.0"
    g, _ = run(w, g.id)
    assert phases(w, g) == {"importer": others, "resizer": "cancelled", "shop": others}
    assert g.members["resizer"].cancelled == "its rollout was refused: spec.canary: must differ from spec.stable"
    settled_as = {"independent": GroupPhase.PARTLY_ROLLED_BACK, "all": GroupPhase.ROLLED_BACK}
    assert g.settled and g.phase == settled_as[policy]
