"""Roomcast client SDK: REST (``RoomcastHttp``) and a resumable WebSocket session
(``RoomcastSocket`` / ``connect``) with exactly-once sends and gap detection.

    async with RoomcastHttp("http://127.0.0.1:8080") as http:
        await http.login("alice", "secret")
        room = await http.create_room("lobby")
        sock = await connect(["http://127.0.0.1:8080", "http://127.0.0.1:8090"],
                             token=http.access_token_provider)
        await sock.subscribe(room["id"])
        ack = await sock.send(room["id"], "hello")
        async for item in sock:
            ...
"""

from .errors import (
    ApiError,
    BadRequest,
    ClientError,
    Conflict,
    ConnectionClosed,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RequestRejected,
    SendUnconfirmed,
    Unauthorized,
    Unavailable,
    Unreachable,
)
from .http import RoomcastHttp, jwt_expiry
from .models import (
    Ack,
    AuditEntry,
    AuditPage,
    Ban,
    Change,
    ErrorFrame,
    Event,
    Gap,
    HistoryPage,
    Item,
    Member,
    Message,
    Mute,
    Presence,
    ReadReceipt,
    Room,
    RoomPage,
    Sender,
    SocketStats,
    Subscribed,
    TokenPair,
    Typing,
    Unsubscribed,
    User,
)
from .session import FATAL_CLOSE_CODES, RoomcastSocket, TokenSource, connect
from .wire import ws_url

__all__ = [
    "FATAL_CLOSE_CODES",
    "Ack",
    "ApiError",
    "AuditEntry",
    "AuditPage",
    "BadRequest",
    "Ban",
    "Change",
    "ClientError",
    "Conflict",
    "ConnectionClosed",
    "ErrorFrame",
    "Event",
    "Forbidden",
    "Gap",
    "HistoryPage",
    "Item",
    "Member",
    "Message",
    "Mute",
    "NotFound",
    "PayloadTooLarge",
    "Presence",
    "RateLimited",
    "ReadReceipt",
    "RequestRejected",
    "Room",
    "RoomPage",
    "RoomcastHttp",
    "RoomcastSocket",
    "SendUnconfirmed",
    "Sender",
    "SocketStats",
    "Subscribed",
    "TokenPair",
    "TokenSource",
    "Typing",
    "Unauthorized",
    "Unavailable",
    "Unreachable",
    "Unsubscribed",
    "User",
    "connect",
    "jwt_expiry",
    "ws_url",
]
