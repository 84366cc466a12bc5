"""The controller's loop: observe, judge, decide, store, then make the world match.

Each tick, for every active rollout: the platform is made to match ``machine.desired`` (releases
started or stopped), the typed route table that routers and queue consumers poll is published
(``canary.controller.publishing``: the table, its readers and what they confirm), an
observation is made (canary ready? its before_traffic hooks passed? then, by
``canary.controller.observing``: the judge's answers from the provider's bins, the weight every
reader of the table confirms) and ``machine.advance`` decides.  The new state, its decisions (with
their evidence) and the judge's state are stored *before* the next tick acts on them, so a
controller that dies anywhere resumes from the store with the same desired state and the same
e-process.  Only the holder of the lease acts (its name: ``canary.controller.lease_holder``).

One rollout's trouble stays its own: a release the platform cannot start fails that rollout (or
rolls it back) with the platform's words; any other error holds it for the tick, logged in one
line; the other rollouts go on, and commands (``abort``) still take.  A release slow to start is
waited for at most ``START_WAIT_S`` per tick and goes on starting in the background
(``canary.controller.starts``); until it has, its rollout waits as for a canary not ready yet, and
a rollout that ends meanwhile cancels the start.  Meanwhile what the platform says about the canary
(what its ready path answered, that its process exited) is the pending rollout's ``not_ready``,
kept in memory (``canary.controller.observing.Waiting``).  A metric
provider that fails holds the rollout (no verdict, its step's clock stops); it never rolls back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from canary.catalog import Catalog, Moment, OnFailure
from canary.controller import judging as jg
from canary.controller import machine
from canary.controller.group_engine import GroupRunner
from canary.controller.moment_hooks import failure, handed_back, run_moment
from canary.controller.observing import Observer, Waiting
from canary.controller.publishing import TablePublisher
from canary.controller.routing import Confirmation, Readers
from canary.controller.spec import load_spec
from canary.controller.starts import Starts
from canary.controller.store import Store
from canary.platforms.base import Instance, NotReady, Platform
from canary.providers.base import MetricProvider
from core.errors import DependencyUnavailable, ReleaseWardenError, Unprocessable
from core.routes import RouteTable
from core.settings import Settings

log = logging.getLogger("releasewarden.controller")
OWED_RETRY_S = 60.0  # after_rollback hooks that failed (or a killed controller owed) are tried again
LEASE_TTL_S = 10.0


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
        catalog: Catalog | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.store = store
        self.platform = platform
        self.provider = provider
        self.stable = dict(stable)  # service -> its stable release, outside any rollout
        self.clock = clock
        self.holder = holder or uuid.uuid4().hex[:12]
        self.admin_token = admin_token
        self.catalog = catalog if catalog is not None else Catalog({})  # consumers, hooks, releases
        self.settings = settings or Settings(admin_token=admin_token)  # what hooks' templates may name
        self.cleared_for_traffic: set[str] = set()  # rollouts whose before_traffic hooks passed
        self.publisher = TablePublisher(platform, clock)  # the route table, its readers, their confirmations
        self.commands: dict[str, str] = {}
        self.alerts: dict[str, str] = {}
        self.observer = Observer(platform, provider, store, clock)  # what a tick sees, and the judge's state
        self.judging = self.observer.judging
        self.upstreams: dict[tuple[str, str], str] = {}
        self.platform_errors: dict[str, str] = {}  # rollout id -> what the platform said
        self.starts = Starts(platform, self.upstreams)  # releases starting, waited for a second a tick
        self.active: list[machine.Rollout] = []  # as of the last tick (for /metrics)
        self.last_tick = 0.0
        self.owed_paid = False  # no after_rollback hooks owed (from before this controller, or failed)
        self.owed_due = 0.0  # when the owed ones are tried again
        self.public_url = ""  # where routers and Prometheus reach the controller
        self.router_url = ""
        self.notifications: Any = None  # canary.controller.notifying.Notifications, set by bootstrap
        self.holds: set[str] = set()  # rollouts whose promotion their group holds (promote: together)
        self.groups = GroupRunner(self)

    # -- inputs from the API -----------------------------------------------------------------------
    def command(self, rollout_id: str, name: str) -> None:
        """Taken at the rollout's next tick; an abort waiting there is never replaced by another command."""
        if self.commands.get(rollout_id) != "abort":
            self.commands[rollout_id] = name

    def alert(self, rollout_id: str, name: str) -> None:
        self.alerts[rollout_id] = name

    def alert_pending(self, rollout_id: str) -> bool:
        return rollout_id in self.alerts

    def poll_table(self, reader: tuple[str, int] | None) -> dict[str, Any]:
        """A router's or consumer's poll: remember what it serves, answer the table."""
        return self.publisher.poll(reader)

    def reader_status(self) -> list[dict[str, Any]]:
        return self.publisher.reader_status()

    def confirmation(self, service: str) -> Confirmation:
        return self.publisher.confirmation(service, self.catalog.consumers_of(service))

    @property
    def table(self) -> RouteTable:
        """The route table as last published (the publisher's, read here by the API and dashboard)."""
        return self.publisher.table

    @property
    def readers(self) -> Readers:
        return self.publisher.readers

    @property
    def table_ready(self) -> bool:
        return self.publisher.ready

    async def latest_judgements(self, rollout_id: str) -> jg.RolloutJudging:
        """The judge's latest answers (steps, mirror, watch), from memory or, after a restart, the store."""
        j = self.judging.get(rollout_id)
        if j is None:
            stored = await asyncio.to_thread(self.store.judging, rollout_id)
            j = jg.RolloutJudging.from_dict(stored) if stored else jg.RolloutJudging()
        return j

    async def known_releases(self, service: str) -> list[str] | None:
        return await self.platform.known_releases(service)

    def not_ready(self, r: machine.Rollout) -> Waiting | None:
        """Why the pending rollout's canary is not ready yet, as heard at the last tick (in memory:
        None until this controller has looked, and once the rollout is no longer pending)."""
        return self.observer.waiting.get(r.id) if r.phase == machine.PENDING else None

    async def create_rollout(self, spec_text: str) -> machine.Rollout:
        """A new rollout; refused at once for a service this controller does not run, or when the
        platform knows the service's releases and the canary is not one of them (a typo must not
        reach the loop)."""
        spec = await asyncio.to_thread(load_spec, spec_text, "spec")  # a big spec must not hold the loop
        if spec.service not in self.stable:
            raise Unprocessable(
                f"no service {spec.service!r} here; the services it runs: {', '.join(sorted(self.stable))}",
                code="unknown_service",
            )
        known = await self.known_releases(spec.service)
        if known is not None and spec.canary not in known:
            raise Unprocessable(
                f"{spec.service} has no release {spec.canary!r}; the releases it has: {', '.join(known)}",
                code="unknown_release",
            )
        return await asyncio.to_thread(self.store.create, spec_text, self.clock())

    async def rollouts(self, active_only: bool = False) -> list[machine.Rollout]:
        return await asyncio.to_thread(self.store.list_rollouts, active_only)

    async def rollout(self, rollout_id: str) -> machine.Rollout:
        return await asyncio.to_thread(self.store.get, rollout_id)

    async def decisions(self, rollout_id: str) -> list[machine.Decision]:
        return await asyncio.to_thread(self.store.decisions, rollout_id)

    async def running(self) -> list[Instance]:
        return await self.platform.running()

    # -- the loop ----------------------------------------------------------------------------------
    async def start_stable(self) -> None:
        """Each service's stable release: the last one promoted (the store outlives the process), else
        the one given at start.  A controller restarted after a promotion must not go back."""
        for r in await asyncio.to_thread(self.store.list_rollouts, False):  # oldest first
            if r.phase == machine.SUCCEEDED and r.spec.service in self.stable:
                self.stable[r.spec.service] = r.spec.canary
        for service, release in self.stable.items():
            await self._run(service, release, "stable", until_started=True)  # no table before every stable runs
        await self._publish()

    async def run(self, tick_s: float = 1.0) -> None:
        while True:
            try:
                await self.tick()
            except Exception as exc:  # a bad tick must not end the controller; the next one tries again
                log.error("controller tick failed: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(tick_s)

    async def tick(self) -> None:
        now = self.clock()
        if not await asyncio.to_thread(self.store.acquire_lease, "controller", self.holder, LEASE_TTL_S, now):
            return
        if not self.owed_paid and now >= self.owed_due:  # hooks owed: a killed controller's, or failed
            self.owed_paid, self.owed_due = True, now + OWED_RETRY_S  # a failure below makes it False again
            for owed in await asyncio.to_thread(self.store.after_rollback_owing):
                await self._guarded(owed, self._reprocess(owed), "running the after_rollback hooks it owed")
        try:  # groups first: the member rollouts they start are stepped this tick
            await self.groups.tick(now)
        except Exception as exc:  # groups failing must not stop the rollouts nor the table
            log.error("the groups' tick failed: %s: %s", type(exc).__name__, exc)
        active = await asyncio.to_thread(self.store.list_rollouts, True)
        for rollout in active:
            await self._guarded(rollout, self._apply(rollout), "making the world match")
        await self._publish()
        self.publisher.ready = True
        still_active = []
        for rollout in active:
            new = await self._guarded(rollout, self._step(rollout), "deciding")
            new = rollout if new is None else new
            if new.phase not in machine.TERMINAL:
                still_active.append(new)
        self.active = still_active  # as stored by this tick: /metrics reads it without a query
        self.last_tick = self.clock()

    async def _guarded(self, r: machine.Rollout, work: Any, doing: str) -> Any:
        try:
            return await work
        except (ReleaseWardenError, OSError) as exc:  # the reason in words, once per tick, no traceback
            log.error("%s (%s): %s failed: %s", r.spec.name, r.id[:8], doing, exc)
        except Exception as exc:
            log.error("%s (%s): %s failed: %s: %s", r.spec.name, r.id[:8], doing, type(exc).__name__, exc)
        return None

    async def _step(self, rollout: machine.Rollout) -> machine.Rollout:
        # a person's command and an alert are taken first: whatever fails below, they still act
        command, alert = self.commands.pop(rollout.id, ""), self.alerts.pop(rollout.id, "")
        try:
            seen = await self._observe(rollout)
        except Exception as exc:  # nothing is known this tick: the rollout holds, in words
            why = f"observing failed: {type(exc).__name__}: {exc}"
            log.error("%s (%s): %s", rollout.spec.name, rollout.id[:8], why)
            seen = machine.Observation(metrics_unavailable=why)
        seen = dataclasses.replace(seen, command=command, alert=alert, hold_promotion=rollout.id in self.holds)
        new, made = machine.advance(rollout, seen, self.clock())
        judging = self.judging.get(rollout.id)
        if new is not rollout:
            try:
                await asyncio.to_thread(self.store.save, new, rollout.revision, made)
            except Exception:  # nothing was decided: the command and the alert wait for the next tick
                if command:
                    self.command(rollout.id, command)
                if alert:
                    self.alerts.setdefault(rollout.id, alert)
                raise
            for d in made:
                log.warning(
                    "%s %s -> %s by %s: %s", rollout.spec.name, d.phase_from, d.phase_to, d.decided_by, d.reason
                )
        if judging is not None:
            await asyncio.to_thread(self.store.save_judging, rollout.id, judging.to_dict())
        if new is not rollout:
            await self._after(new)
        return new

    def _names(self, service: str) -> tuple[str, ...]:
        """What the platform runs per release: the service, then its catalog entry's consumers."""
        return (service, *self.catalog.consumers_of(service))

    async def _moment(self, r: machine.Rollout, moment: Moment) -> list[Any]:
        if r.spec.service not in self.catalog:
            return []
        entry = self.catalog[r.spec.service]
        return await run_moment(
            entry,
            moment,
            stable=r.spec.stable,
            canary=r.spec.canary,
            urls=self.upstreams,
            rollout_id=r.id,
            settings=self.settings,
        )

    async def _before_traffic(self, r: machine.Rollout) -> machine.Observation | None:
        """The entry's before_traffic hooks, once the canary is ready and before it gets traffic:
        a failure fails the rollout (on_failure: rollback) or holds it in pending (hold: the hook is
        tried again each tick, until the ready deadline), with the hook's name in the reason."""
        if r.id in self.cleared_for_traffic:
            return None
        failed = failure(await self._moment(r, Moment.BEFORE_TRAFFIC))
        if failed is None:
            self.cleared_for_traffic.add(r.id)
            return None
        if failed.on_failure is OnFailure.ROLLBACK:
            return machine.Observation(platform_error=failed.reason)
        log.warning("%s (%s): held before traffic: %s", r.spec.name, r.id[:8], failed.reason)
        held = NotReady(f"{failed.reason} (on_failure: hold, tried again each tick)")
        self.observer.heard(r, held)
        return machine.Observation(not_ready=held.reason)

    async def _after(self, new: machine.Rollout) -> None:
        if new.phase == machine.ROLLED_BACK:
            await self._reprocess(new)
        await self._apply(new)  # at once, not at the next tick: a rollback's weight goes to zero now
        await self._publish()
        waiting = self.observer.waiting.get(new.id)
        if waiting is not None and (new.phase != machine.PENDING or waiting.since != new.phase_since):
            del self.observer.waiting[new.id]  # ready, or waiting afresh: heard again at its next tick
        if new.phase in machine.TERMINAL:
            self.judging.pop(new.id, None)
            self.platform_errors.pop(new.id, None)
            self.cleared_for_traffic.discard(new.id)
        if new.phase == machine.PROMOTING:
            failed = failure(await self._moment(new, Moment.AFTER_PROMOTION))
            if failed is not None:  # the promotion stands; roll back only where the entry says so
                log.error("%s: %s", new.spec.name, failed.reason)
                if failed.on_failure is OnFailure.ROLLBACK:
                    self.alert(new.id, failed.reason)
        if new.phase == machine.SUCCEEDED:
            for name in self._names(new.spec.service):
                await self.platform.retire_canary(name)

    async def _reprocess(self, r: machine.Rollout) -> None:
        try:
            count = await self.reprocess(r)
            log.warning("%s: after_rollback hooks passed (%s events handed back)", r.spec.name, count)
        except DependencyUnavailable as exc:
            self.owed_paid = False
            log.error(
                "%s: %s; tried again in %.0f s, or run `canary reprocess %s`", r.spec.name, exc, OWED_RETRY_S, r.id[:8]
            )

    def has_after_rollback(self, service: str) -> bool:
        return service in self.catalog and bool(self.catalog[service].hooks_at(Moment.AFTER_ROLLBACK))

    async def reprocess(self, r: machine.Rollout) -> int:
        """The entry's after_rollback hooks (a queue's: what the canary's consumer acknowledged goes
        back to stable's, nothing stays lost); what they handed back, or DependencyUnavailable."""
        stable = self.stable.get(r.spec.service, r.spec.stable)
        now_stable = dataclasses.replace(r, spec=dataclasses.replace(r.spec, stable=stable))
        count = handed_back(await self._moment(now_stable, Moment.AFTER_ROLLBACK))
        if r.after_rollback_owed:
            await asyncio.to_thread(self.store.after_rollback_paid, r.id)
        return count

    async def _run(self, service: str, release: str, track: str, until_started: bool = False) -> bool:
        """Start the service's release (and its consumers'): False while it goes on behind."""
        return await self.starts.run(self._names(service), release, track, until_started)

    def _still_starting(self, service: str, release: str) -> tuple[str, ...]:
        """The service's names (it, its consumers) whose start of ``release`` goes on behind."""
        return self.starts.going_on(self._names(service), release)

    async def _apply(self, r: machine.Rollout) -> None:
        d = machine.desired(r)
        s = r.spec
        await self._run(s.service, d.stable_release, "stable")
        starting = r.phase in (machine.PENDING, machine.MIRRORING, machine.PROGRESSING, machine.PAUSED)
        if d.canary_running and starting and r.id not in self.platform_errors:
            try:
                await self._run(s.service, s.canary, "canary")
            except (ReleaseWardenError, OSError) as exc:  # the rollout fails with the platform's words
                self.platform_errors[r.id] = f"{s.service} {s.canary} cannot start: {exc}"
                raise
        warm = d.old_release_warm and self.platform.warm_old_release
        if warm:
            await self._run(s.service, s.stable, "canary" if d.holdback else "stable")
        self.stable[s.service] = d.stable_release
        running_canary = d.canary_running and (
            (s.service, s.canary) in self.upstreams or (starting and bool(self._still_starting(s.service, s.canary)))
        )
        keep = {d.stable_release} | ({s.canary} if running_canary else set()) | ({s.stable} if warm else set())
        if r.phase == machine.ROLLING_BACK:
            return  # the canary stops only once routers no longer send it traffic (next phase)
        for release in {s.stable, s.canary} - keep:
            for name in self._names(s.service):
                self.starts.cancel(name, release)
                await self.platform.stop(name, release)
                self.upstreams.pop((name, release), None)
                self.publisher.readers.forget(f"consumer/{name}@{release}")

    async def _publish(self) -> None:
        active = await asyncio.to_thread(self.store.list_rollouts, True)
        await self.publisher.publish(self.stable, self.upstreams, active)

    async def _observe(self, r: machine.Rollout) -> machine.Observation:
        s = r.spec
        starting = self._still_starting(s.service, s.canary)
        ready = not starting and await self.platform.healthy(s.service, s.canary)
        if ready and r.phase == machine.PENDING:
            gated = await self._before_traffic(r)
            if gated is not None:
                return gated
        return await self.observer.observe(
            r,
            ready=ready,
            route=self.publisher.table.services.get(s.service),
            confirmation=self.confirmation(s.service),
            platform_error=self.platform_errors.get(r.id, ""),
            starting=starting,
        )
