"""The replay's live view: each rollout's phase, weight, counts per track and the judge's evidence.

In a terminal it is a table redrawn in place (rich); elsewhere (a log, CI) a line per rollout
whenever its phase changes and every ``EVERY_S`` seconds.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from canary.replay.recorder import Track

EVERY_S = 10.0


def describe(track: Track) -> dict[str, str]:
    s = track.samples[-1] if track.samples else None
    if s is None:
        return {"phase": "starting", "weight": "", "canary": "", "stable": "", "evidence": ""}
    base = track.baseline.get((track.service, "mirror"), {})
    compared = s["router"]["mirror"].get("compared", 0) - base.get("compared", 0)
    different = s["router"]["mirror"].get("different", 0) - base.get("different", 0)
    canary = s["router"]["canary"]
    cells = {
        "phase": s["phase"],
        "weight": f"{s['weight']:g}%" + (f" +mirror {s['mirror_share']:.0%}" if s["mirror_share"] else ""),
        "canary": f"{canary.get('requests', 0)} req, {canary.get('errors', 0)} err",
        "stable": "",
        "evidence": f"mirror: {different}/{compared} differ" if compared else "",
    }
    judged = []
    for name, j in s["judge"].items():
        c, st = j["canary"], j["stable"]
        e = j["e_value"]
        e_text = e if isinstance(e, str) else f"{e:.3g}"
        judged.append(
            f"{name} {c['bad']}/{c['requests']} vs {st['bad']}/{st['requests']} e={e_text}/{j['threshold']:g}"
        )
    if judged:
        cells["evidence"] = "; ".join(judged)
    stable = s["router"]["stable"]
    cells["stable"] = f"{stable.get('requests', 0)} req, {stable.get('errors', 0)} err"
    if s["phase"] in ("rolled_back", "succeeded", "failed"):
        cells["evidence"] = track.detail.get("reason", "")
    return cells


def table(tracks: list[Track], elapsed_s: float) -> Table:
    t = Table(title=f"replay of 13 April 2022: {elapsed_s:.0f} s", title_justify="left")
    for column in ("service", "release", "phase", "weight", "canary (router)", "stable (router)", "judge"):
        t.add_column(column, overflow="fold")
    for track in tracks:
        c = describe(track)
        t.add_row(track.service, track.release, c["phase"], c["weight"], c["canary"], c["stable"], c["evidence"])
    return t


class LiveView:
    def __init__(self, say: Any = print, interactive: bool | None = None) -> None:
        self.say = say
        self.interactive = sys.stdout.isatty() if interactive is None else interactive
        self.live: Live | None = None
        self.last_phase: dict[str, str] = {}
        self.last_print = -EVERY_S

    def __enter__(self) -> LiveView:
        if self.interactive:
            self.live = Live(console=Console(), refresh_per_second=2, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def show(self, tracks: list[Track], elapsed_s: float) -> None:
        if self.live is not None:
            self.live.update(table(tracks, elapsed_s))
            return
        due = elapsed_s - self.last_print >= EVERY_S
        for track in tracks:
            c = describe(track)
            changed = self.last_phase.get(track.rollout_id) != c["phase"]
            if changed or (due and not track.done):
                self.last_phase[track.rollout_id] = c["phase"]
                self.say(
                    f"{elapsed_s:6.0f} s  {track.service:<8} {track.release:<4} {c['phase']:<12} {c['weight']:<16} "
                    f"{c['evidence']}".rstrip()
                )
        if due:
            self.last_print = elapsed_s
