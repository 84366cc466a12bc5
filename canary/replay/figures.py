"""The replay's figures per release, from the recorded timeline, the loads' reports and the opens
ledger: what ``report.json`` holds and the HTML report and terminal summary show."""

from __future__ import annotations

from typing import Any

from canary.replay.recorder import GroupTrack, Track

EXPOSED = ("mirroring", "progressing")


def release_figures(track: Track, consumer: dict[str, Any], opens_lost: int | None) -> dict[str, Any]:
    """``consumer`` is what `canary load` saw of this service while the rollout ran."""
    d = track.detail
    at: dict[str, float] = {}
    for decision in d.get("decisions", []):
        at.setdefault(decision["phase_to"], decision["at"])
    exposed = min((at[p] for p in EXPOSED if p in at), default=None)
    outcome = {"rolled_back": "rolled_back", "succeeded": "promoted", "failed": "failed"}.get(d["phase"], d["phase"])
    last = track.samples[-1]["router"] if track.samples else {}
    canary = last.get("canary", {})
    mirror_now = last.get("mirror", {})
    mirror_then = track.baseline.get((track.service, "mirror"), {})
    compared = mirror_now.get("compared", 0) - mirror_then.get("compared", 0)
    different = mirror_now.get("different", 0) - mirror_then.get("different", 0)
    out: dict[str, Any] = {
        "release": track.release,
        "stable": track.stable,
        "rollout_id": track.rollout_id,
        "outcome": outcome,
        "decided_by": _decider(d.get("decisions", [])) or d.get("decided_by", ""),
        "reason": d.get("reason", ""),
        "detect_s": _since(exposed, at.get("rolling_back")),
        "rollback_s": _since(exposed, at.get("rolled_back")),
        "bake_s": _since(exposed, at.get("promoting")),
        "watch_s": _since(at.get("promoting"), at.get("succeeded")),
        "canary_requests": canary.get("requests", 0),
        "canary_failed_requests": canary.get("errors", 0) + different + _lost_by_canary(track),
        "failovers": canary.get("failovers", 0),
        "mirrored_compared": compared,
        "mirrored_different": different,
        "consumer_requests": consumer.get("requests", 0),
        "consumer_errors": consumer_errors(consumer),
        "consumer_errors_by_kind": {**consumer.get("errors", {}), "wrong_image": consumer.get("wrong_images", 0)},
        "opens_lost": opens_lost,
        "evidence": evidence_at_decision(track),
        "decisions": [
            {k: x[k] for k in ("phase_from", "phase_to", "decided_by", "reason")} | {"t": _since(exposed, x["at"])}
            for x in d.get("decisions", [])
        ],
    }
    if opens_lost is None:
        del out["opens_lost"]
    return out


def _lost_by_canary(track: Track) -> int:
    """Messages the canary's consumer acknowledged and dropped (its conservation metrics' bad events).

    From the last sample that still has the judge's words: the controller drops them once the
    rollout has ended, and a sample taken after that has none (the counts only grow before it).
    """
    judged: dict[str, Any] = next((s["judge"] for s in reversed(track.samples) if s["judge"]), {})
    return sum(int(judged[name]["canary"]["bad"]) for name in track.lossy_metrics if name in judged)


def _decider(decisions: list[dict[str, Any]]) -> str:
    """Who decided the outcome: the move to rolling back, or to promoting (not the bookkeeping after)."""
    for decision in decisions:
        if decision["phase_to"] in ("rolling_back", "promoting", "failed"):
            return str(decision["decided_by"])
    return ""


def consumer_errors(seen: dict[str, Any]) -> int:
    """Failed answers plus wrong ones (an image that is not the picture asked for)."""
    return int(sum(seen.get("errors", {}).values()) + seen.get("wrong_images", 0))


def evidence_at_decision(track: Track) -> dict[str, Any]:
    """The judge's counts in the last sample taken while the canary was still being judged."""
    for sample in reversed(track.samples):
        if sample["judge"] and sample["phase"] in ("progressing", "paused", "mirroring"):
            return {"t": round(sample["t"] - track.started, 1), "judge": sample["judge"]}
    return {}


def _since(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else round(end - start, 1)


def group_figures(group: GroupTrack, members: list[dict[str, Any]]) -> dict[str, Any]:
    """The group's figures: when each member ended and the group settled (seconds since the group
    was released), its members' own figures summed for consumers (``members``: their
    :func:`release_figures`, in the group's order), and the group's decisions on the same clock."""
    d = group.detail
    settled_s = _since(group.created_at, d.get("since")) if d.get("settled") else None
    ended: dict[str, float | None] = {}
    timelines: dict[str, list[dict[str, Any]]] = {}
    for track in group.members:
        made = track.detail.get("decisions", [])
        at = {x["phase_to"]: x["at"] for x in made}
        ended[track.service] = _since(group.created_at, at.get("rolled_back", at.get("succeeded")))
        timelines[track.service] = [
            {"t": _since(group.created_at, x["at"]), "phase": x["phase_to"], "by": x["decided_by"]} for x in made
        ]
    lost = [m["opens_lost"] for m in members if m.get("opens_lost") is not None]
    return {
        "name": group.name,
        "group_id": group.group_id,
        "policy": d.get("policy", ""),
        "outcome": d.get("phase", ""),
        "reason": d.get("reason", ""),
        "release_to_settled_s": settled_s,
        "members": [
            {
                "service": track.service,
                "release": track.release,
                "outcome": m["outcome"],
                "rollback_s": m["rollback_s"],
                "ended_s": ended[track.service],
                "timeline": timelines[track.service],
            }
            for track, m in zip(group.members, members, strict=True)
        ],
        "consumer_errors": sum(m["consumer_errors"] for m in members),
        "opens_lost": sum(lost) if lost else None,
        "decisions": [
            {
                "t": _since(group.created_at, x["at"]),
                "member": x["member"],
                "action": x["action"],
                "reason": x["reason"],
            }
            for x in d.get("decisions", [])
        ],
    }
