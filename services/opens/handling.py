"""Turning raw open events into outcomes: an open (maybe a machine open) or a filtered event.

Release 1.0 classifies each event's user agent one by one.  Releases 1.1 and 1.2 use the batch
path of ``handling_batched``.
"""

from __future__ import annotations

from typing import Any

from services.opens.useragent import Classified, classify


def outcome_row(event: dict[str, Any], kind: Classified, release: str) -> dict[str, Any]:
    return {
        "event_id": event["event_id"],
        "campaign_id": event["campaign_id"],
        "contact_id": event["contact_id"],
        "send_id": event["send_id"],
        "client": kind.client,
        "device": kind.device,
        "machine": kind.machine,
        "filtered": kind.filtered,
        "opened_at": event["received_at"],
        "release": release,
    }


def outcomes(events: list[dict[str, Any]], release: str) -> list[dict[str, Any]]:
    return [outcome_row(event, classify(event["user_agent"]), release) for event in events]
