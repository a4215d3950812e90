"""Frames the load tool sends, built as bytes without a JSON encoder on the hot path,
and the timestamp it hides in every message body.

A message's content starts with its *scheduled* send time in microseconds since the
epoch, zero-padded to 16 digits, then a space and padding up to the configured size:
receivers read latency straight from the body, from any process or host (with hosts,
latency is only as good as their clock sync).
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit, urlunsplit

import orjson

STAMP_DIGITS = 16
WS_PATH = "/v1/ws"


def now_us() -> int:
    return time.time_ns() // 1000


def content(sched_us: int, size: int, mention: str | None = None) -> str:
    """``size`` characters (at least the stamp and one padding character); a mention
    (``@username``, after the stamp) takes the place of padding."""
    tag = f"@{mention} " if mention else ""
    return f"{sched_us:0{STAMP_DIGITS}d} {tag}" + "x" * max(1, size - STAMP_DIGITS - 1 - len(tag))


def stamp_of(body_content: str) -> int:
    return int(body_content[:STAMP_DIGITS])


def auth_frame(token: str) -> bytes:
    return orjson.dumps({"type": "auth", "token": token})


def subscribe_frame(room: str, since: int | None) -> bytes:
    if since is None:
        return b'{"type":"subscribe","room":"%s"}' % room.encode()
    return b'{"type":"subscribe","room":"%s","since":%d}' % (room.encode(), since)


def typing_frame(room: str) -> bytes:
    return b'{"type":"typing","room":"%s"}' % room.encode()


def read_frame(room: str, seq: int) -> bytes:
    return b'{"type":"read","room":"%s","seq":%d}' % (room.encode(), seq)


def send_frame(
    room: str,
    client_id: str,
    sched_us: int,
    size: int,
    *,
    reply_to: int | None = None,
    mention: str | None = None,
) -> bytes:
    """The same padding string is reused by :func:`content`; room, client_id and
    usernames are plain ASCII (24 hex characters, ``[A-Za-z0-9_-]``) and need no
    escaping. ``reply_to``: the seq of a message of the room this one answers."""
    thread = b',"reply_to":%d' % reply_to if reply_to else b""
    return (
        b'{"type":"send","room":"%s","client_id":"%s"%s,"body":{"type":"text","content":"%s"}}'
        % (room.encode(), client_id.encode(), thread, content(sched_us, size, mention).encode())
    )


def file_frame(room: str, client_id: str, file_id: str, sched_us: int, size: int) -> bytes:
    """A ``file`` send sharing an uploaded file; its caption carries the stamp (and the
    padding) a text message's content does, so receivers time it the same way."""
    return orjson.dumps(
        {
            "type": "send",
            "room": room,
            "client_id": client_id,
            "body": {"type": "file", "file_id": file_id, "caption": content(sched_us, size)},
        }
    )


def react_frame(room: str, client_id: str, seq: int, emoji: str) -> bytes:
    return orjson.dumps(
        {"type": "react", "room": room, "seq": seq, "emoji": emoji, "client_id": client_id}
    )


def raw_message_frame(seq: int, prev: int, sched_us: int, size: int) -> bytes:
    """A message-shaped frame for the raw picows baseline server, which broadcasts what
    it receives unchanged: the receivers do the same work as with a gateway."""
    return (
        b'{"type":"message","seq":%d,"prev":%d,"id":"%d","room":"raw",'
        b'"sender":{"id":"raw","username":"raw","display_name":null,"avatar_url":null},'
        b'"body":{"type":"text","content":"%s"},"sent_at":"","kind":"message"}'
        % (seq, prev, seq, content(sched_us, size).encode())
    )


def ws_url(base: str, *, raw: bool = False) -> str:
    """``http://host:port`` (a gateway base URL) -> ``ws://host:port/v1/ws``; a ws(s)://
    URL with a path is kept as given."""
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"not an http(s) or ws(s) URL: {base}")
    path = parts.path
    if parts.scheme in ("http", "https") or not path or path == "/":
        path = "/" if raw else WS_PATH
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def http_base(url: str) -> str:
    """A gateway URL as the REST base: ``ws://h:p/v1/ws`` -> ``http://h:p``."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))
