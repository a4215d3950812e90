"""Scenario files (TOML or JSON): what to connect, where to send and what to expect.

A scenario is found by path, or by name in the scenario directory
(``scenarios/`` inside this package, or ``ROOMCAST_LOAD_SCENARIOS``).
docs/load.md documents every key; :func:`parse_scenario` rejects unknown ones, so a
typo never silently runs a different test.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

SCENARIO_DIR_ENV = "ROOMCAST_LOAD_SCENARIOS"
# A gateway accepts at most 100 subscriptions per socket (its default limit).
MAX_ROOMS_PER_SOCKET = 100
# The gateway refuses longer message bodies (4000 characters by default); the load
# tool's own content needs ~20 characters for the timestamp.
MIN_MESSAGE_BYTES = 24
MAX_MESSAGE_BYTES = 4000


class ScenarioError(ValueError):
    """A scenario file that cannot be run as written."""


# The gateways' bound on a room's slow mode (6 hours; longer is a mute).
MAX_SLOW_MODE_SECONDS = 6 * 3600


@dataclass(frozen=True)
class RoomGroup:
    """``count`` rooms of ``members`` member sockets (a fixed size or a [min, max]
    range drawn per room), the first ``senders`` of which each send ``rate`` messages/s
    and ``typing_rate`` typing notices/s; the first ``readers`` members each send
    ``read_rate`` read receipts/s (up to the last seq they received). With
    ``slow_mode_seconds`` the rooms get that slow mode: the senders pace themselves below
    it, so every send passes the gateways' shared slow-mode check (a refusal, from a
    sender that fell behind and caught up in a burst, is a send error of the report),
    and the rooms' creator is a member who does not send (owners are exempt, and would
    skip the check). Of each sender's messages, a share ``reply_share`` replies to the
    newest message it received in the room and a share ``mention_share`` names another
    member (``@username``); each sender also adds ``react_rate`` reactions/s to it. A
    share ``file_share`` of the sends are file messages: a small upload
    (``POST /v1/rooms/{id}/files``), then a ``file`` send sharing it."""

    count: int
    members: tuple[int, int]
    senders: int = 0
    rate: float = 0.0
    visibility: str = "public"
    typing_rate: float = 0.0
    readers: int = 0
    read_rate: float = 0.0
    slow_mode_seconds: int = 0
    reply_share: float = 0.0
    mention_share: float = 0.0
    react_rate: float = 0.0
    file_share: float = 0.0


@dataclass(frozen=True)
class Restart:
    """Restart stack service ``service`` ``at`` seconds into the sending phase."""

    at: float
    service: str


@dataclass(frozen=True)
class Expect:
    """Pass/fail criteria; None means "not checked"."""

    lost: int | None = 0
    duplicated: int | None = 0
    out_of_order: int | None = None
    p99_ms: float | None = None
    min_connected_fraction: float | None = 1.0
    max_memory_per_socket_kib: float | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str = ""
    duration: float = 30.0
    users: int | None = None  # default: one user per socket
    sockets: int | None = None  # default: one socket per room membership
    rooms: tuple[RoomGroup, ...] = ()
    connect_rate: float = 1000.0
    connect_timeout: float = 120.0
    message_bytes: int = 100
    workers: int = 1
    drain_timeout: float = 15.0
    requires_stack: bool = False
    measure_memory: bool = False
    memory_settle: float = 3.0
    restarts: tuple[Restart, ...] = ()
    stack_env: dict[str, str] = field(default_factory=dict)
    expect: Expect = field(default_factory=Expect)
    seed: int = 1
    inbox_rate: float = 0.0  # inbox reads (GET /v1/notifications) per socket per second

    def member_slots(self) -> int:
        return sum(g.count * g.members[1] for g in self.rooms)

    def with_overrides(
        self,
        *,
        duration: float | None = None,
        workers: int | None = None,
        scale: float | None = None,
    ) -> Scenario:
        out = self
        if scale is not None:
            out = out.scaled(scale)
        if duration is not None:
            if duration <= 0:
                raise ScenarioError("duration must be positive")
            out = replace(out, duration=duration)
        if workers is not None:
            if workers < 1:
                raise ScenarioError("workers must be at least 1")
            out = replace(out, workers=workers)
        return out

    def scaled(self, factor: float) -> Scenario:
        """The same rooms and sockets with every traffic rate multiplied by ``factor``:
        messages, typing, read receipts, reactions and inbox reads alike (a rate ladder
        of one workload). A slow-mode group's message rate is never raised above the
        scenario's own: its senders already pace below the room's limit, which a faster
        rate would break (every extra send a refusal, not load)."""
        if not factor > 0:
            raise ScenarioError("scale must be positive")
        groups = tuple(
            replace(
                g,
                rate=min(g.rate, g.rate * factor) if g.slow_mode_seconds else g.rate * factor,
                typing_rate=g.typing_rate * factor,
                read_rate=g.read_rate * factor,
                react_rate=g.react_rate * factor,
            )
            for g in self.rooms
        )
        return replace(self, rooms=groups, inbox_rate=self.inbox_rate * factor)


def scenario_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get(SCENARIO_DIR_ENV)
    if env:
        dirs.append(Path(env))
    # The shipped scenarios are package data, so an installed tool (an image, a Job)
    # finds them as well as a checkout does.
    dirs.append(Path(__file__).resolve().parent / "scenarios")
    return dirs


def builtin_names() -> list[str]:
    names: set[str] = set()
    for d in scenario_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.iterdir() if p.suffix in (".toml", ".json"))
    return sorted(names)


def find_scenario(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".toml", ".json") and path.exists():
        return path
    for d in scenario_dirs():
        for suffix in (".toml", ".json"):
            candidate = d / f"{name_or_path}{suffix}"
            if candidate.exists():
                return candidate
    known = ", ".join(builtin_names()) or "none"
    raise ScenarioError(f"no scenario {name_or_path!r} (a file path, or one of: {known})")


def load_scenario(name_or_path: str) -> Scenario:
    path = find_scenario(name_or_path)
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            data = tomllib.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ScenarioError(f"{path}: {exc}") from exc
    data.setdefault("name", path.stem)
    return parse_scenario(data)


_TOP_KEYS = {
    "name",
    "inbox_rate",
    "description",
    "duration",
    "users",
    "sockets",
    "rooms",
    "connect_rate",
    "connect_timeout",
    "message_bytes",
    "workers",
    "drain_timeout",
    "requires_stack",
    "memory",
    "restarts",
    "stack",
    "expect",
    "seed",
}


def _unknown(data: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = set(data) - allowed
    if extra:
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")


def _num(data: dict[str, Any], key: str, default: float, *, minimum: float = 0.0) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{key} must be a number")
    if value < minimum:
        raise ScenarioError(f"{key} must be >= {minimum}")
    return float(value)


def _int(data: dict[str, Any], key: str, default: int, *, minimum: int = 0) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScenarioError(f"{key} must be an integer")
    if value < minimum:
        raise ScenarioError(f"{key} must be >= {minimum}")
    return value


def _opt_int(data: dict[str, Any], key: str, *, minimum: int = 0) -> int | None:
    return None if data.get(key) is None else _int(data, key, 0, minimum=minimum)


def _opt_num(data: dict[str, Any], key: str) -> float | None:
    return None if data.get(key) is None else _num(data, key, 0.0)


def _room_group(data: Any, i: int) -> RoomGroup:
    where = f"rooms[{i}]"
    if not isinstance(data, dict):
        raise ScenarioError(f"{where} must be a table")
    _unknown(
        data,
        {
            "count",
            "members",
            "senders",
            "rate",
            "visibility",
            "typing_rate",
            "readers",
            "read_rate",
            "slow_mode_seconds",
            "reply_share",
            "mention_share",
            "react_rate",
            "file_share",
        },
        where,
    )
    count = _int(data, "count", 1, minimum=1)
    raw = data.get("members")
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1:
        members = (raw, raw)
    elif (
        isinstance(raw, list)
        and len(raw) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in raw)
        and 1 <= raw[0] <= raw[1]
    ):
        members = (raw[0], raw[1])
    else:
        raise ScenarioError(f"{where}.members must be a positive integer or [min, max]")
    senders = _int(data, "senders", 0)
    if senders > members[0]:
        raise ScenarioError(f"{where}.senders cannot exceed the smallest room size")
    rate = _num(data, "rate", 0.0)
    if senders and rate <= 0:
        raise ScenarioError(f"{where}.rate must be positive when there are senders")
    visibility = data.get("visibility", "public")
    if visibility not in ("public", "private"):
        raise ScenarioError(f"{where}.visibility must be public or private")
    typing_rate = _num(data, "typing_rate", 0.0)
    if typing_rate and not senders:
        raise ScenarioError(f"{where}.typing_rate needs senders (the members who type)")
    readers = _int(data, "readers", 0)
    if readers > members[0]:
        raise ScenarioError(f"{where}.readers cannot exceed the smallest room size")
    read_rate = _num(data, "read_rate", 0.0)
    if readers and read_rate <= 0:
        raise ScenarioError(f"{where}.read_rate must be positive when there are readers")
    slow_mode = _int(data, "slow_mode_seconds", 0)
    if slow_mode > MAX_SLOW_MODE_SECONDS:
        raise ScenarioError(f"{where}.slow_mode_seconds must be <= {MAX_SLOW_MODE_SECONDS}")
    if slow_mode and senders >= members[0]:
        raise ScenarioError(
            f"{where}: a slow-mode room needs a member who does not send (its creator)"
        )
    if slow_mode and rate * slow_mode > 1:
        raise ScenarioError(f"{where}.rate must be at most 1 / slow_mode_seconds")
    shares = {k: _num(data, k, 0.0) for k in ("reply_share", "mention_share", "file_share")}
    for key, share in shares.items():
        if share > 1:
            raise ScenarioError(f"{where}.{key} must be a fraction of the sends (0 to 1)")
        if share and not senders:
            raise ScenarioError(f"{where}.{key} needs senders")
    if shares["mention_share"] and members[0] < 2:
        raise ScenarioError(f"{where}.mention_share needs rooms of 2 members or more")
    react_rate = _num(data, "react_rate", 0.0)
    if react_rate and not senders:
        raise ScenarioError(f"{where}.react_rate needs senders (the members who react)")
    return RoomGroup(
        count,
        members,
        senders,
        rate,
        visibility,
        typing_rate,
        readers,
        read_rate,
        slow_mode,
        shares["reply_share"],
        shares["mention_share"],
        react_rate,
        shares["file_share"],
    )


def parse_scenario(data: dict[str, Any]) -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError("a scenario must be a table")
    _unknown(data, _TOP_KEYS, "scenario")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ScenarioError("name must be a non-empty string")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ScenarioError("description must be a string")
    raw_rooms = data.get("rooms", [])
    if not isinstance(raw_rooms, list):
        raise ScenarioError("rooms must be an array of tables ([[rooms]])")
    rooms = tuple(_room_group(r, i) for i, r in enumerate(raw_rooms))

    memory = data.get("memory", {})
    if not isinstance(memory, dict):
        raise ScenarioError("memory must be a table")
    _unknown(memory, {"measure", "settle"}, "memory")
    measure = memory.get("measure", False)
    if not isinstance(measure, bool):
        raise ScenarioError("memory.measure must be true or false")

    raw_restarts = data.get("restarts", [])
    if not isinstance(raw_restarts, list):
        raise ScenarioError("restarts must be an array of tables ([[restarts]])")
    restarts = []
    for i, r in enumerate(raw_restarts):
        if not isinstance(r, dict):
            raise ScenarioError(f"restarts[{i}] must be a table")
        _unknown(r, {"at", "service"}, f"restarts[{i}]")
        service = r.get("service")
        if not isinstance(service, str) or not service:
            raise ScenarioError(f"restarts[{i}].service must be a stack service name")
        restarts.append(Restart(_num(r, "at", 0.0), service))
    requires_stack = data.get("requires_stack", bool(restarts))
    if not isinstance(requires_stack, bool):
        raise ScenarioError("requires_stack must be true or false")
    if restarts and not requires_stack:
        raise ScenarioError("restarts need requires_stack = true (the tool restarts services)")

    stack = data.get("stack", {})
    if not isinstance(stack, dict):
        raise ScenarioError("stack must be a table")
    _unknown(stack, {"env"}, "stack")
    env = stack.get("env", {})
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str | int | float) for k, v in env.items()
    ):
        raise ScenarioError("stack.env must map variable names to values")

    raw_expect = data.get("expect", {})
    if not isinstance(raw_expect, dict):
        raise ScenarioError("expect must be a table")
    _unknown(
        raw_expect,
        {
            "lost",
            "duplicated",
            "out_of_order",
            "p99_ms",
            "min_connected_fraction",
            "max_memory_per_socket_kib",
        },
        "expect",
    )
    defaults = Expect()
    expect = Expect(
        lost=_opt_int(raw_expect, "lost") if "lost" in raw_expect else defaults.lost,
        duplicated=(
            _opt_int(raw_expect, "duplicated")
            if "duplicated" in raw_expect
            else defaults.duplicated
        ),
        out_of_order=_opt_int(raw_expect, "out_of_order"),
        p99_ms=_opt_num(raw_expect, "p99_ms"),
        min_connected_fraction=(
            _opt_num(raw_expect, "min_connected_fraction")
            if "min_connected_fraction" in raw_expect
            else defaults.min_connected_fraction
        ),
        max_memory_per_socket_kib=_opt_num(raw_expect, "max_memory_per_socket_kib"),
    )

    scenario = Scenario(
        name=name,
        description=description,
        duration=_num(data, "duration", 30.0, minimum=0.1),
        users=_opt_int(data, "users", minimum=1),
        sockets=_opt_int(data, "sockets", minimum=1),
        rooms=rooms,
        connect_rate=_num(data, "connect_rate", 1000.0, minimum=1.0),
        connect_timeout=_num(data, "connect_timeout", 120.0, minimum=1.0),
        message_bytes=_int(data, "message_bytes", 100, minimum=MIN_MESSAGE_BYTES),
        workers=_int(data, "workers", 1, minimum=1),
        drain_timeout=_num(data, "drain_timeout", 15.0, minimum=0.0),
        requires_stack=requires_stack,
        measure_memory=measure,
        memory_settle=_num(memory, "settle", 3.0),
        restarts=tuple(sorted(restarts, key=lambda r: r.at)),
        stack_env={k: str(v) for k, v in env.items()},
        expect=expect,
        seed=_int(data, "seed", 1),
        inbox_rate=_num(data, "inbox_rate", 0.0),
    )
    if scenario.message_bytes > MAX_MESSAGE_BYTES:
        raise ScenarioError(f"message_bytes must be <= {MAX_MESSAGE_BYTES}")
    if scenario.sockets is None and not rooms:
        raise ScenarioError("a scenario needs rooms, or a socket count (idle sockets)")
    return scenario
