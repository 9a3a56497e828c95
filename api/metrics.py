"""The API's Prometheus metrics, and the ASGI middleware that times every request.

Requests are labelled by route template (``/api/v1/devices/{device_id}/latest``),
never by the raw path, so a scan of made-up ids adds no series.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ApiMetrics:
    """Every metric the API exports, on a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gridwatch_api_requests",
            "HTTP requests answered, by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gridwatch_api_request_seconds",
            "time to answer, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.commands = Counter(
            "gridwatch_api_commands",
            "command status changes, by status",
            ["status"],
            registry=self.registry,
        )
        self.live_streams = Gauge(
            "gridwatch_api_live_streams", "open live streams", registry=self.registry
        )
        self.broker_up = Gauge(
            "gridwatch_api_broker_up",
            "1 while the broker link is connected",
            registry=self.registry,
        )


class MetricsMiddleware:
    """Counts and times every HTTP request (pure ASGI: no per-request task or copy)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, routes: Mapping[Any, str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes  # endpoint function → its path template

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            # The router left the matched endpoint in the scope.
            route = self.routes.get(scope.get("endpoint"), "unmatched")
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
