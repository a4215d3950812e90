"""The WebSocket handshake policy: picows' router for ``GET /v1/ws``.

A handshake is refused with 503 while the gateway is starting (NATS not up yet) or
draining, or when it holds ``max_connections`` sockets (the balancer or the client
tries another replica); with 403 when a browser's ``Origin`` is outside
``allowed_origins``. An accepted one gets a :class:`Connection` wired to the services
built once NATS is up.
"""

from __future__ import annotations

from picows import WSUpgradeRequest, WSUpgradeResponse, WSUpgradeResponseWithListener

from roomcast.gateway import metrics
from roomcast.gateway.realtime.connection import Connection, SocketServices
from roomcast.gateway.realtime.drain import Drain
from roomcast.gateway.realtime.sockets import SocketRegistry
from roomcast.gateway.settings import Settings


def _refuse(status: int, code: str, message: str) -> WSUpgradeResponseWithListener:
    body = b'{"error":{"code":"%s","message":"%s"}}' % (code.encode(), message.encode())
    response = WSUpgradeResponse.create_error_response(
        status, body, {"Content-Type": "application/json", "Connection": "close"}
    )
    return WSUpgradeResponseWithListener(response, None)


class Handshakes:
    def __init__(self, settings: Settings, sockets: SocketRegistry, drain: Drain) -> None:
        self.max_connections = settings.max_connections
        self.origins = settings.origins
        self.sockets = sockets
        self.drain = drain
        self._services: SocketServices | None = None

    def serve(self, services: SocketServices) -> None:
        """NATS is up and the services are built: accept sockets from now on."""
        self._services = services

    def __call__(self, request: WSUpgradeRequest) -> Connection | WSUpgradeResponseWithListener:
        """A listener for the socket, or the refusal."""
        services = self._services
        if self.drain.draining or services is None:
            metrics.HANDSHAKES_REJECTED.labels("not_ready").inc()
            return _refuse(503, "unavailable", "gateway not accepting connections, retry")
        if len(self.sockets) >= self.max_connections:
            metrics.HANDSHAKES_REJECTED.labels("capacity").inc()
            return _refuse(503, "unavailable", "gateway at capacity, retry")
        if self.origins is not None:
            origin = request.headers.get("Origin")
            if origin is not None and origin.rstrip("/").lower() not in self.origins:
                metrics.HANDSHAKES_REJECTED.labels("origin").inc()
                return _refuse(403, "forbidden", "origin not allowed")
        return Connection(services)
