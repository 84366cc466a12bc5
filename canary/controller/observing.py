"""What the controller sees of one rollout in a tick: the ``machine.Observation`` that
``machine.advance`` decides on.  Called by the loop (``canary.controller.engine``) once the world
matches the stored state and the route table is published.

An :class:`Observer` asks the metric provider for each metric's cumulative counts (during the
watch with the roles reversed: the old release, holding back a share, is judged as the canary),
hands them to the judge (``canary.controller.judging``: the step judge, the mirror judge or the
watch's change detector, by phase) and keeps each rollout's judging state in memory, loaded from
the store after a restart so that the e-process goes on where it was.  A bin is judged under the
step whose weight the data plane confirms (the one before until every reader confirms it).  A
metric the provider cannot give is named in the observation (the rollout holds); it is never a
verdict.

While a rollout is pending and its canary not ready, the Observer keeps what the platform says about
it (:class:`Waiting`: its words, how long the rollout has waited, the deadline it fails at) for the
rollout's summary (``canary status``, the API, the dashboard).  That is kept in memory only, never
stored: it is heard again at every tick (a restarted controller knows it after its first), and
the listeners (the dashboard's stream) are told only when the words change.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from canary.controller import judging as jg
from canary.controller import machine
from canary.controller.routing import Confirmation
from canary.controller.spec import Metric
from canary.controller.store import Store
from canary.platforms.base import NotReady, Platform
from canary.providers.base import MetricProvider, MetricQuery, ProviderUnavailable, TrackCounts
from core.routes import ServiceRoute

JUDGED = (machine.PROGRESSING, machine.PAUSED, machine.MIRRORING)


class DeadlineBy(StrEnum):
    PLATFORM = "platform"  # the platform gives up on the start first (a local release's ready_timeout_s)
    CONTROLLER = "controller"  # the rollout's own ready deadline (machine.READY_DEADLINE_S)


@dataclass(frozen=True)
class Waiting:
    """Why a pending rollout's canary is not ready yet, as heard at the last tick (``reason``: the
    platform's words, or a before_traffic hook's that holds it, one line), since when the rollout
    waits (its ``phase_since``, on the controller's clock) and how many seconds after that it fails
    if the canary is still not ready: at the controller's ready deadline, or sooner where the
    platform gives up on the start first."""

    reason: str
    since: float
    deadline_s: float
    deadline_by: DeadlineBy

    @classmethod
    def heard(cls, r: machine.Rollout, said: NotReady, now: float) -> Waiting:
        deadline, by = machine.READY_DEADLINE_S, DeadlineBy.CONTROLLER
        if said.deadline_s is not None:  # the platform's own wait, counted from its start
            platform_ends = now - r.phase_since + said.deadline_s - (said.waited_s or 0.0)
            if platform_ends < deadline:
                deadline, by = platform_ends, DeadlineBy.PLATFORM
        return cls(said.reason, r.phase_since, max(deadline, 0.0), by)

    def to_dict(self, now: float) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "waited_s": round(max(now - self.since, 0.0), 1),
            "deadline_s": round(self.deadline_s, 1),
            "deadline_by": self.deadline_by.value,
        }


@dataclass
class Observer:
    platform: Platform
    provider: MetricProvider
    store: Store
    clock: Callable[[], float]
    judging: dict[str, jg.RolloutJudging] = field(default_factory=dict)  # rollout id -> its judge's state
    waiting: dict[str, Waiting] = field(default_factory=dict)  # pending rollout id -> why its canary is not ready
    listeners: list[Callable[[str], None]] = field(default_factory=list)  # told the id whose words changed

    async def observe(
        self,
        r: machine.Rollout,
        *,
        ready: bool,
        route: ServiceRoute | None,
        confirmation: Confirmation,
        platform_error: str = "",
        starting: tuple[str, ...] = (),
    ) -> machine.Observation:
        """``route``: the service's route as published; ``confirmation``: whether every reader of
        the table serves it; ``starting``: the service or consumers whose start of the canary goes
        on (the platform is asked about the first, else about the service)."""
        s = r.spec
        said = None
        if not ready and r.phase == machine.PENDING:
            name = starting[0] if starting else s.service
            said = await self.platform.not_ready(name, s.canary)
            if starting and not said.reason:  # a platform without words for a start that goes on
                said = dataclasses.replace(
                    said, reason=f"{name} {s.canary} is still starting (waiting for it to answer)"
                )
        self.heard(r, said)
        not_ready = said.reason if said is not None else ""
        verdicts: dict[str, machine.Judgement] = {}
        mirror = change = None
        unavailable: list[str] = []
        judging = await self.judging_of(r)
        applied = (route.weight if route else 0.0) if confirmation.confirmed else None
        # pending too: the salt is in the table, so sticky bucket groups gather history on stable
        if (r.phase in JUDGED and ready) or r.phase in (machine.PENDING, machine.WATCHING):
            readings = await self._readings(r, route, s.metrics, unavailable)
            if r.phase == machine.MIRRORING:
                mirrored = await self._readings(r, route, (Metric("mirror", "mirror"),), unavailable)
                if "mirror" in mirrored:
                    mirror = jg.judge_mirror(judging, s, mirrored["mirror"], self.clock())
            if len(readings) == len(s.metrics):  # all or none: a missing one's bin waits, nothing is lost
                if r.phase == machine.WATCHING:
                    change = jg.judge_watch(judging, s, readings, self.clock(), applied)
                else:
                    verdicts = jg.judge_step(judging, s, judged_step(r, applied), readings, self.clock(), applied)
            if r.phase in (machine.PENDING, machine.MIRRORING, machine.WATCHING):
                verdicts = {}  # the step judge only gathers history here; the mirror and watch decide
            if r.phase == machine.PENDING:
                unavailable = []  # a source that does not answer yet costs only history
        waiting = ready and r.phase == machine.PENDING
        history_wait = jg.history_wait(judging, s, self.clock() - r.phase_since) if waiting else ""
        return machine.Observation(
            canary_ready=ready,
            verdicts=verdicts,
            mirror=mirror,
            weight_applied=applied,
            unconfirmed=confirmation.waiting_for,
            change_detected=change,
            metrics_unavailable="; ".join(unavailable),  # the watch too: its clock stops, it never passes blind
            not_ready=not_ready,
            platform_error=platform_error,
            history_wait=history_wait,
        )

    def heard(self, r: machine.Rollout, said: NotReady | None) -> None:
        """What the pending rollout ``r`` waits for now (None: nothing, its canary is ready)."""
        before = self.waiting.pop(r.id, None)
        if said is not None:
            self.waiting[r.id] = Waiting.heard(r, said, self.clock())
        if (before.reason if before else None) != (said.reason if said else None):
            for tell in self.listeners:
                tell(r.id)

    async def judging_of(self, r: machine.Rollout) -> jg.RolloutJudging:
        j = self.judging.get(r.id)
        if j is None:  # after a restart: the same e-process, from the store
            stored = await asyncio.to_thread(self.store.judging, r.id)
            j = self.judging[r.id] = jg.RolloutJudging.from_dict(stored) if stored else jg.RolloutJudging()
        return j

    async def _readings(
        self, r: machine.Rollout, route: ServiceRoute | None, metrics: tuple[Metric, ...], unavailable: list[str]
    ) -> dict[str, TrackCounts]:
        """Each metric's cumulative counts; one the source cannot give is named in ``unavailable``."""
        s = r.spec
        watching = r.phase == machine.WATCHING
        canary, stable = (s.stable, s.canary) if watching else (s.canary, s.stable)  # watch: roles reversed
        # the old release's track may be empty during the watch: no holdback, or no warm copy of it
        optional = watching and not (machine.desired(r).holdback and self.platform.warm_old_release)
        groups = sticky_groups(route) if not watching else ()
        out: dict[str, TrackCounts] = {}
        for metric in metrics:
            query = MetricQuery(
                s.service,
                metric.kind,
                canary,
                stable,
                metric.threshold_ms,
                metric.events_query,
                metric.bad_query,
                sticky_salt=groups[0] if groups else "",
                sticky_groups=groups[1] if groups else (),
                canary_optional=optional,
            )
            try:
                out[metric.name] = await self.provider.cumulative(query)
            except ProviderUnavailable as exc:
                unavailable.append(f"{metric.name}: metrics unavailable ({exc})")
        return out


def judged_step(r: machine.Rollout, applied: float | None) -> int:
    """The step whose routing the bin was served under: the rollout's once the data plane
    confirms its weight, the one before until then (-1 before the canary takes traffic)."""
    if r.phase in (machine.PENDING, machine.MIRRORING):
        return -1
    if applied is not None and applied == r.spec.steps[r.step].weight:
        return r.step
    return r.step - 1


def sticky_groups(route: ServiceRoute | None) -> tuple[str, tuple[int, ...]] | tuple[()]:
    """The salt and bucket groups the routers count by, as the published route says (none: the
    provider answers per request)."""
    if route is None or route.sticky is None or not route.sticky.groups:
        return ()
    return route.sticky.salt, route.sticky.groups
