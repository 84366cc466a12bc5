"""Metric sources behind one Protocol (``base.MetricProvider``): builtin (the router's own counters)
and Prometheus; :func:`make_provider` picks one from the settings."""

from __future__ import annotations

from collections.abc import Callable

from canary.providers.base import MetricProvider
from core.settings import Settings


def make_provider(settings: Settings, router_url: str, processor_url: Callable[[str], str | None]) -> MetricProvider:
    if settings.prometheus_url:
        from canary.providers.prometheus import PrometheusProvider  # its client only where it is used

        return PrometheusProvider(
            settings.prometheus_url,
            scrape_interval_s=settings.prometheus_scrape_interval_s,
            delay_s=settings.prometheus_delay_s,
            timeout_s=settings.prometheus_timeout_s,
        )
    from canary.providers.builtin import BuiltinProvider

    return BuiltinProvider(router_url, processor_url)
