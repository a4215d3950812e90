"""One room's presence as one gateway sees it: which users are online, on which gateways.

Pure data, no I/O (presence.py feeds it from NATS). Each gateway reports its own users
of the room; a user is online while at least one gateway reports them. Reports carry
the reporting gateway's sequence number (one counter per gateway process, bumped on
every local change), and every (gateway, user) pair keeps the sequence of the report
that set it: a report older than what is held is ignored (last writer wins per pair),
so a snapshot reply that arrives after a newer delta cannot undo it. "Offline" entries
are kept as tombstones for a while for the same reason, then swept.

Costs: a delta is O(1); a snapshot of gateway g is O(users g reports); removing a dead
gateway is O(its entries in the room); the ``online`` list is encoded once per change
and reused by every query until the next change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

# Users listed in one presence answer. An entry is ~90 bytes, so 2000 of them stay far
# below a socket's 1 MiB send buffer; beyond it the answer says ``truncated`` (``count``
# always has the full number).
MAX_LISTED = 2000


@dataclass(frozen=True, slots=True)
class UserInfo:
    id: str
    username: str
    display_name: str

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "username": self.username, "display_name": self.display_name}


@dataclass(slots=True)
class Entry:
    online: bool
    seq: int
    at: float  # monotonic time of the last change (tombstone expiry)


@dataclass(frozen=True, slots=True)
class Change:
    user: UserInfo
    online: bool


class RoomView:
    __slots__ = ("_answer", "by_gateway", "online", "room_id", "tombstones")

    def __init__(self, room_id: str) -> None:
        self.room_id = room_id
        # gateway id → user id → entry
        self.by_gateway: dict[str, dict[str, Entry]] = {}
        # user id → (latest profile, gateways reporting the user online)
        self.online: dict[str, tuple[UserInfo, set[str]]] = {}
        self.tombstones = 0
        self._answer: bytes | None = None

    def set(
        self, gateway: str, user: UserInfo, online: bool, seq: int, now: float
    ) -> Change | None:
        """Apply one report; the resulting room-level change (first gateway / last
        gateway of that user), if any."""
        entries = self.by_gateway.setdefault(gateway, {})
        entry = entries.get(user.id)
        if entry is not None and entry.seq >= seq:
            return None  # older than what we hold
        was = entry is not None and entry.online
        if entry is None:
            entries[user.id] = Entry(online, seq, now)
            if not online:
                self.tombstones += 1
        else:
            if entry.online != online:
                self.tombstones += -1 if online else 1
            entry.online, entry.seq, entry.at = online, seq, now
        if online == was:
            if online:  # refresh the profile (a display name change)
                current = self.online.get(user.id)
                if current is not None and current[0] != user:
                    self.online[user.id] = (user, current[1])
                    self._answer = None
            return None
        return self._flip(gateway, user, online)

    def _flip(self, gateway: str, user: UserInfo, online: bool) -> Change | None:
        self._answer = None
        current = self.online.get(user.id)
        if online:
            if current is None:
                self.online[user.id] = (user, {gateway})
                return Change(user, True)
            current[1].add(gateway)
            self.online[user.id] = (user, current[1])
            return None
        if current is None:
            return None
        gateways = current[1]
        gateways.discard(gateway)
        if gateways:
            return None
        del self.online[user.id]
        return Change(current[0], False)

    def snapshot(self, gateway: str, seq: int, users: list[UserInfo], now: float) -> list[Change]:
        """Gateway ``gateway``'s complete list of users of the room as of ``seq``."""
        changes: list[Change] = []
        listed = set()
        for user in users:
            listed.add(user.id)
            change = self.set(gateway, user, True, seq, now)
            if change is not None:
                changes.append(change)
        entries = self.by_gateway.get(gateway, {})
        gone = [
            uid
            for uid, entry in entries.items()
            if entry.online and uid not in listed and entry.seq < seq
        ]
        for uid in gone:
            info = self.online.get(uid)
            profile = info[0] if info is not None else UserInfo(uid, "", "")
            change = self.set(gateway, profile, False, seq, now)
            if change is not None:
                changes.append(change)
        return changes

    def remove_gateway(self, gateway: str) -> list[Change]:
        """Forget everything a (dead) gateway reported."""
        entries = self.by_gateway.pop(gateway, None)
        if not entries:
            return []
        changes: list[Change] = []
        for uid, entry in entries.items():
            if not entry.online:
                self.tombstones -= 1
                continue
            info = self.online.get(uid)
            if info is None:
                continue
            change = self._flip(gateway, info[0], False)
            if change is not None:
                changes.append(change)
        return changes

    def sweep(self, older_than: float) -> None:
        """Drop tombstones set before ``older_than``."""
        if not self.tombstones:
            return
        for gateway in list(self.by_gateway):
            entries = self.by_gateway[gateway]
            stale = [u for u, e in entries.items() if not e.online and e.at < older_than]
            for uid in stale:
                del entries[uid]
            self.tombstones -= len(stale)
            if not entries:
                del self.by_gateway[gateway]

    def gateways(self) -> list[str]:
        return list(self.by_gateway)

    def answer(self) -> bytes:
        """``{"type":"presence","room","online":[...]}``, encoded once per change."""
        if self._answer is None:
            online = sorted(self.online.values(), key=lambda item: item[0].id)
            frame: dict[str, Any] = {
                "type": "presence",
                "room": self.room_id,
                "online": [info.as_dict() for info, _ in online[:MAX_LISTED]],
                "count": len(online),
            }
            if len(online) > MAX_LISTED:
                frame["truncated"] = True
            self._answer = orjson.dumps(frame)
        return self._answer
