"""The controller's own Prometheus metrics: its rollouts (phase, how long in it, how long held) and
its loop's last tick, read from the controller when scraped.  The ``RolloutStuck``,
``RolloutHeld`` and ``CanaryControllerDown`` alerts (manifests/prometheus/rules) read them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from canary.controller.engine import Controller


class RolloutCollector(Collector):
    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    def collect(self) -> Iterator[Any]:
        c = self.controller
        now = c.clock()
        labels = ["rollout", "service", "stable", "canary", "phase"]
        active = GaugeMetricFamily("canary_rollout_active", "1 per active rollout, with its phase.", labels=labels)
        in_phase = GaugeMetricFamily(
            "canary_rollout_phase_seconds", "Seconds the rollout has been in its phase.", labels=labels
        )
        held = GaugeMetricFamily(
            "canary_rollout_held_seconds",
            "Seconds the rollout has been held because its metrics did not answer or a reader of the route"
            " table did not confirm it (0: not held).",
            labels=labels,
        )
        for r in c.active:
            values = [r.id, r.spec.service, r.spec.stable, r.spec.canary, r.phase]
            active.add_metric(values, 1)
            in_phase.add_metric(values, max(0.0, now - r.phase_since))
            held.add_metric(values, max(0.0, now - r.held_since) if r.held_since else 0.0)
        yield active
        yield in_phase
        yield held
        yield GaugeMetricFamily(
            "canary_controller_last_tick_timestamp_seconds",
            "When the controller's loop last went through every active rollout (it holds the lease).",
            value=c.last_tick,
        )
