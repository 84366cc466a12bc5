"""The replay's group report from recorded data (no servers): the group's figures on its own clock,
its section beside its members', and the note only when every member's stable failed at once."""

from __future__ import annotations

from canary.replay import group_report, shared_stable
from canary.replay.figures import group_figures, release_figures
from canary.replay.recorder import GroupTrack, Track

CREATED = 1000.0  # the controller's clock at the group's creation
STARTED = 5.0  # the replay's clock then


def decision(phase_to: str, at: float, by: str = "judge") -> dict:
    return {"phase_from": "", "phase_to": phase_to, "decided_by": by, "reason": "", "at": CREATED + at}


def member(service: str, stable_errors: list[int], outcome: str = "succeeded", rolled_back_at: float = 0) -> Track:
    """One sample a second from the group's release: 20 stable answers a second, ``stable_errors``
    of them failed in each second."""
    track = Track(f"id-{service}", service, "2", "1", STARTED)
    requests = errors = 0
    for i, bad in enumerate([0, *stable_errors]):
        requests, errors = requests + (20 if i else 0), errors + bad
        router = {"canary": {"requests": i, "errors": 0}, "stable": {"requests": requests, "errors": errors}}
        sample = {"t": STARTED + i, "phase": "progressing", "weight": 50, "mirror_share": 0.0, "judge": {}}
        track.samples.append(sample | {"router": router})
    made = [decision("progressing", 1, "controller")]
    if outcome == "rolled_back":
        made += [decision("rolling_back", rolled_back_at), decision("rolled_back", rolled_back_at + 1)]
    else:
        made.append(decision("succeeded", 30))
    track.detail = {"phase": outcome, "reason": "", "decisions": made, "decided_by": "judge"}
    return track


def group(*members: Track) -> GroupTrack:
    g = GroupTrack("g1", "april", STARTED, CREATED, members=list(members))
    g.samples = [
        {"t": STARTED + 1, "phase": "progressing", "settled": False},
        {"t": STARTED + 31, "phase": "promoted", "settled": True},
    ]
    starts = [{"at": CREATED + 0.5, "member": m.service, "action": "start", "reason": "no dependency"} for m in members]
    g.detail = {"phase": "promoted", "settled": True, "since": CREATED + 31, "policy": "independent"}
    g.detail |= {"reason": "", "decisions": starts}
    return g


BURST = [0] * 5 + [15] * 6 + [0] * 5  # seconds 5 to 11 after the release: three in four answers fail


def test_every_members_stable_failing_at_once_is_one_note_with_its_window():
    g = group(member("importer", BURST), member("resizer", [0] * 6 + [12, 1, 14, 16, 12] + [0] * 5))
    windows = shared_stable.failing_windows(g.members[1], STARTED)
    assert windows == [shared_stable.Window(6.0, 11.0)]  # one quiet second inside is the same stretch
    (note,) = shared_stable.notes(g)
    assert note == (
        "Group april: the stable tracks of importer, resizer failed together from +6 s to +11 s after the release: "
        "members judged against their own stable (the judge compares each member's canary with its own stable "
        "release, so a failure they share weighs on neither side); none of them was rolled back then."
    )


def test_no_note_when_one_member_was_fine_or_the_group_has_one_member():
    assert shared_stable.notes(group(member("importer", BURST), member("resizer", [1] * 16))) == []
    assert shared_stable.notes(group(member("importer", BURST))) == []


def test_a_member_rolled_back_during_the_burst_is_named():
    g = group(member("importer", BURST, "rolled_back", rolled_back_at=9), member("resizer", BURST))
    (note,) = shared_stable.notes(g)
    assert note.endswith("; rolled back then: importer.")


def test_the_group_section_shows_its_timeline_beside_its_members_and_its_figures():
    g = group(member("importer", BURST, "rolled_back", rolled_back_at=12), member("resizer", [0] * 16))
    figures = group_figures(g, [release_figures(t, {"requests": 9, "errors": {"503": 2}}, None) for t in g.members])
    assert figures["release_to_settled_s"] == 31.0
    assert [(m["service"], m["outcome"], m["ended_s"]) for m in figures["members"]] == [
        ("importer", "rolled_back", 13.0),
        ("resizer", "promoted", 30.0),
    ]
    assert figures["consumer_errors"] == 4 and figures["opens_lost"] is None
    assert figures["decisions"][0] == {"t": 0.5, "member": "importer", "action": "start", "reason": "no dependency"}
    page = group_report.section(figures, g, ["Group april: a note", "Group other: not this one"])
    assert "<h3>The group (seconds since its release)</h3>" in page and "<h3>Its members</h3>" in page
    assert "+12 s rolling_back (judge)" in page and "+0.5 s</b> importer start: no dependency" in page
    assert "Group april: a note" in page and "not this one" not in page
    assert page.count("<svg") == 1 and "each member&#x27;s traffic to its canary" in page
    (line,) = group_report.summary_lines([figures])
    assert line.startswith(
        "group april (independent): promoted, settled 31 s after its release; importer 2 rolled_back"
    )
