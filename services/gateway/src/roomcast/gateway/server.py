"""Wiring, start and drain of one gateway process.

Start: the HTTP app and the port multiplexer come up first (/healthz answers at once,
/readyz says 503), then NATS is connected, the CHAT stream ensured, auth's signing
keys fetched, the event subscriptions made and the revoked sessions loaded in the
background, retrying until they succeed; only then is the gateway ready and WebSocket
handshakes accepted.

Drain (SIGTERM), within ``shutdown_grace_seconds``:
1. not ready (/readyz 503, new handshakes 503, new sends refused with
   ``gateway_restarting``), stop accepting connections;
2. wait for publishes in flight to get their JetStream acks (and the clients their
   ``ack`` frames), bounded;
3. close every socket with 1012 (clients reconnect elsewhere and resume with since);
4. finish HTTP requests in flight, close the REST edge's upstream client, run the
   app's lifespan shutdown;
5. drain NATS, close the rooms channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import uvicorn
from nats.aio.client import Client as NatsClient
from uvicorn.lifespan.on import LifespanOn

from roomcast.common.chatstream import ensure_chat_stream
from roomcast.common.errors import DependencyUnavailable
from roomcast.common.membership import MembershipCache, RoomsClient
from roomcast.common.natsconn import connect_nats
from roomcast.common.retry import Backoff, retry_until_ready
from roomcast.common.revocations import RevocationWatcher
from roomcast.common.subjects import STREAM_NAME
from roomcast.common.verifier import build_verifier
from roomcast.gateway import metrics
from roomcast.gateway.edge.handshake import Handshakes
from roomcast.gateway.edge.http_app import create_http_app
from roomcast.gateway.edge.multiplexer import PortMultiplexer
from roomcast.gateway.errors import CloseCode, rooms_errors
from roomcast.gateway.live import Live
from roomcast.gateway.realtime.drain import Drain
from roomcast.gateway.realtime.recipients import RecipientCache
from roomcast.gateway.realtime.socketcaps import SocketCaps
from roomcast.gateway.realtime.sockets import SocketRegistry
from roomcast.gateway.realtime.stream import ChatStream
from roomcast.gateway.rest.api import install_rest
from roomcast.gateway.rest.deps import RestDeps
from roomcast.gateway.revocations import revoked_sessions
from roomcast.gateway.settings import Settings

log = logging.getLogger(__name__)

# Pause between attempts to reach NATS / set up the stream at start (the shared retry
# helper, fixed): a gateway is not ready until both succeed, so NATS coming up is
# noticed within half a second; an attempt and a log line per 0.5 s cost nothing.
STARTUP_RETRY_SECONDS = 0.5
# Share of the grace period spent waiting for publishes in flight; the rest closes
# sockets, HTTP and NATS.
PUBLISH_WAIT_SHARE = 0.4
# How long close frames may take to flush during a drain before the process moves on.
SOCKET_CLOSE_WAIT_SECONDS = 1.0
# Presence's offline deltas and goodbye are a few in-memory publishes: well under this.
PRESENCE_CLOSE_SECONDS = 0.5
# Keep-alive of REST connections: above typical balancer idle timeouts' lower end.
HTTP_KEEP_ALIVE_SECONDS = 30


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # auth's JWKS through the shared fetcher, kept through an auth outage; revoked
        # sessions from the shared watcher, which the hub attaches to NATS.
        self.verifier = build_verifier(settings, RevocationWatcher())
        self.rooms = RoomsClient(
            settings.rooms_target, timeout=settings.rooms_timeout_seconds, errors=rooms_errors()
        )
        # Every send looks membership up: the counter's children are bound once, not
        # found by labels() (a lock and a hash of the label values) per lookup.
        lookups = {
            o: metrics.MEMBERSHIP_LOOKUPS.labels(o) for o in ("hit", "stale", "miss", "overtaken")
        }
        self.membership = MembershipCache(
            self.rooms,
            ttl=settings.membership_cache_ttl_seconds,
            negative_ttl=settings.membership_negative_ttl_seconds,
            max_entries=settings.membership_cache_size,
            # A member answer past its TTL is served until the revalidation sweep, due
            # within one interval, has had the rooms timeout to refresh it: a send then
            # never waits on rooms behind the sweep's own calls (roomcache.py), and a
            # lost kick ends sends within the same bound as subscriptions.
            member_grace=settings.membership_revalidate_interval_seconds
            + settings.rooms_timeout_seconds,
            observe=lambda outcome: (
                lookups.get(outcome) or metrics.MEMBERSHIP_LOOKUPS.labels(outcome)
            ).inc(),
        )
        # Private messages' recipients (recipients.py), on the same rooms channel.
        self.recipients = RecipientCache(
            self.rooms,
            ttl=settings.membership_cache_ttl_seconds,
            negative_ttl=settings.membership_negative_ttl_seconds,
            max_entries=settings.membership_cache_size,
        )
        self.sockets = SocketRegistry(
            SocketCaps(
                per_address=settings.max_unauthenticated_sockets_per_address,
                per_user=settings.max_sockets_per_user,
                trusted_proxies=settings.trusted_proxies,
            )
        )
        self.drain = Drain()
        # Sessions revoked while their tokens are still valid (revocations.py): the
        # shared watcher, closing a revoked session's sockets.
        self.revoked = revoked_sessions(
            self.verifier,
            lambda user_id, session_id: self.sockets.close_sessions(
                user_id, session_id, CloseCode.UNAUTHENTICATED, "session revoked"
            ),
        )
        self.handshakes = Handshakes(settings, self.sockets, self.drain)
        # The NATS side (live.py): built once NATS is up and the stream exists.
        self.live: Live | None = None
        self.app = create_http_app(self.readiness)
        # The client-facing REST API (rest_*.py), on the rooms channel the sockets use.
        self.rest = RestDeps.create(
            settings, verifier=self.verifier, rooms_channel=self.rooms.channel
        )
        install_rest(self.app, self.rest)
        self.http_config = uvicorn.Config(
            self.app,
            host=settings.host,
            port=settings.port,
            loop="none",
            lifespan="on",
            # WebSockets are picows' (multiplexer.py); an upgrade request on a kept-alive
            # REST connection is plain HTTP here (GET /v1/ws answers 426).
            ws="none",
            log_config=None,
            access_log=False,
            timeout_keep_alive=HTTP_KEEP_ALIVE_SECONDS,
        )
        self.http_config.load()
        self.lifespan = LifespanOn(self.http_config)
        self.mux = PortMultiplexer(
            listener_factory=self.handshakes,
            http_config=self.http_config,
            max_head_bytes=settings.max_request_head_bytes,
            head_timeout=settings.request_head_timeout_seconds,
            max_frame_bytes=settings.max_frame_bytes,
            heartbeat_idle=settings.heartbeat_idle_seconds,
            heartbeat_timeout=settings.heartbeat_timeout_seconds,
        )
        self.nc: NatsClient | None = None
        self._connect_task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self.mux.port

    async def readiness(self) -> None:
        """For /readyz: raise when this replica should not get traffic."""
        if self.drain.draining:
            raise RuntimeError("draining")
        if self.live is None:
            raise RuntimeError("starting: NATS or the stream not ready")
        if not self.live.nc.is_connected:
            raise RuntimeError("NATS disconnected")
        if self.revoked.required and not self.revoked.loaded:
            raise RuntimeError("starting: revoked sessions not loaded")

    async def start(self) -> None:
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            raise RuntimeError("application startup failed")
        await self.mux.start(self.settings.host, self.settings.port)
        self._connect_task = asyncio.create_task(self._connect(), name="gateway-connect")

    async def _connect(self) -> None:
        settings = self.settings

        async def connect() -> NatsClient:
            return await connect_nats(
                settings.nats_url,
                name=f"roomcast-{settings.instance_name}",
                on_reconnected=self._on_reconnected,
                # Each failed attempt comes back to the loop below (logged), instead of
                # nats-py retrying the first connection out of sight.
                fail_fast=True,
            )

        async def ensure_stream() -> None:
            if settings.stream_manage:
                await ensure_chat_stream(stream.js, settings, update=True)
            else:
                await stream.js.stream_info(STREAM_NAME)

        # No stop event: retried until it succeeds, or cancelled by stop().
        nc = await retry_until_ready(
            "NATS",
            connect,
            errors=(Exception,),
            backoff=Backoff.fixed(STARTUP_RETRY_SECONDS),
            log=log,
        )
        assert nc is not None
        self.nc = nc
        stream = ChatStream(nc, settings)
        await retry_until_ready(
            "the CHAT stream",
            ensure_stream,
            errors=(Exception,),
            backoff=Backoff.fixed(STARTUP_RETRY_SECONDS),
            log=log,
        )
        # The signing keys before readiness: a restarted gateway takes a reconnect burst
        # of thousands of sockets at once, and each would otherwise wait on the first
        # fetch, which under that load took longer than the auth deadline.
        await retry_until_ready(
            "auth's signing keys",
            self.verifier.prefetch,
            errors=(DependencyUnavailable,),
            backoff=Backoff.fixed(STARTUP_RETRY_SECONDS),
            log=log,
        )
        self.live = await Live.start(
            nc,
            stream,
            settings=settings,
            verifier=self.verifier,
            membership=self.membership,
            recipients=self.recipients,
            sockets=self.sockets,
            drain=self.drain,
            revoked=self.revoked,
        )
        if self.revoked.required:
            # Handshakes only once the revoked sessions are known (the watch loads them
            # on this NATS connection): /readyz says not ready until then, but a
            # reconnect burst that never asks /readyz would have every token refused
            # "cannot verify tokens right now" in the meantime.
            await self.revoked.wait_loaded()
        self.handshakes.serve(self.live.services)
        log.info("gateway ready", extra={"port": self.port})

    async def _on_reconnected(self) -> None:
        metrics.NATS_RECONNECTS.inc()
        # Events and live messages published while disconnected are lost (core NATS).
        if self.live is not None:
            self.live.on_reconnected()

    async def stop(self) -> None:
        """Drain and stop (see the module docstring for the order)."""
        loop = asyncio.get_running_loop()
        grace = self.settings.shutdown_grace_seconds
        deadline = loop.time() + grace

        def remaining(cap: float) -> float:
            return max(0.05, min(cap, deadline - loop.time()))

        self.drain.start()
        self.mux.stop_accepting()
        if not await self.drain.wait_publishes(remaining(grace * PUBLISH_WAIT_SHARE)):
            log.warning("publishes still in flight at the drain deadline")
        await self.sockets.close_all_and_wait(
            CloseCode.RESTARTING, "gateway restarting", remaining(SOCKET_CLOSE_WAIT_SECONDS)
        )
        live = self.live
        if live is not None:
            # After the sockets: their offline deltas go out, then the goodbye.
            await live.presence.close(remaining(PRESENCE_CLOSE_SECONDS))
        await self.mux.shutdown_http(remaining(grace / 4))
        with contextlib.suppress(Exception):
            await self.rest.aclose()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.lifespan.shutdown(), remaining(1.0))
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
            with contextlib.suppress(BaseException):
                await self._connect_task
        if live is not None:
            await live.close()
        if self.nc is not None and not self.nc.is_closed:
            try:
                await asyncio.wait_for(self.nc.drain(), remaining(grace))
            except Exception as exc:
                log.warning("NATS drain incomplete", extra={"error": repr(exc)})
                with contextlib.suppress(Exception):
                    await self.nc.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.rooms.close(), remaining(1.0))
        with contextlib.suppress(Exception):
            await self.verifier.close()
        if self.mux.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.mux.server.wait_closed(), remaining(1.0))
