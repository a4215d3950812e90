"""One WebSocket connection on picows: frame reassembly, JSON decoding, close bookkeeping.

picows was chosen over ``websockets`` by measurement (docs/client.md): it calls
``on_ws_frame`` synchronously from the event loop's read callback, so a received frame
costs one orjson parse and a method call, with no task, queue or future per frame.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

log = logging.getLogger("roomcast.client")

# Close codes of the Roomcast WebSocket contract (docs/protocol.md).
CLOSE_NORMAL = 1000
CLOSE_ABNORMAL = 1006  # no close frame was received (network drop, crash, ping timeout)
CLOSE_TOO_LARGE = 1009
CLOSE_RESTARTING = 1012
CLOSE_UNAUTHENTICATED = 4001
CLOSE_FORBIDDEN = 4003
CLOSE_RATE_LIMITED = 4008
CLOSE_TOO_SLOW = 4009

WS_PATH = "/v1/ws"

FrameHandler = Callable[["Wire", dict[str, Any]], None]


def ws_url(url: str) -> str:
    """The WebSocket URL for a gateway.

    ``http(s)://host[/prefix]`` is an API base URL: the scheme becomes ``ws(s)`` and
    ``/v1/ws`` is appended. A ``ws(s)://`` URL is used as given (``/v1/ws`` when it has
    no path).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        path = parts.path.rstrip("/") + WS_PATH
        return urlunsplit(("ws" if scheme == "http" else "wss", parts.netloc, path, "", ""))
    if scheme in ("ws", "wss"):
        path = parts.path if parts.path not in ("", "/") else WS_PATH
        return urlunsplit((scheme, parts.netloc, path, parts.query, ""))
    raise ValueError(f"not an http(s) or ws(s) URL: {url!r}")


class Wire(WSListener):
    """A picows listener that hands every decoded JSON object to ``handler``."""

    def __init__(self, handler: FrameHandler, url: str) -> None:
        super().__init__()
        self.url = url
        self._handler = handler
        self._fragments: bytearray | None = None
        self.transport: WSTransport | None = None
        loop = asyncio.get_running_loop()
        #: Resolved with the ``user`` of the ``ready`` frame (by the session).
        self.ready: asyncio.Future[dict[str, Any]] = loop.create_future()
        #: Resolved when the TCP connection is gone.
        self.closed: asyncio.Future[None] = loop.create_future()
        self.close_code = CLOSE_ABNORMAL
        self.close_reason = ""
        #: The last ``error`` frame seen before ``ready`` (why auth failed).
        self.auth_error: tuple[str, str] | None = None
        self.paused = False

    # ---------------------------------------------------------------- picows

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type == WSMsgType.TEXT:
            if not frame.fin:
                self._fragments = bytearray(frame.get_payload_as_memoryview())
                return
            raw: bytes | memoryview = frame.get_payload_as_memoryview()
        elif msg_type == WSMsgType.CONTINUATION:
            if self._fragments is None:
                return
            self._fragments += frame.get_payload_as_memoryview()
            if not frame.fin:
                return
            raw, self._fragments = bytes(self._fragments), None
        elif msg_type == WSMsgType.CLOSE:
            self.close_code = int(frame.get_close_code().value)
            self.close_reason = frame.get_close_reason()
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        else:
            return  # binary frames are not part of the protocol; pings are auto-answered
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            log.warning("dropped a WebSocket frame that is not JSON")
            return
        if isinstance(data, dict):
            self._handler(self, data)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        """The socket buffer is full; frames keep queueing in the transport."""

    def resume_writing(self) -> None:
        """The socket buffer drained."""

    # ---------------------------------------------------------------- ours

    def send(self, payload: bytes) -> bool:
        """Queue a text frame; False when the connection is closing or gone."""
        transport = self.transport
        if transport is None or transport.is_disconnected or transport.is_close_frame_sent:
            return False
        transport.send(WSMsgType.TEXT, payload)
        return True

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Start a clean close (close frame, then TCP close)."""
        transport = self.transport
        if transport is None or transport.is_disconnected:
            return
        if not transport.is_close_frame_sent:
            transport.send_close(WSCloseCode(code), reason.encode())
        transport.disconnect()

    def set_reading(self, enabled: bool) -> None:
        """Back-pressure: stop (or resume) reading from the socket."""
        transport = self.transport
        if transport is None or transport.is_disconnected or self.paused is not enabled:
            return  # already in the requested state
        self.paused = not enabled
        underlying = transport.underlying_transport
        if enabled:
            underlying.resume_reading()
        else:
            underlying.pause_reading()
