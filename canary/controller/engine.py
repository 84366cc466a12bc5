"""The controller's loop: observe, judge, decide, store, then make the world match.

Each tick, for every active rollout: the platform is made to match ``machine.desired`` (releases
started or stopped), the route table that routers poll is published, an observation is made
(canary ready? judge verdicts from the provider's bins, the weight routers have had time to apply)
and ``machine.advance`` decides.  The new state and its decisions are stored *before* the next
tick acts on them, so a controller that dies anywhere resumes from the store with the same desired
state.  Only the holder of the lease acts.  A metric provider that fails holds the rollout (its
verdict is ``continue`` with the provider's reason); it never rolls back.

Judge state lives in memory: after a restart the judge starts a fresh e-process on new bins, which
can delay a verdict but never makes one wrongly (the test stays valid from any starting point).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from canary.analysis.judge import JudgeConfig, MetricState, judge
from canary.controller import machine
from canary.controller.spec import Metric, RolloutSpec
from canary.controller.store import Store
from canary.platforms.base import Platform
from canary.providers.base import BinMaker, MetricProvider, MetricQuery, ProviderUnavailable
from core.errors import DependencyUnavailable

log = logging.getLogger("releasewarden.controller")
APPLY_GRACE_S = 1.0  # routers re-read the table every 0.5 s
LEASE_TTL_S = 10.0
PROCESSOR = {"opens": "opens-processor"}  # queue consumers that run beside a service's releases
REPROCESS_AFTER_ROLLBACK = frozenset({"opens"})
UNAVAILABLE = "unavailable"  # a verdict the provider could not give: the rollout holds


@dataclass
class _Judging:
    states: dict[str, MetricState] = field(default_factory=dict)
    bins: dict[str, BinMaker] = field(default_factory=dict)
    last: dict[str, tuple[str, str, dict[str, Any]]] = field(default_factory=dict)
    step: int = -1


class Controller:
    def __init__(
        self,
        store: Store,
        platform: Platform,
        provider: MetricProvider,
        stable: dict[str, str],
        clock: Callable[[], float] = time.time,
        holder: str = "",
        admin_token: str = "",
    ) -> None:
        self.store = store
        self.platform = platform
        self.provider = provider
        self.stable = dict(stable)  # service -> its stable release, outside any rollout
        self.clock = clock
        self.holder = holder or uuid.uuid4().hex[:12]
        self.admin_token = admin_token
        self.table: dict[str, Any] = {"version": 0, "services": {}}
        self.table_changed_at = 0.0
        self.commands: dict[str, str] = {}
        self.alerts: dict[str, str] = {}
        self.judging: dict[str, _Judging] = {}
        self.upstreams: dict[tuple[str, str], str] = {}
        self.active: list[machine.Rollout] = []  # as of the last tick (for /metrics)
        self.last_tick = 0.0
        self.public_url = ""  # where routers and Prometheus reach the controller
        self.router_url = ""

    # -- inputs from the API -----------------------------------------------------------------------
    def command(self, rollout_id: str, name: str) -> None:
        self.commands[rollout_id] = name

    def alert(self, rollout_id: str, name: str) -> None:
        self.alerts[rollout_id] = name

    # -- the loop ----------------------------------------------------------------------------------
    async def start_stable(self) -> None:
        """Each service's stable release: the last one promoted (the store outlives the process), else
        the one given at start.  A controller restarted after a promotion must not go back."""
        for r in await asyncio.to_thread(self.store.list_rollouts, False):  # oldest first
            if r.phase == machine.SUCCEEDED and r.spec.service in self.stable:
                self.stable[r.spec.service] = r.spec.canary
        for service, release in self.stable.items():
            await self._run(service, release, "stable")
        await self._publish()

    async def run(self, tick_s: float = 1.0) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # a bad tick must not end the controller; the next one tries again
                log.exception("controller tick failed")
            await asyncio.sleep(tick_s)

    async def tick(self) -> None:
        now = self.clock()
        if not await asyncio.to_thread(self.store.acquire_lease, "controller", self.holder, LEASE_TTL_S, now):
            return
        active = await asyncio.to_thread(self.store.list_rollouts, True)
        for rollout in active:
            await self._apply(rollout)
        await self._publish()
        still_active = []
        for rollout in active:
            seen = await self._observe(rollout)
            new, made = machine.advance(rollout, seen, self.clock())
            if new.phase not in machine.TERMINAL:
                still_active.append(new)
            if new is not rollout:
                await asyncio.to_thread(self.store.save, new, rollout.revision, made)
                for d in made:
                    log.warning(
                        "%s %s -> %s by %s: %s", rollout.spec.name, d.phase_from, d.phase_to, d.decided_by, d.reason
                    )
                if new.phase == machine.ROLLED_BACK and new.spec.service in REPROCESS_AFTER_ROLLBACK:
                    await self._reprocess(new)
                if new.phase in machine.TERMINAL:
                    await self._apply(new)
                    await self._publish()
                    self.judging.pop(new.id, None)
                if new.phase == machine.SUCCEEDED:
                    for name in (new.spec.service, PROCESSOR.get(new.spec.service)):
                        if name:
                            await self.platform.retire_canary(name)
        self.active = still_active  # as stored by this tick: /metrics reads it without a query
        self.last_tick = self.clock()

    async def _reprocess(self, r: machine.Rollout) -> None:
        try:
            handed_back = await self.reprocess(r)
            log.warning("%s: %s events of %s handed back to stable", r.spec.name, handed_back, r.spec.canary)
        except DependencyUnavailable as exc:
            log.error("%s: %s; run `canary reprocess %s`", r.spec.name, exc, r.id[:8])

    async def reprocess(self, r: machine.Rollout) -> int:
        """Opens: what the canary's processor acknowledged goes back to stable's (nothing stays lost).
        Idempotent: events already handed back are not counted again."""
        url = self.upstreams.get((r.spec.service, self.stable.get(r.spec.service, r.spec.stable)))
        if not url:
            raise DependencyUnavailable(f"no stable {r.spec.service} is running to hand {r.spec.canary}'s events to")
        try:
            async with httpx.AsyncClient() as client:
                answer = await client.post(
                    f"{url}/admin/reprocess",
                    json={"release": r.spec.canary},
                    headers={"Authorization": f"Bearer {self.admin_token}"},
                    timeout=30,
                )
                answer.raise_for_status()
            return int(answer.json()["events_handed_back"])
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            raise DependencyUnavailable(
                f"re-processing {r.spec.canary}'s events at {url} failed ({type(exc).__name__}: {exc})"
            ) from None

    async def _run(self, service: str, release: str, track: str) -> None:
        for name in (service, PROCESSOR.get(service)):
            if name:
                instance = await self.platform.start(name, release, track)
                self.upstreams[(name, release)] = instance.url

    async def _apply(self, r: machine.Rollout) -> None:
        d = machine.desired(r)
        s = r.spec
        await self._run(s.service, d.stable_release, "stable")
        if d.canary_running:
            await self._run(s.service, s.canary, "canary")
        warm = d.old_release_warm and self.platform.warm_old_release
        if warm:
            await self._run(s.service, s.stable, "stable")
        self.stable[s.service] = d.stable_release
        keep = {d.stable_release} | ({s.canary} if d.canary_running else set()) | ({s.stable} if warm else set())
        if r.phase == machine.ROLLING_BACK:
            return  # the canary stops only once routers no longer send it traffic (next phase)
        for release in {s.stable, s.canary} - keep:
            for name in (s.service, PROCESSOR.get(s.service)):
                if name:
                    await self.platform.stop(name, release)
                    self.upstreams.pop((name, release), None)

    async def _publish(self) -> None:
        active = {r.spec.service: r for r in await asyncio.to_thread(self.store.list_rollouts, True)}
        services: dict[str, Any] = {}
        for service, release in self.stable.items():
            route: dict[str, Any] = {
                "upstreams": {"stable": self.upstreams.get((service, release), "")},
                "releases": {"stable": release},
                "weight": 0,
            }
            r = active.get(service)
            if r is not None:
                d = machine.desired(r)
                canary_url = self.upstreams.get((service, r.spec.canary))
                if d.canary_running and canary_url and d.stable_release != r.spec.canary:
                    route["upstreams"]["canary"] = canary_url
                    route["releases"]["canary"] = r.spec.canary
                    route["weight"] = d.weight
                    if d.mirror_share:
                        route["mirror"] = {"share": d.mirror_share, **_mirror_options(r.spec)}
                route["failover"] = r.spec.failover
                if r.spec.sticky:
                    route["sticky"] = r.spec.sticky
            if route["upstreams"]["stable"]:
                services[service] = route
        if services != self.table["services"]:
            before = self.table["services"]
            self.table = {"version": self.table["version"] + 1, "services": services}
            self.table_changed_at = self.clock()
            for service, route in services.items():
                if route["weight"] != before.get(service, {}).get("weight", 0):
                    await self.platform.set_weight(service, float(route["weight"]))

    def _applied_weight(self, service: str) -> float | None:
        if self.clock() - self.table_changed_at < APPLY_GRACE_S:
            return None
        route = self.table["services"].get(service)
        return float(route["weight"]) if route else None

    async def _observe(self, r: machine.Rollout) -> machine.Observation:
        s = r.spec
        ready = await self.platform.healthy(s.service, s.canary)
        not_ready = ""
        if not ready and r.phase == machine.PENDING:
            not_ready = await self.platform.not_ready_reason(s.service, s.canary)
        verdicts: dict[str, tuple[str, str]] = {}
        mirror = None
        unavailable = ""
        if r.phase in (machine.PROGRESSING, machine.PAUSED, machine.MIRRORING) and ready:
            judging = self.judging.setdefault(r.id, _Judging())
            if judging.step != r.step and r.phase == machine.PROGRESSING:
                judging.step = r.step  # a new step bakes afresh; the e-process is kept across steps
                for state in judging.states.values():
                    state.new_step()
            metrics = s.metrics if r.phase != machine.MIRRORING else (Metric("mirror", "mirror"),)
            for metric in metrics:
                verdicts[metric.name] = await self._judge(r, metric, judging)
            unavailable = "; ".join(f"{m}: {why}" for m, (v, why) in sorted(verdicts.items()) if v == UNAVAILABLE)
            verdicts = {m: ("continue", why) if v == UNAVAILABLE else (v, why) for m, (v, why) in verdicts.items()}
            if r.phase == machine.MIRRORING:
                mirror = verdicts.pop("mirror")
        return machine.Observation(
            canary_ready=ready,
            verdicts=verdicts,
            mirror=mirror,
            weight_applied=self._applied_weight(s.service),
            command=self.commands.pop(r.id, ""),
            alert=self.alerts.pop(r.id, ""),
            metrics_unavailable=unavailable,
            not_ready=not_ready,
        )

    async def _judge(self, r: machine.Rollout, metric: Metric, judging: _Judging) -> tuple[str, str]:
        s = r.spec
        query = MetricQuery(
            s.service, metric.kind, s.canary, s.stable, metric.threshold_ms, metric.events_query, metric.bad_query
        )
        try:
            reading = await self.provider.cumulative(query)
        except ProviderUnavailable as exc:
            return UNAVAILABLE, f"metrics unavailable ({exc})"
        step = s.steps[min(r.step, len(s.steps) - 1)]
        config = JudgeConfig(
            alpha=metric.alpha,
            min_regression=metric.min_regression,
            objective=metric.objective,
            rate_floor=metric.rate_floor,
            tolerance=metric.tolerance,
            min_bake_requests=step.min_requests,
            min_bake_seconds=step.min_seconds,
            last_step=r.step >= len(s.steps) - 1,
        )
        if metric.kind == "mirror":
            config = JudgeConfig(
                min_bake_requests=int((s.mirror or {}).get("min_compared", 100)),
                min_bake_seconds=float((s.mirror or {}).get("min_seconds", 30)),
            )
        bins = judging.bins.setdefault(metric.name, BinMaker())
        state = judging.states.setdefault(metric.name, MetricState())
        b = bins.next_bin(reading)
        if metric.kind == "mirror":  # any difference fails; compared answers make the bake
            state.add(config, b.canary.events, b.canary.bad, 0, 0, 1.0)
            if state.canary_bad > float((s.mirror or {}).get("max_different_share", 0.0)) * state.canary_n:
                return "fail", f"{state.canary_bad} of {state.canary_n} mirrored answers differ"
            if state.canary_n >= config.min_bake_requests and state.step_seconds >= config.min_bake_seconds:
                return "pass", f"{state.canary_n} mirrored answers compared, none differ"
            return "continue", f"{state.canary_n} of {config.min_bake_requests} answers compared"
        state.add(config, b.canary.events, b.canary.bad, b.stable.events, b.stable.bad, 1.0)
        decision = judge(state, config)
        judging.last[metric.name] = (decision.verdict, decision.reason, decision.evidence)
        return decision.verdict, decision.reason


def _mirror_options(spec: RolloutSpec) -> dict[str, Any]:
    m = spec.mirror or {}
    return {k: m[k] for k in ("ignore_fields", "pixel_tolerance") if k in m}
