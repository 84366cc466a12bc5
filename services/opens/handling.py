"""Turning raw open events into outcomes: an open (maybe a machine open) or a filtered event.

Release 1.0 classifies each event's user agent one by one.
"""

from __future__ import annotations

from typing import Any

from services.opens.useragent import classify


def outcomes(events: list[dict[str, Any]], release: str) -> list[dict[str, Any]]:
    rows = []
    for event in events:
        kind = classify(event["user_agent"])
        rows.append(
            {
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
        )
    return rows
