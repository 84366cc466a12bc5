"""``canary demo``: replay the release of 13 April 2022 on the embedded default, then report.

1. Start the controller, the router (its own process) and the three services at 1.0 on SQLite.
2. Drive traffic with `canary load` through the router, and release importer 1.1, opens 1.1 and
   resizer 2.0 as one group (``manifests/groups/april-13.yaml``: independent members, each with
   its shipped rollout spec, bakes shortened by the pace).
3. When the group has settled, stop that load, let the open tracker re-process what the bad
   processor dropped, and count the opens lost.
4. The same with the reworked releases importer 1.2, opens 1.2 and resizer 2.1 as a second group
   under fresh load.
5. Write ``report.json`` and ``report.html`` in the state directory and print a summary.

Everything started is stopped at the end, also on Ctrl-C (the services are the controller's
processes; the router's pid is kept in the state directory in case this process is killed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from canary.replay import figures, report, schedule, shared_stable
from canary.replay.live import LiveView
from canary.replay.plan import DEMO, FAULTY, MIX, REWORKED, STABLE, Pace, group_text, load_config
from canary.replay.recorder import GroupTrack, Recorder, Track
from canary.stack import StackTokens, admin_token, local_stack
from canary.traffic.load import run as run_load
from core.errors import DependencyUnavailable

ROLLOUT_DEADLINE_S = 900.0
DRAIN_DEADLINE_S = 120.0
Say = Callable[[str], None]


class Round:
    """One group of releases under one load: the faulty ones, then the reworked ones."""

    def __init__(self, name: str, group: str, releases: dict[str, str], seed: int) -> None:
        self.name = name
        self.group_name = group
        self.releases = releases
        self.seed = seed
        self.group: GroupTrack | None = None
        self.tracks: list[Track] = []
        self.load_report: dict[str, Any] = {}
        self.opens_lost: int | None = None


def replay(state_dir: Path, pace: Pace = DEMO, say: Say = print, interactive: bool | None = None) -> dict[str, Any]:
    state_dir.mkdir(parents=True, exist_ok=True)
    token = admin_token(state_dir)  # as `canary up` keeps it: `canary status --state-dir` works meanwhile
    started = time.monotonic()
    rounds = [Round("faulty", "april-13", FAULTY, seed=1), Round("reworked", "april-13-reworked", REWORKED, seed=2)]
    say(f"starting the stack in {state_dir} (controller, router, importer/opens/resizer 1.0 on SQLite)")
    with local_stack(state_dir, dict(STABLE), token, router_as_process=True) as (ctl, router, app):
        say(f"controller {ctl}, router {router}: `canary status --controller {ctl} --state-dir {state_dir}`")
        recorder = Recorder(ctl, router, token)
        recorder.start()
        ledger = OpensLedger(lambda release: app.state.controller.upstreams.get(("opens", release)))
        try:
            for r in rounds:
                _play(r, recorder, ctl, router, StackTokens.of(state_dir, token), pace, say, interactive)
                stable = _stable_releases(ctl, token)
                r.opens_lost = ledger.settle(stable["opens"], r.load_report, say)
        finally:
            recorder.stop()
    say("stopped the stack")
    result = _report(rounds, pace, time.monotonic() - started, recorder.problems)
    json_path, html_path = report.write(
        state_dir, result, [t for r in rounds for t in r.tracks], [r.group for r in rounds if r.group is not None]
    )
    for line in report.summary_lines(result):
        say(line)
    for note in result["notes"]:
        say(f"note: {note}")
    say(f"report: {html_path}\nfigures: {json_path}")
    return result


def _play(
    r: Round,
    recorder: Recorder,
    ctl: str,
    router: str,
    tokens: StackTokens,
    pace: Pace,
    say: Say,
    interactive: bool | None,
) -> None:
    stop, driving = threading.Event(), threading.Event()

    def progress(line: str) -> None:
        if line.startswith("prepared"):
            driving.set()

    def load() -> None:
        try:
            r.load_report = run_load(load_config(router, tokens.of_service("opens"), pace, r.seed), progress, stop)
        finally:
            driving.set()

    thread = threading.Thread(target=load, name=f"load-{r.name}", daemon=True)
    thread.start()
    try:
        driving.wait(120)
        if not thread.is_alive():
            raise DependencyUnavailable("the load generator stopped before the release began")
        time.sleep(3)  # stable serves a little traffic before the release
        stable = _stable_releases(ctl, tokens.admin)
        moves = ", ".join(f"{s} {stable[s]} -> {v}" for s, v in r.releases.items())
        say(f"releasing group {r.group_name}: {moves} (policy independent)")
        r.group = recorder.release_group(group_text(r.group_name, r.releases, pace))
        r.tracks = list(r.group.members)
        deadline = time.monotonic() + ROLLOUT_DEADLINE_S
        with LiveView(say, interactive) as view:
            while not r.group.done and time.monotonic() < deadline:
                view.show(r.tracks, recorder.now())
                time.sleep(1)
            view.show(r.tracks, recorder.now())
    finally:
        stop.set()
        thread.join(60)


def _stable_releases(ctl: str, token: str) -> dict[str, str]:
    deadline = time.monotonic() + 30
    while True:  # 503 until the controller's first tick with the lease has built the table
        r = httpx.get(f"{ctl}/api/routes", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        if r.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    r.raise_for_status()
    table = r.json()
    return {service: route["releases"]["stable"] for service, route in table["services"].items()}


class OpensLedger:
    """Opens lost = valid pixel hits the tracker answered - opens recorded - events filtered, once
    it has caught up (re-processing included); counted per round from the running totals.  A hit
    that failed in front of the consumer is a consumer error, not a lost open."""

    def __init__(self, url_of: Callable[[str], str | None]) -> None:
        self.url_of = url_of
        self.valid_hits = 0
        self.lost_so_far = 0

    def settle(self, stable: str, load_report: dict[str, Any], say: Say) -> int | None:
        self.valid_hits += load_report.get("services", {}).get("opens", {}).get("valid_hits_answered", 0)
        url = self.url_of(stable)
        if url is None:
            return None
        deadline = time.monotonic() + DRAIN_DEADLINE_S
        while True:
            stats = httpx.get(f"{url}/stats", timeout=10).json()
            if not stats["events_pending"] and not stats["unaccounted"]:
                break
            if time.monotonic() > deadline:
                say(f"the open tracker did not catch up in {DRAIN_DEADLINE_S:.0f} s: {stats}")
                break
            time.sleep(0.5)
        lost = int(self.valid_hits - stats["opens_recorded"] - stats["events_filtered"] - self.lost_so_far)
        self.lost_so_far += lost
        return lost


def _load_notes(rounds: list[Round], pace: Pace) -> list[str]:
    notes = (schedule.note(r.name, schedule.LoadSchedule.from_report(r.load_report, pace.load_rate)) for r in rounds)
    return [n for n in notes if n]


def _report(rounds: list[Round], pace: Pace, duration_s: float, problems: list[str]) -> dict[str, Any]:
    services: dict[str, list[dict[str, Any]]] = {}
    groups, shared = [], []
    for r in rounds:
        seen = r.load_report.get("services", {})
        members = []
        for track in r.tracks:
            lost = r.opens_lost if track.service == "opens" else None
            members.append(figures.release_figures(track, seen.get(track.service, {}), lost))
            services.setdefault(track.service, []).append(members[-1])
        if r.group is not None:
            groups.append(figures.group_figures(r.group, members))
            shared += shared_stable.notes(r.group)
    share = 100 * pace.factor
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": round(duration_s, 1),
        "load": f"{pace.load_rate:g} arrivals/s: {MIX['opens']:.0%} pixel hits, {MIX['importer']:.0%} contact "
        f"imports, {MIX['resizer']:.0%} editor page views (6 to 24 images each)",
        "pace": {"factor": pace.factor, "max_watch_s": pace.max_watch_s, "min_rate_floor": pace.min_rate_floor},
        "load_schedule": {r.name: r.load_report.get("schedule", {}) for r in rounds},
        "notes": [
            f"Bakes are {share:g}% of the shipped specs' minimums (manifests/rollouts/), the watch after "
            f"promotion at most {pace.max_watch_s:g} s; the judge's statistics and time limits are as shipped"
            + (f", rate floors at least {pace.min_rate_floor:g}." if pace.min_rate_floor else "."),
            *shared,
            *_load_notes(rounds, pace),
            *problems,
        ],
        "groups": groups,
        "services": services,
    }
