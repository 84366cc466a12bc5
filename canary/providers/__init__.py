"""Metric sources behind one Protocol (``base.MetricProvider``): builtin (the router's own counters)
and Prometheus; :func:`make_provider` picks one from the settings.

``conservation`` (per service, its queue consumer's counters: catalog data) is what a
``conservation`` metric reads; ``consumer_url(consumer, release)`` is where the builtin provider
finds that consumer's process of a release.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from canary.providers.base import ConservationCounters, MetricProvider
from core.settings import Settings


def make_provider(
    settings: Settings,
    router_url: str,
    consumer_url: Callable[[str, str], str | None],
    conservation: Mapping[str, ConservationCounters],
) -> MetricProvider:
    if settings.prometheus_url:
        from canary.providers.prometheus import PrometheusProvider  # its client only where it is used

        return PrometheusProvider(
            settings.prometheus_url,
            scrape_interval_s=settings.prometheus_scrape_interval_s,
            delay_s=settings.prometheus_delay_s,
            timeout_s=settings.prometheus_timeout_s,
            conservation=conservation,
        )
    from canary.providers.builtin import BuiltinProvider

    return BuiltinProvider(router_url, consumer_url, conservation)
