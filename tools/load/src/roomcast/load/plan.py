"""From a scenario to a layout: rooms and their sizes, sockets, users, senders, and
which worker process, gateway and source address each socket uses. Pure and seeded:
the same scenario always gives the same layout."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from roomcast.load.scenario import MAX_ROOMS_PER_SOCKET, RoomGroup, Scenario, ScenarioError

# A worker's sockets are bounded by its file descriptors (each socket is one); the
# default hard limit here is 20000, and a worker needs a few hundred for itself.
MAX_SOCKETS_PER_WORKER = 19_000


@dataclass(frozen=True)
class RoomPlan:
    index: int
    members: tuple[int, ...]  # socket indexes; the first ``senders`` send
    senders: int
    rate: float  # messages/s per sender
    visibility: str
    slow_mode_seconds: int = 0


@dataclass
class SocketPlan:
    index: int
    user: int
    rooms: list[int] = field(default_factory=list)  # room indexes
    sends: list[tuple[int, float]] = field(default_factory=list)  # (room index, rate)
    typing: list[tuple[int, float]] = field(default_factory=list)  # (room index, notices/s)
    reads: list[tuple[int, float]] = field(default_factory=list)  # (room index, receipts/s)
    reacts: list[tuple[int, float]] = field(default_factory=list)  # (room index, reactions/s)
    # room index -> (reply share, mention share, the socket whose user it mentions)
    threads: dict[int, tuple[float, float, int]] = field(default_factory=dict)
    files: dict[int, float] = field(default_factory=dict)  # room index -> file share


@dataclass
class Layout:
    rooms: list[RoomPlan]
    sockets: list[SocketPlan]
    users: int

    def creator(self, room: int) -> int:
        """The user who creates room ``room``: the user of its first member socket, or
        of its last in a slow-mode room, where the creator (an owner, exempt from slow
        mode) must not be one of the senders."""
        plan = self.rooms[room]
        first = plan.members[-1] if plan.slow_mode_seconds else plan.members[0]
        return self.sockets[first].user

    def joins(self) -> list[tuple[int, int]]:
        """(user, room) memberships to create by joining (creators are members already)."""
        pairs: set[tuple[int, int]] = set()
        for r in self.rooms:
            owner = self.creator(r.index)
            for s in r.members:
                user = self.sockets[s].user
                if user != owner:
                    pairs.add((user, r.index))
        return sorted(pairs)

    def offered_rate(self) -> float:
        """Messages per second all senders together are scheduled to send."""
        return sum(r.senders * r.rate for r in self.rooms)

    def expected_deliveries_rate(self) -> float:
        return sum(r.senders * r.rate * len(r.members) for r in self.rooms)


def build_layout(scenario: Scenario) -> Layout:
    rng = random.Random(scenario.seed)
    sizes: list[tuple[int, RoomGroup]] = []
    for g in scenario.rooms:
        lo, hi = g.members
        for _ in range(g.count):
            sizes.append((rng.randint(lo, hi), g))
    slots = sum(s[0] for s in sizes)
    n_sockets = scenario.sockets if scenario.sockets is not None else slots
    if n_sockets < 1:
        raise ScenarioError("the scenario has no sockets")
    largest = max((s[0] for s in sizes), default=0)
    if largest > n_sockets:
        raise ScenarioError(f"a room of {largest} members needs at least {largest} sockets")
    n_users = scenario.users if scenario.users is not None else n_sockets
    sockets = [SocketPlan(i, i % n_users) for i in range(n_sockets)]
    rooms: list[RoomPlan] = []
    slot = 0
    for index, (size, g) in enumerate(sizes):
        members = tuple((slot + k) % n_sockets for k in range(size))
        slot += size
        rooms.append(RoomPlan(index, members, g.senders, g.rate, g.visibility, g.slow_mode_seconds))
        for k, s in enumerate(members):
            sockets[s].rooms.append(index)
            if k < g.senders:
                sockets[s].sends.append((index, g.rate))
                if g.typing_rate:
                    sockets[s].typing.append((index, g.typing_rate))
                if g.react_rate:
                    sockets[s].reacts.append((index, g.react_rate))
                if g.file_share:
                    sockets[s].files[index] = g.file_share
                if g.reply_share or g.mention_share:
                    # the next member: another socket, and another user when users allow
                    other = members[(k + 1) % size]
                    sockets[s].threads[index] = (g.reply_share, g.mention_share, other)
            if k < g.readers:
                sockets[s].reads.append((index, g.read_rate))
    busiest = max((len(s.rooms) for s in sockets), default=0)
    if busiest > MAX_ROOMS_PER_SOCKET:
        raise ScenarioError(
            f"{busiest} rooms per socket: more sockets are needed "
            f"(a gateway allows {MAX_ROOMS_PER_SOCKET} subscriptions per socket)"
        )
    return Layout(rooms, sockets, n_users)


def worker_of(socket: int, workers: int) -> int:
    return socket % workers


def gateway_of(socket: int, workers: int, gateways: int) -> int:
    """Spread each worker's sockets over every gateway."""
    return (socket // workers) % gateways


def source_ip_of(socket: int, workers: int, gateways: int, ips: list[str]) -> str | None:
    if not ips:
        return None
    return ips[(socket // (workers * gateways)) % len(ips)]


def check_workers(n_sockets: int, workers: int) -> int:
    """The number of workers to use: at least enough to keep each under its fd limit."""
    needed = -(-n_sockets // MAX_SOCKETS_PER_WORKER)
    return max(workers, needed)
