"""What goes on the wire for each webhook kind, and how a receiver checks the signature.

Generic webhooks get the event as JSON (``{"id", "kind", "rollout_id", "service", "stable",
"canary", "reason", "evidence", "step", "at"}``) with these headers:

- ``X-Releasewarden-Event-Id``: the event's id (the same on a retry: dedupe on it);
- ``X-Releasewarden-Event``: its kind;
- ``X-Releasewarden-Timestamp``: Unix seconds when this attempt was signed;
- ``X-Releasewarden-Signature``: ``sha256=`` + hex HMAC-SHA256 with the webhook's secret over
  ``timestamp + "." + body`` (the exact bytes sent).  Check it with :func:`verify`, and refuse old
  timestamps, so that a captured request cannot be replayed later.

Slack webhooks get a message (``text`` plus ``blocks``), signed the same way when a secret is set.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from canary.notify.events import EventKind, RolloutEvent
from canary.notify.webhooks import Webhook, WebhookKind

SIGNATURE = "X-Releasewarden-Signature"
TIMESTAMP = "X-Releasewarden-Timestamp"
EVENT_ID = "X-Releasewarden-Event-Id"
EVENT_KIND = "X-Releasewarden-Event"
EMOJI = {
    EventKind.STARTED: ":rocket:",
    EventKind.STEP_PASSED: ":white_check_mark:",
    EventKind.HELD: ":double_vertical_bar:",
    EventKind.PAUSED: ":pause_button:",
    EventKind.ROLLED_BACK: ":rotating_light:",
    EventKind.PROMOTED: ":tada:",
    EventKind.WATCH_ENDED: ":checkered_flag:",
    EventKind.INCONCLUSIVE: ":grey_question:",
    EventKind.FAILED: ":x:",
}


def body(event: RolloutEvent, kind: WebhookKind) -> bytes:
    payload = slack_message(event) if kind is WebhookKind.SLACK else event.to_dict()
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def slack_message(event: RolloutEvent) -> dict[str, Any]:
    text = f"{EMOJI[event.kind]} *{event.headline()}*"
    details = [f"*reason:* {event.reason}"] if event.reason else []
    if event.evidence:
        details.append(f"*evidence:* {event.evidence}")
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if details:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(details)}})
    context = f"rollout {event.rollout_id} · {event.at.isoformat(timespec='seconds')} · event {event.id}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": f"{event.headline()}" + (f": {event.reason}" if event.reason else ""), "blocks": blocks}


def signature(secret: str, timestamp: int, data: bytes) -> str:
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + data, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def headers(event: RolloutEvent, hook: Webhook, data: bytes, now: float) -> dict[str, str]:
    out = {"Content-Type": "application/json", EVENT_ID: event.id, EVENT_KIND: event.kind.value}
    if hook.secret:
        timestamp = int(now)
        out[TIMESTAMP] = str(timestamp)
        out[SIGNATURE] = signature(hook.secret, timestamp, data)
    return out


def verify(secret: str, timestamp: str, data: bytes, signed: str, now: float, tolerance_s: float = 300) -> bool:
    """For receivers: the signature is right and the timestamp within ``tolerance_s`` of ``now``.
    Whatever a sender put in the two headers, the answer is True or False, never an exception
    (``"²".isdigit()`` is true, a timestamp is ASCII digits only)."""
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 20:
        return False
    if abs(now - int(timestamp)) > tolerance_s:
        return False
    expected = signature(secret, int(timestamp), data).encode()
    return hmac.compare_digest(expected, signed.encode("utf-8", "replace"))  # str compare refuses non-ASCII
