"""The presence messages gateways exchange on NATS, and the presence frames clients get.

On ``ephemeral.room.<room>`` (JSON objects; typing and read receipts share the subject):

- ``{"kind":"presence","gateway","seq","user":{id,username,display_name},"online"}``: a
  user's local socket count for the room went 0→1 (true) or 1→0 (false) on ``gateway``;
- ``{"kind":"presence_state","gateway","seq","part","parts","users":[...]}``: the
  gateway's complete list of local users of the room (after a NATS reconnect), in parts
  of at most ``SNAPSHOT_PART_USERS``.

On ``presence.query.<room>``: ``{"gateway"}`` with a reply subject; every gateway answers
``{"gateway","seq","part","parts","users"}`` (possibly no users). On
``presence.heartbeat``: ``{"gateway","dead_after"}``, or ``{"gateway","leaving":true}``
when a gateway drains. ``seq`` is the sender's change counter (one per process).

Everything received is validated before use (sizes, ids, types): NATS is shared. The
generic reading (payload size, JSON object, gateway id, integers, user ids) lives in
roomcast.common.presencewire, shared with the notifier, which listens too; this module
adds what only gateways write and read (users with their names, snapshot parts).
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from roomcast.common.presencewire import user_id_of
from roomcast.gateway.ephemeral.presence_view import UserInfo

# Users per snapshot message: ~90 bytes each, so a part stays ~100 KB, far below NATS'
# default 1 MB max payload. A gateway with more local users in one room sends parts.
SNAPSHOT_PART_USERS = 1000
# Longest username / display name relayed from a peer; auth's own limits are lower.
MAX_NAME_CHARS = 256
# Characters of the instance name kept in a gateway id (with the 12 random hex digits
# and the dash, well under roomcast.common.presencewire.MAX_GATEWAY_ID_CHARS).
GATEWAY_NAME_CHARS = 40


def new_gateway_id(instance_name: str) -> str:
    """This process's id on the ephemeral subjects: its name plus random hex, so a
    restarted replica is a new peer (its predecessor's late messages are not its own)."""
    return f"{instance_name[:GATEWAY_NAME_CHARS]}-{secrets.token_hex(6)}"


def presence_event(room: str, user: UserInfo, online: bool) -> bytes:
    return orjson.dumps(
        {
            "type": "presence",
            "room": room,
            "user": user.as_dict(),
            "status": "online" if online else "offline",
        }
    )


def user_of(raw: object) -> UserInfo | None:
    """A listed user with their names, or None when any field is not acceptable."""
    user_id = user_id_of(raw)
    if user_id is None or not isinstance(raw, dict):
        return None
    username, display = raw.get("username", ""), raw.get("display_name", "")
    if not isinstance(username, str) or not isinstance(display, str):
        return None
    if len(username) > MAX_NAME_CHARS or len(display) > MAX_NAME_CHARS:
        return None
    return UserInfo(user_id, username, display)


def snapshot_parts(
    gateway: str, seq: int, users: list[UserInfo], *, kind: str | None
) -> list[bytes]:
    """A gateway's local users of a room as snapshot messages (one per part)."""
    listed = [u.as_dict() for u in users]
    chunks = [
        listed[i : i + SNAPSHOT_PART_USERS] for i in range(0, len(listed), SNAPSHOT_PART_USERS)
    ] or [[]]
    head: dict[str, Any] = {"gateway": gateway, "seq": seq}
    if kind is not None:
        head["kind"] = kind
    return [
        orjson.dumps({**head, "part": i, "parts": len(chunks), "users": chunk})
        for i, chunk in enumerate(chunks)
    ]
