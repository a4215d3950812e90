"""Reading the gateways' presence messages on NATS, for every process that listens.

Gateways exchange presence on ``ephemeral.room.<room>``, ``presence.query.<room>`` and
:data:`HEARTBEAT_SUBJECT` (docs/presence.md; the gateway's
``roomcast.gateway.ephemeral.presence_wire`` writes them). The notifier listens too, to
know who is looking at a room. NATS is shared, so everything received is validated here
before use: a payload's size, that it is a JSON object, and the type and length of each
field read from it. Anything else is ignored (``None``), never an exception.
"""

from __future__ import annotations

from typing import Any

import orjson

from roomcast.common.subjects import is_object_id

# Every gateway heartbeats here (``{"gateway","dead_after"}``, or
# ``{"gateway","leaving":true}`` when it drains); listeners learn the live gateways.
HEARTBEAT_SUBJECT = "presence.heartbeat"
# Incoming presence payloads larger than this are not a gateway's (a full snapshot part
# is ~100 KB).
MAX_PRESENCE_BYTES = 512 * 1024
# Gateway ids are "<instance name>-<12 hex>"; longer ones are refused.
MAX_GATEWAY_ID_CHARS = 100


def decode(data: bytes) -> dict[str, Any] | None:
    """The JSON object a presence payload holds, or None (too large, not JSON, not an
    object)."""
    if len(data) > MAX_PRESENCE_BYTES:
        return None
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def gateway_of(obj: dict[str, Any]) -> str | None:
    """The sender's gateway id, or None when it is not a plausible one."""
    g = obj.get("gateway")
    return g if isinstance(g, str) and 0 < len(g) <= MAX_GATEWAY_ID_CHARS else None


def int_of(value: object) -> int | None:
    """``value`` when it is an integer (a JSON ``true`` is not), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def user_id_of(raw: object) -> str | None:
    """The id of a listed user (``{"id", ...}``), or None when it is not a user id."""
    if not isinstance(raw, dict):
        return None
    user_id = raw.get("id")
    return user_id if isinstance(user_id, str) and is_object_id(user_id) else None
