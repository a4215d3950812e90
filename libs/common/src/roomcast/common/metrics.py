"""Prometheus metrics shared by the HTTP services.

Names follow ``roomcast_<service>_<what>_<unit>``; labels are bounded: the route
*template* (``/v1/rooms/{room_id}``), never a concrete id.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Buckets from 1 ms to 10 s: REST calls sit around a few ms; bcrypt logins around
# 200-300 ms; anything past 10 s is a timeout anyway.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def render_metrics() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST


class HttpMetrics:
    """HTTP request metrics of one service. Use :meth:`for_service`: Prometheus metrics
    are process-global, so building a second app in one process must reuse them."""

    _instances: dict[str, HttpMetrics] = {}

    @classmethod
    def for_service(cls, service: str) -> HttpMetrics:
        if service not in cls._instances:
            cls._instances[service] = cls(service)
        return cls._instances[service]

    def __init__(self, service: str) -> None:
        self.requests = Counter(
            f"roomcast_{service}_http_requests_total",
            "HTTP requests served, by method, route template and status code.",
            ["method", "route", "status"],
        )
        self.latency = Histogram(
            f"roomcast_{service}_http_request_duration_seconds",
            "HTTP request latency, by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
        )


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class HttpMetricsMiddleware:
    """Pure ASGI middleware: counts and times every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        recorded = False

        def record() -> None:
            nonlocal recorded
            recorded = True
            route = _route_template(scope)
            method = scope.get("method", "GET")
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - start)

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # Counted before the last byte leaves, so a client that reads /metrics
                # after its response always finds that response counted.
                record()
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if not recorded:  # the app failed or the client left before the end
                record()
