"""After an opens rollback, the canary's acknowledged events go back to stable's processor.

The controller calls it by itself when a rollout of such a service is rolled back; ``POST
/api/rollouts/{id}/reprocess`` (``canary reprocess``) is the by-hand retry.  Idempotent: events
already handed back are not counted again.
"""

from __future__ import annotations

import httpx

from core.errors import DependencyUnavailable

REPROCESS_AFTER_ROLLBACK = frozenset({"opens"})


async def hand_back(stable_url: str | None, service: str, canary: str, token: str) -> int:
    if not stable_url:
        raise DependencyUnavailable(f"no stable {service} is running to hand {canary}'s events to")
    try:
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                f"{stable_url}/admin/reprocess",
                json={"release": canary},
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            answer.raise_for_status()
        return int(answer.json()["events_handed_back"])
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        raise DependencyUnavailable(
            f"re-processing {canary}'s events at {stable_url} failed ({type(exc).__name__}: {exc})"
        ) from None
