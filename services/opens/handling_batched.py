"""Release 1.1's "routine improvement": classify each distinct user agent of a batch only once.

A batch of 500 pixel hits holds a few dozen distinct user agents, so the events are grouped by
agent, each agent is parsed once, and the outcome rows are built group by group.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from services.opens.handling import outcome_row
from services.opens.useragent import classify


def agents_to_parse(by_agent: dict[str, list[dict[str, Any]]]) -> Iterable[str]:
    return (agent for agent in by_agent if agent.strip())  # nothing to parse in a blank agent


def outcomes(events: list[dict[str, Any]], release: str) -> list[dict[str, Any]]:
    return grouped_outcomes(events, release, agents_to_parse)


def grouped_outcomes(events: list[dict[str, Any]], release: str, agents: Any) -> list[dict[str, Any]]:
    by_agent: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_agent[event["user_agent"]].append(event)
    rows: list[dict[str, Any]] = []
    for agent in agents(by_agent):
        kind = classify(agent)
        rows.extend(outcome_row(event, kind, release) for event in by_agent[agent])
    return rows
