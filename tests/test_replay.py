"""The main job, shortened: `canary demo --quick` replays the 13 April 2022 release end to end.

Real processes on 127.0.0.1 (controller, router, the three services, `canary load`); only the bakes
are shorter than the shipped specs' (see canary/replay/plan.py).  The test reads what a user reads:
the command's output, report.json and report.html.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest


@pytest.mark.timeout(900)  # a few minutes of real traffic
def test_the_replay_rolls_back_each_faulty_release_and_promotes_each_reworked_one(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "canary.cli", "demo", "--quick", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"report: {tmp_path / 'report.html'}" in out.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    releases = {(s, r["release"]): r for s, rs in report["services"].items() for r in rs}
    assert set(releases) == {
        ("importer", "1.1"), ("opens", "1.1"), ("resizer", "2.0"),
        ("importer", "1.2"), ("opens", "1.2"), ("resizer", "2.1"),
    }  # fmt: skip
    for key in [("importer", "1.1"), ("opens", "1.1"), ("resizer", "2.0")]:
        r = releases[key]
        assert (r["outcome"], r["decided_by"]) == ("rolled_back", "judge"), r  # the judge, not a timeout
        assert 0 < r["detect_s"] <= r["rollback_s"], r
        assert r["canary_failed_requests"] > 0, r  # the canary really failed (errors, differences, lost opens)
    assert releases[("resizer", "2.0")]["reason"].startswith("mirror:")  # caught before any customer saw it
    for key in [("importer", "1.2"), ("opens", "1.2"), ("resizer", "2.1")]:
        r = releases[key]
        assert (r["outcome"], r["decided_by"]) == ("promoted", "judge"), r
        assert r["bake_s"] > 0 and r["watch_s"] > 0
    for service in ("importer", "resizer"):
        for r in report["services"][service]:
            assert r["consumer_errors"] == 0, r  # failover and mirroring: consumers never noticed
            assert r["consumer_requests"] > 0
    assert [r["opens_lost"] for r in report["services"]["opens"]] == [0, 0]
    # each round is one group of three independent members, settled once every member ended
    faulty, reworked = report["groups"]
    assert (faulty["name"], faulty["policy"], faulty["outcome"]) == ("april-13", "independent", "rolled_back")
    assert (reworked["name"], reworked["outcome"]) == ("april-13-reworked", "promoted")
    for g, releases_of in ((faulty, ("1.1", "1.1", "2.0")), (reworked, ("1.2", "1.2", "2.1"))):
        assert [(m["service"], m["release"]) for m in g["members"]] == list(
            zip(("importer", "opens", "resizer"), releases_of, strict=True)
        )
        assert 0 < max(m["ended_s"] for m in g["members"]) <= g["release_to_settled_s"], g
        assert g["consumer_errors"] == sum(
            releases[(m["service"], m["release"])]["consumer_errors"] for m in g["members"]
        )
        assert g["opens_lost"] == 0
        assert [d["member"] for d in g["decisions"] if d["action"] == "start"] == ["importer", "opens", "resizer"]
    assert [m["rollback_s"] for m in faulty["members"]] == [
        releases[(m["service"], m["release"])]["rollback_s"] for m in faulty["members"]
    ]
    assert "group april-13 (independent): rolled_back, settled " in out.stdout

    page = (tmp_path / "report.html").read_text()
    # three charts per release (bad share per track, weight, the judge's e-value against its threshold)
    # and one per group (each member's weight on the group's clock), the group's timeline beside them
    assert page.count("<svg") == 6 * 3 + 2
    assert page.count("<h3>The group (seconds since its release)</h3>") == 2
    assert "group april-13-reworked: each member&#x27;s traffic to its canary" in page
    assert page.count("evidence against the canary (e-value, log scale) and its threshold</title>") == 6
    assert "13 April 2022" in page and "http" not in page.replace("http://www.w3.org/2000/svg", "")

    leftover = subprocess.run(["pgrep", "-f", "--", str(tmp_path)], capture_output=True, text=True)
    assert leftover.stdout == "", "processes still running: " + leftover.stdout
    assert not (tmp_path / "router.pid").exists()


@pytest.mark.timeout(300)
def test_a_demo_stopped_by_kill_mid_release_stops_everything_it_started(tmp_path):
    demo = subprocess.Popen(
        [sys.executable, "-m", "canary.cli", "demo", "--quick", "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        while not any(line.startswith("releasing group") for line in lines):  # mid-release: load and canaries
            line = demo.stdout.readline() if demo.stdout else ""
            assert line, "the demo ended early:\n" + "".join(lines)
            lines.append(line)
        demo.send_signal(signal.SIGTERM)  # `kill`, as Ctrl-C
        rest, _ = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            subprocess.run(["pkill", "-KILL", "-f", "--", str(tmp_path)], check=False)
            demo.kill()
    assert "interrupted; everything started was stopped" in rest, "".join(lines) + rest
    assert "Traceback" not in "".join(lines) + rest
    leftover = subprocess.run(["pgrep", "-f", "--", str(tmp_path)], capture_output=True, text=True)
    assert leftover.stdout == "", "processes still running: " + leftover.stdout
