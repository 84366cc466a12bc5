"""Release 1.2: the batch path of 1.1, with every group of events accounted for.

A blank user agent is a real open from a client that sends none; it is classified like any other
agent (client "unknown"), not left out of the batch.
"""

from __future__ import annotations

from typing import Any

from services.opens.handling_batched import grouped_outcomes


def outcomes(events: list[dict[str, Any]], release: str) -> list[dict[str, Any]]:
    return grouped_outcomes(events, release, lambda by_agent: list(by_agent))
