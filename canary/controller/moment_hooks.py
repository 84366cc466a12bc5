"""The catalog's hooks, run by the controller at a rollout's named moments.

Before the canary gets traffic (``before_traffic``), after a rollback (``after_rollback``: the
event tracker's entry hands the canary's acknowledged events back to stable there) and after a promotion
(``after_promotion``).  The controller knows no service: what runs is the entry's business, and
``POST /api/rollouts/{id}/reprocess`` (``canary reprocess``) runs the ``after_rollback`` hooks
again by hand.  A hook never raises; its failure carries what the entry says to do (hold, or roll
back) and a reason naming the hook.
"""

from __future__ import annotations

from typing import Any

from canary.catalog import HookContext, HookResult, Moment, ServiceEntry, run_hook
from core.errors import DependencyUnavailable
from core.settings import Settings


async def run_moment(
    entry: ServiceEntry,
    moment: Moment,
    *,
    stable: str,
    canary: str,
    urls: dict[tuple[str, str], str],
    rollout_id: str,
    settings: Settings,
) -> list[HookResult]:
    """Every hook of ``entry`` at ``moment``, in order; stops at the first that fails."""
    context = HookContext(
        service=entry.name,
        stable=stable,
        canary=canary,
        stable_url=urls.get((entry.name, stable), ""),
        canary_url=urls.get((entry.name, canary), ""),
        rollout_id=rollout_id,
        moment=moment,
        settings=settings,
        catalog_dir=str(entry.catalog_dir),
    )
    results = []
    for hook in entry.hooks_at(moment):
        result = await run_hook(hook, context)
        results.append(result)
        if not result.ok:
            break
    return results


def failure(results: list[HookResult]) -> HookResult | None:
    return next((r for r in results if not r.ok), None)


def handed_back(results: list[HookResult]) -> int:
    """What the ``after_rollback`` hooks say they handed back (``events_handed_back`` in their JSON
    answer, where they give one); a failed one is an error, in its own words."""
    failed = failure(results)
    if failed is not None:
        raise DependencyUnavailable(failed.reason)
    total = 0
    for r in results:
        try:
            answer: Any = r.json()
        except ValueError:
            continue
        if isinstance(answer, dict) and isinstance(answer.get("events_handed_back"), int):
            total += answer["events_handed_back"]
    return total
