"""Scenario files and the layout built from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from roomcast.load.plan import (
    build_layout,
    check_workers,
    gateway_of,
    source_ip_of,
    worker_of,
)
from roomcast.load.scenario import (
    ScenarioError,
    builtin_names,
    find_scenario,
    load_scenario,
    parse_scenario,
)

SHIPPED = {"fanout-1000", "many-small-rooms", "connections-idle", "rolling-restart", "smoke"}


def test_every_shipped_scenario_parses_and_lays_out() -> None:
    assert set(builtin_names()) >= SHIPPED
    for name in builtin_names():
        sc = load_scenario(name)
        layout = build_layout(sc)
        assert layout.sockets, name
        assert sc.description, name


def test_fanout_1000_is_one_room_of_1000_sockets() -> None:
    sc = load_scenario("fanout-1000")
    layout = build_layout(sc)
    assert [len(r.members) for r in layout.rooms] == [1000]
    assert len(layout.sockets) == 1000
    assert layout.users == 250
    assert layout.offered_rate() == pytest.approx(20.0)
    assert layout.expected_deliveries_rate() == pytest.approx(20_000.0)


def test_rolling_restart_needs_the_stack_and_restarts_both_gateways() -> None:
    sc = load_scenario("rolling-restart")
    assert sc.requires_stack
    assert [r.service for r in sc.restarts] == ["gateway-a", "gateway-b"]
    assert sc.expect.lost == 0


def test_connections_idle_measures_memory() -> None:
    sc = load_scenario("connections-idle")
    assert sc.measure_memory
    assert sc.sockets == 10_000
    assert not build_layout(sc).rooms


def test_many_small_rooms_has_a_size_distribution() -> None:
    layout = build_layout(load_scenario("many-small-rooms"))
    sizes = sorted(len(r.members) for r in layout.rooms)
    assert sizes[0] >= 2
    assert sizes[-1] == 300
    assert len(set(sizes[:500])) > 3  # drawn from [2, 8]
    assert max(len(s.rooms) for s in layout.sockets) <= 100


def test_a_file_path_and_json_work(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text('{"rooms": [{"count": 2, "members": 3, "senders": 1, "rate": 1}]}')
    assert find_scenario(str(path)) == path
    sc = load_scenario(str(path))
    assert sc.name == "mine"
    assert sc.duration == 30.0
    assert sc.with_overrides(duration=2, workers=3).duration == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "rooms": [], "bogus": 1}, "unknown key"),
        ({"name": "x", "rooms": [{"count": 1, "members": 0}]}, "members"),
        ({"name": "x", "rooms": [{"count": 1, "members": [5, 2]}]}, "members"),
        ({"name": "x", "rooms": [{"count": 1, "members": 2, "senders": 3, "rate": 1}]}, "senders"),
        ({"name": "x", "rooms": [{"count": 1, "members": 2, "senders": 1}]}, "rate"),
        (
            {
                "name": "x",
                "sockets": 5,
                "restarts": [{"at": 1, "service": "gateway-a"}],
                "requires_stack": False,
            },
            "requires_stack",
        ),
        ({"name": "x", "rooms": [{"count": 1, "members": 2}], "duration": "long"}, "duration"),
        ({"name": "x", "rooms": [{"count": 1, "members": 2}], "message_bytes": 10}, "message"),
        ({"name": "x"}, "rooms"),
        ({"name": "x", "sockets": 5, "expect": {"lost": "none"}}, "lost"),
    ],
)
def test_bad_scenarios_are_refused(data: dict[str, object], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(data)


def test_unknown_scenario_name_lists_the_shipped_ones() -> None:
    with pytest.raises(ScenarioError, match="fanout-1000"):
        find_scenario("no-such-scenario")


def test_layout_members_senders_joins_and_spread() -> None:
    sc = parse_scenario(
        {
            "name": "t",
            "users": 3,
            "sockets": 6,
            "rooms": [{"count": 2, "members": 4, "senders": 2, "rate": 1.5}],
        }
    )
    layout = build_layout(sc)
    assert [r.members for r in layout.rooms] == [(0, 1, 2, 3), (4, 5, 0, 1)]
    assert [len(s.sends) for s in layout.sockets] == [1, 1, 0, 0, 1, 1]
    assert layout.sockets[0].sends == [(0, 1.5)]
    assert layout.sockets[4].sends == [(1, 1.5)]
    assert [s.user for s in layout.sockets] == [0, 1, 2, 0, 1, 2]
    # Room 0 is created by user 0 (its first member's), room 1 by user 1; the others join.
    assert (layout.creator(0), layout.creator(1)) == (0, 1)
    assert layout.joins() == [(0, 1), (1, 0), (2, 0), (2, 1)]
    assert layout.offered_rate() == pytest.approx(6.0)
    # Workers take every n-th socket; each worker spreads over every gateway and address.
    assert [worker_of(s, 2) for s in range(6)] == [0, 1, 0, 1, 0, 1]
    assert [gateway_of(s, 2, 2) for s in range(6)] == [0, 0, 1, 1, 0, 0]
    ips = ["127.0.0.1", "127.0.0.2"]
    assert [source_ip_of(s, 1, 1, ips) for s in range(3)] == ["127.0.0.1", "127.0.0.2", "127.0.0.1"]
    assert source_ip_of(3, 1, 1, []) is None


def test_too_few_sockets_for_a_room_is_refused() -> None:
    sc = parse_scenario({"name": "t", "sockets": 3, "rooms": [{"count": 1, "members": 4}]})
    with pytest.raises(ScenarioError, match="4 sockets"):
        build_layout(sc)


def test_workers_are_added_to_stay_under_the_descriptor_limit() -> None:
    assert check_workers(1000, 1) == 1
    assert check_workers(50_000, 2) == 3


def test_scale_multiplies_every_rate_but_never_speeds_up_slow_mode() -> None:
    sc = load_scenario("chat-mix")
    up = sc.with_overrides(scale=2.0)
    small, big, slow = sc.rooms
    small2, big2, slow2 = up.rooms
    assert small2.rate == pytest.approx(2 * small.rate)
    assert big2.typing_rate == pytest.approx(2 * big.typing_rate)
    assert big2.read_rate == pytest.approx(2 * big.read_rate)
    assert small2.react_rate == pytest.approx(2 * small.react_rate)
    assert up.inbox_rate == pytest.approx(2 * sc.inbox_rate)
    assert slow2.rate == slow.rate  # already paced below the room's slow mode
    assert slow2.read_rate == pytest.approx(2 * slow.read_rate)
    down = sc.with_overrides(scale=0.5)
    assert down.rooms[2].rate == pytest.approx(slow.rate / 2)
    assert build_layout(down).offered_rate() == pytest.approx(build_layout(sc).offered_rate() / 2)
    assert (small2.count, small2.members, small2.senders) == (
        small.count,
        small.members,
        small.senders,
    )
    with pytest.raises(ScenarioError, match="scale"):
        sc.with_overrides(scale=0)
