"""One port for REST and the WebSocket: sniff the first request head, then hand off.

picows is the fastest WebSocket stack measured here but cannot serve request bodies;
the REST API needs a full HTTP server (uvicorn + FastAPI). The contract puts both on the
gateway port, so every new connection starts with :class:`Sniffer`, a tiny protocol
that buffers only the first request head:

- ``GET /v1/ws`` with ``Upgrade: websocket`` → a picows server protocol built exactly as
  ``picows.ws_create_server`` builds one, fed the buffered bytes;
- anything else → uvicorn's HTTP protocol (``H11Protocol`` or ``HttpToolsProtocol``,
  whichever uvicorn picks) bound to the FastAPI app, fed the buffered bytes. Keep-alive
  requests after the first stay with uvicorn.

After the hand-off the transport talks to the chosen protocol directly: the hot path has
no extra hop. A head larger than ``max_head_bytes`` gets 431, a malformed one 400, and a
connection that does not finish its head within ``head_timeout`` is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

import uvicorn
from picows import WSAutoPingStrategy, WSListener, WSUpgradeRequest, WSUpgradeResponseWithListener
from picows.picows import WSProtocol  # type: ignore[attr-defined]
from uvicorn.server import ServerState

from roomcast.gateway import metrics

log = logging.getLogger(__name__)

WS_PATH = b"/v1/ws"
# picows' initial per-socket read buffer: client frames are small (a chat message is
# < 16 KB); the buffer grows by itself for larger ones. picows' default (16 KiB) would
# cost 320 MB at 20k sockets.
WS_READ_BUFFER_BYTES = 4096
# Connections the kernel queues before accept(): asyncio's default of 100 overflowed
# tens of thousands of times when a restarted gateway took its sockets' reconnect burst
# (bench/idle_50k.py); 4096 is Linux's default net.core.somaxconn, which caps it anyway.
LISTEN_BACKLOG = 4096
# Connections still sending their first request head at once; beyond this new ones are
# dropped at accept (each holds a buffer and a timer for up to the head timeout, so a
# slow-loris flood must not grow without bound). Far above any legitimate accept burst.
MAX_PENDING_HEADS = 4096

_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: 85\r\n\r\n"
    b'{"error":{"code":"headers_too_large","message":"request head exceeds the size limit"}}'
)
_400 = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: 68\r\n\r\n"
    b'{"error":{"code":"invalid_request","message":"malformed HTTP request"}}'
)

ListenerFactory = Callable[[WSUpgradeRequest], WSListener | WSUpgradeResponseWithListener | None]


def is_websocket_upgrade(head: bytes) -> bool | None:
    """True for ``GET /v1/ws`` asking for a WebSocket upgrade, False for other requests,
    None when the request line is malformed."""
    line_end = head.find(b"\r\n")
    request_line = head[: line_end if line_end >= 0 else len(head)]
    parts = request_line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return None
    method, target = parts[0], parts[1]
    if method != b"GET" or target.split(b"?", 1)[0] != WS_PATH:
        return False
    headers = head[line_end + 2 :] if line_end >= 0 else b""
    for line in headers.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"upgrade":
            return b"websocket" in value.lower()
    return False


class PortMultiplexer:
    """Owns the listening socket and the two protocol families behind it."""

    def __init__(
        self,
        *,
        listener_factory: ListenerFactory,
        http_config: uvicorn.Config,
        max_head_bytes: int,
        head_timeout: float,
        max_frame_bytes: int,
        heartbeat_idle: float,
        heartbeat_timeout: float,
    ) -> None:
        self.listener_factory = listener_factory
        self.http_config = http_config
        if not http_config.loaded:
            http_config.load()
        self.http_state = ServerState()
        self.app_state: dict[str, Any] = {}
        self.max_head_bytes = max_head_bytes
        self.head_timeout = head_timeout
        self.max_frame_bytes = max_frame_bytes
        self.heartbeat_idle = heartbeat_idle
        self.heartbeat_timeout = min(heartbeat_timeout, heartbeat_idle)
        self.ws_logger = logging.getLogger("picows.server")
        self.server: asyncio.Server | None = None
        self.sniffing: set[Sniffer] = set()

    async def start(self, host: str, port: int) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: Sniffer(self), host=host, port=port, backlog=LISTEN_BACKLOG
        )
        return self.server

    @property
    def port(self) -> int:
        assert self.server is not None
        assert self.server.sockets
        return int(self.server.sockets[0].getsockname()[1])

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()
        for sniffer in list(self.sniffing):
            sniffer.abort()

    def ws_protocol(self) -> WSProtocol:
        """A picows server-side protocol, built as picows.ws_create_server builds one."""
        return WSProtocol(
            None,  # host+port: client side only
            None,  # ws path: client side only
            False,  # is_client_side
            self.listener_factory,
            self.ws_logger,
            True,  # disconnect_on_exception (our listener catches its own errors anyway)
            self.head_timeout,  # websocket_handshake_timeout (the head is already here)
            True,  # enable_auto_ping
            self.heartbeat_idle,
            self.heartbeat_timeout,
            WSAutoPingStrategy.PING_WHEN_IDLE,
            True,  # enable_auto_pong
            self.max_frame_bytes,
            None,  # extra_headers: client side only
            WS_READ_BUFFER_BYTES,
        )

    def http_protocol(self) -> asyncio.Protocol:
        protocol: asyncio.Protocol = self.http_config.http_protocol_class(  # type: ignore[call-arg]
            config=self.http_config,
            server_state=self.http_state,
            app_state=self.app_state,
            _loop=asyncio.get_running_loop(),
        )
        return protocol

    async def shutdown_http(self, within: float) -> None:
        """Close idle keep-alive connections; let requests in flight finish (bounded)."""
        for connection in list(self.http_state.connections):
            connection.shutdown()  # idle ones close now, busy ones after their response
        tasks = list(self.http_state.tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=within)
            for task in pending:
                task.cancel()


class Sniffer(asyncio.Protocol):
    """Reads one request head, then hands the connection to picows or uvicorn."""

    def __init__(self, mux: PortMultiplexer) -> None:
        self.mux = mux
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport implements asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        if len(self.mux.sniffing) >= MAX_PENDING_HEADS:
            metrics.HANDSHAKES_REJECTED.labels("pending_heads").inc()
            self.transport.abort()
            return
        self.mux.sniffing.add(self)
        self.timer = asyncio.get_running_loop().call_later(self.mux.head_timeout, self.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        self._done()

    def eof_received(self) -> bool | None:
        return False  # close

    def abort(self) -> None:
        self._done()
        if self.transport is not None:
            self.transport.abort()

    def _done(self) -> None:
        self.mux.sniffing.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _refuse(self, response: bytes, reason: str) -> None:
        metrics.HANDSHAKES_REJECTED.labels(reason).inc()
        self._done()
        assert self.transport is not None
        self.transport.write(response)
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        start = max(0, len(buffer) - 3)
        buffer += data
        end = buffer.find(b"\r\n\r\n", start)
        if end < 0:
            if len(buffer) > self.mux.max_head_bytes:
                self._refuse(_431, "head")
            return
        if end + 4 > self.mux.max_head_bytes:
            self._refuse(_431, "head")
            return
        upgrade = is_websocket_upgrade(bytes(buffer[:end]))
        if upgrade is None:
            self._refuse(_400, "head")
            return
        self._done()
        transport = self.transport
        assert transport is not None
        payload = bytes(buffer)
        self.buffer = bytearray()
        if upgrade:
            self._to_websocket(transport, payload)
        else:
            protocol = self.mux.http_protocol()
            transport.set_protocol(protocol)
            protocol.connection_made(transport)
            protocol.data_received(payload)

    def _to_websocket(self, transport: asyncio.Transport, payload: bytes) -> None:
        protocol = self.mux.ws_protocol()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        # WSProtocol is a BufferedProtocol: copy the head (and anything after it) into
        # its read buffer exactly as the event loop would.
        view = memoryview(payload)
        while view:
            target = protocol.get_buffer(len(view))
            n = min(len(target), len(view))
            target[:n] = view[:n]
            protocol.buffer_updated(n)
            view = view[n:]
            if transport.is_closing():
                return
