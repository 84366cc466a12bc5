"""The group machine alone (pure: stored group + members' phases in, decisions and actions out)."""

from __future__ import annotations

import uuid

from canary.controller import machine as m
from canary.controller.group_machine import Group, GroupPhase, MemberSeen, advance_group, member_rollout_id
from canary.controller.group_spec import load_group

ROLLOUT = "{steps: [{weight: 10}, {weight: 50}], metrics: [{name: errors, kind: errors}]}"


def spec(policy: str, promote: str = "each"):
    return load_group(f"""apiVersion: releasewarden/v1
kind: Group
metadata: {{name: g}}
spec:
  policy: {policy}
  promote: {promote}
  members:
    - {{service: a, release: "2", rollout: {ROLLOUT}}}
    - {{service: b, release: "2", rollout: {ROLLOUT}, after: [{{member: a, step: 1}}]}}
    - {{service: c, release: "2", rollout: {ROLLOUT}, after: [{{member: b, step: 1}}]}}
    - {{service: d, release: "2", rollout: {ROLLOUT}}}
""")


def test_members_start_in_after_order_with_ids_that_cannot_be_made_twice():
    g = Group(uuid.uuid4().hex, spec("dependents"))
    g, made, acts = advance_group(g, {}, "", 1.0)
    assert [(d.member, d.action) for d in made] == [("a", "start"), ("d", "start")]
    assert acts.start == [("a", member_rollout_id(g.id, "a")), ("d", member_rollout_id(g.id, "d"))]
    again, made, acts = advance_group(g, {}, "", 2.0)  # not created yet (killed in between): asked again
    assert made == [] and again == g and len(acts.start) == 2
    seen = {"a": MemberSeen(m.PROGRESSING, step=0), "d": MemberSeen(m.PROGRESSING)}
    assert advance_group(g, seen, "", 3.0)[1] == []  # b waits for a's step 1 to pass
    seen["a"] = MemberSeen(m.PROGRESSING, step=1)
    g, made, _ = advance_group(g, seen, "", 4.0)
    assert [(d.member, d.action) for d in made] == [("b", "start")] and "a passed step 1" in made[0].reason


def test_dependents_aborts_started_dependents_transitively_and_leaves_the_rest():
    g = Group(uuid.uuid4().hex, spec("dependents"))
    seen = {n: MemberSeen(m.PROGRESSING, step=1) for n in "abcd"}
    g, _, _ = advance_group(g, {"a": seen["a"], "d": seen["d"]}, "", 1.0)
    g, _, _ = advance_group(g, {n: seen[n] for n in "abd"}, "", 2.0)
    g, _, _ = advance_group(g, seen, "", 3.0)
    seen["a"] = MemberSeen(m.ROLLING_BACK)
    g, made, acts = advance_group(g, seen, "", 4.0)
    assert [(d.member, d.action) for d in made if d.member] == [("b", "abort"), ("c", "abort")]
    assert set(acts.abort) == {member_rollout_id(g.id, "b"), member_rollout_id(g.id, "c")}
    assert g.phase == GroupPhase.PARTLY_ROLLED_BACK and not g.settled
    assert advance_group(g, seen, "", 5.0)[1] == []  # decided once; the abort is asked again until it takes


def test_together_holds_until_every_member_that_goes_on_is_ready():
    g = Group(uuid.uuid4().hex, spec("independent", "together"))
    seen = {n: MemberSeen(m.PROGRESSING, step=1) for n in "abcd"}
    for t in range(3):
        g, _, acts = advance_group(g, seen, "", float(t))
    assert len(acts.hold) == 4
    seen.update(a=MemberSeen(m.PROGRESSING, 1, True), b=MemberSeen(m.PROGRESSING, 1, True))
    seen.update(c=MemberSeen(m.PROGRESSING, 1, True))
    assert len(advance_group(g, seen, "", 5.0)[2].hold) == 4  # d is not ready: all wait
    seen["d"] = MemberSeen(m.ROLLED_BACK)  # d rolled back: the others go on, together
    assert advance_group(g, seen, "", 6.0)[2].hold == set()


def _d_linked_but_not_created(policy: str) -> tuple[Group, dict[str, MemberSeen]]:
    """a and d are linked; a's rollout runs, d's creation was refused (its service busy: Conflict)."""
    g, _, _ = advance_group(Group(uuid.uuid4().hex, spec(policy)), {}, "", 1.0)
    assert g.link("d").rollout_id
    return g, {"a": MemberSeen(m.PROGRESSING, step=0)}


def test_abort_cancels_a_linked_member_whose_rollout_does_not_exist_yet():
    g, seen = _d_linked_but_not_created("independent")
    g, made, acts = advance_group(g, seen, "abort", 2.0)
    assert [(d.member, d.action) for d in made if d.member] == [
        ("a", "abort"),
        ("b", "cancel"),
        ("c", "cancel"),
        ("d", "cancel"),
    ]
    assert g.link("d").cancelled == "the group was aborted by a person"
    assert acts.start == [] and acts.abort == [member_rollout_id(g.id, "a")]
    assert not g.settled  # a is still running: its abort is asked of it
    g, _, acts = advance_group(g, {"a": MemberSeen(m.ROLLING_BACK)}, "", 3.0)
    assert g.phase == GroupPhase.ROLLING_BACK and not g.settled and acts.start == []  # never asked again
    g, _, acts = advance_group(g, {"a": MemberSeen(m.ROLLED_BACK)}, "", 4.0)
    assert g.phase == GroupPhase.ROLLED_BACK and g.settled and acts.start == []


def test_dependents_cancels_a_linked_dependent_whose_rollout_does_not_exist_yet():
    g = Group(uuid.uuid4().hex, spec("dependents"))
    seen = {"a": MemberSeen(m.PROGRESSING, step=1), "d": MemberSeen(m.PROGRESSING, step=1)}
    g, _, _ = advance_group(g, {}, "", 1.0)
    g, _, acts = advance_group(g, seen, "", 2.0)  # b linked; its creation refused (its service busy)
    assert acts.start == [("b", member_rollout_id(g.id, "b"))]
    seen["a"] = MemberSeen(m.ROLLING_BACK)
    g, made, acts = advance_group(g, seen, "", 3.0)
    assert [(d.member, d.action) for d in made if d.member] == [("b", "cancel"), ("c", "cancel")]
    assert "a rolled back (policy: dependents)" in g.link("b").cancelled
    assert acts.start == [] and acts.abort == []
    seen.update(a=MemberSeen(m.ROLLED_BACK), d=MemberSeen(m.SUCCEEDED))
    g, _, acts = advance_group(g, seen, "", 4.0)
    assert g.phase == GroupPhase.PARTLY_ROLLED_BACK and g.settled and acts.start == []


def test_all_cancels_a_linked_member_whose_rollout_does_not_exist_yet():
    g, seen = _d_linked_but_not_created("all")
    seen["a"] = MemberSeen(m.ROLLING_BACK)
    g, made, acts = advance_group(g, seen, "", 2.0)
    assert [(d.member, d.action) for d in made if d.member] == [("b", "cancel"), ("c", "cancel"), ("d", "cancel")]
    assert "a rolled back (policy: all)" in g.link("d").cancelled
    assert acts.start == [] and not g.settled
    g, _, acts = advance_group(g, {"a": MemberSeen(m.ROLLED_BACK)}, "", 3.0)
    assert g.phase == GroupPhase.ROLLED_BACK and g.settled and acts.start == []
