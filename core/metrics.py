"""Prometheus metrics: one registry per app, and an ASGI middleware that counts every request.

Counts are labelled by service, release, route template (``/images/{image_id}``, never the raw
path, so that label cardinality stays bounded), method and status; latency goes to a histogram
with the same labels but status.  Apps add their own metrics to ``AppMetrics.registry``.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class AppMetrics:
    def __init__(self, service: str, release: str) -> None:
        self.service = service
        self.release = release
        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series are noise
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests answered, by route template and status.",
            ["service", "release", "route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time from request start to the last byte of the answer.",
            ["service", "release", "route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def counter(self, name: str, doc: str, labels: list[str]) -> Counter:
        """A counter whose first two labels are service and release, already filled."""
        return Counter(name, doc, ["service", "release", *labels], registry=self.registry)

    def gauge(self, name: str, doc: str) -> Gauge:
        """A gauge for this service and release (labels filled), e.g. to ``set_function`` on."""
        gauge = Gauge(name, doc, ["service", "release"], registry=self.registry)
        return gauge.labels(self.service, self.release)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class RequestMetricsMiddleware:
    """Pure ASGI middleware (no Request objects on the hot path)."""

    def __init__(self, app: ASGIApp, metrics: AppMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = _route_template(scope)
            m = self.metrics
            method = scope["method"]
            m.requests.labels(m.service, m.release, route, method, str(status)).inc()
            m.latency.labels(m.service, m.release, route, method).observe(time.perf_counter() - start)


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
