"""Rate limits on login and registration: per client address and per (username,
address), 429 with Retry-After and the envelope, refilled over time (no lockout); a
progressive per-username delay whose time slots pace the addresses that failed on a
name and which never refuses the others; and the client address taken from
X-Forwarded-For only behind a trusted proxy. The limiter clock and the back-off's sleep
are injected: no real waiting."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from roomcast.auth import limits
from roomcast.auth.errors import TooManyAttempts
from roomcast.auth.limits import client_ip
from roomcast.auth.settings import Settings

if TYPE_CHECKING:
    from conftest import AuthHarness, MakeAuth

PASSWORD = "correct horse battery staple"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _login(
    auth: AuthHarness,
    username: str,
    password: str = "wrong-password",  # noqa: S107
    **kw: Any,
) -> Any:
    return await auth.client.post(
        "/v1/auth/login", json={"username": username, "password": password}, **kw
    )


class RecordedSleeps:
    """The back-off's delays, recorded instead of waited (no real sleeping). With a
    ``clock``, each delay passes on it, as a real wait would."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.delays: list[float] = []
        self.clock = clock

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.clock is not None:
            self.clock.now += seconds


class GatedSleeps(RecordedSleeps):
    """Records each delay, then holds the attempt until ``gate`` opens, so every
    concurrent attempt has taken its place before any password is checked."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await self.gate.wait()


async def settled(tasks: list[asyncio.Task[Any]], sleeps: RecordedSleeps) -> None:
    """Until every task is either refused (done) or waiting in the back-off."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while sum(t.done() for t in tasks) + len(sleeps.delays) < len(tasks):
        assert loop.time() < deadline, "attempts neither refused nor waiting"
        await asyncio.sleep(0.01)


def from_ip(address: str) -> dict[str, Any]:
    return {"headers": {"X-Forwarded-For": address}}


async def test_login_is_limited_per_username_and_address(make_auth: MakeAuth) -> None:
    clock = Clock()
    # Behind a trusted proxy, so every attempt can come from its own client address.
    auth = await make_auth(
        login_rate_limit=3,
        login_rate_window_seconds=30,
        rate_limit_clock=clock,
        backoff_sleep=RecordedSleeps(),
        trusted_proxies="10.0.0.1",
        client_address=("10.0.0.1", 1),
    )
    await auth.register("target")
    for _ in range(3):
        assert (await _login(auth, "target", **from_ip("198.51.100.1"))).status_code == 401
    # The same name from the same address: limited (same canonical name).
    limited = await _login(auth, "TARGET", **from_ip("198.51.100.1"))
    auth.expect_error(limited, 429, "rate_limited")
    retry_after = int(limited.headers["Retry-After"])
    assert retry_after == 10  # 3 per 30 s: one attempt back every 10 s
    # Even the right password is refused there while limited: guessing gains nothing.
    auth.expect_error(
        await _login(auth, "target", PASSWORD, **from_ip("198.51.100.1")), 429, "rate_limited"
    )
    # The same name from another address has its own budget: the owner gets in.
    assert (await _login(auth, "target", PASSWORD, **from_ip("198.51.100.2"))).status_code == 200

    # Time passes: the bucket refills; the first address works again. No lockout.
    clock.now += retry_after
    assert (await _login(auth, "target", PASSWORD, **from_ip("198.51.100.1"))).status_code == 200


async def test_attacker_hammering_a_name_does_not_lock_its_owner_out(
    make_auth: MakeAuth,
) -> None:
    """The review's attack: one bad try on "alice" every 3 s (the per-username refill
    rate of the default 10 per 30 s) used to keep her refused everywhere forever."""
    clock = Clock()
    sleeps = RecordedSleeps(clock)  # the back-off's waits pass on the clock
    auth = await make_auth(
        rate_limit_clock=clock,
        backoff_sleep=sleeps,
        trusted_proxies="10.0.0.1",
        client_address=("10.0.0.1", 1),
    )
    await auth.register("alice")
    attacker, owner = from_ip("203.0.113.66"), from_ip("198.51.100.20")
    # A burst first: paced by the name's delay (its waits pass on the clock)...
    started = clock.now
    for _ in range(20):
        assert (await _login(auth, "alice", **attacker)).status_code in (401, 429)
    assert clock.now - started >= 10 * 4.0  # mostly 4 s per guess past the free ones
    # ...then the steady pace, for ten minutes; alice logs in from B throughout.
    for minute in range(10):
        for _ in range(20):
            clock.now += 3
            assert (await _login(auth, "alice", **attacker)).status_code in (401, 429)
        ok = await _login(auth, "alice", PASSWORD, **owner)
        assert ok.status_code == 200, (minute, ok.text)
    # She was slowed down (progressive back-off), by at most its cap, never refused.
    assert sleeps.delays
    assert max(sleeps.delays) <= auth.settings.login_backoff_max_seconds


async def test_failures_on_a_name_add_a_progressive_capped_delay(make_auth: MakeAuth) -> None:
    clock = Clock()
    sleeps = RecordedSleeps()
    auth = await make_auth(
        rate_limit_clock=clock,
        backoff_sleep=sleeps,
        trusted_proxies="10.0.0.1",
        client_address=("10.0.0.1", 1),
    )
    await auth.register("slowed")
    # Each try from its own address: no bucket refuses, only the back-off applies.
    for n in range(12):
        assert (await _login(auth, "slowed", **from_ip(f"192.0.2.{n}"))).status_code == 401
    # 5 free failures, then 0.25 s doubling per failure, capped at 4 s.
    assert sleeps.delays == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    # Another name is not slowed.
    assert (await _login(auth, "other-name", **from_ip("192.0.2.200"))).status_code == 401
    assert len(sleeps.delays) == 7
    # Failures are forgiven over time (one per 30 s): a quiet name has no delay again.
    clock.now += 12 * 30
    assert (await _login(auth, "slowed", PASSWORD, **from_ip("192.0.2.201"))).status_code == 200
    assert len(sleeps.delays) == 7


async def test_login_is_limited_per_ip_across_usernames(make_auth: MakeAuth) -> None:
    clock = Clock()
    auth = await make_auth(login_rate_limit=4, login_rate_window_seconds=60, rate_limit_clock=clock)
    for i in range(4):
        assert (await _login(auth, f"user{i}")).status_code == 401
    limited = await _login(auth, "user-new")
    auth.expect_error(limited, 429, "rate_limited")
    # 4 per 60 s refills one attempt every 15 s.
    assert int(limited.headers["Retry-After"]) == 15
    clock.now += 15
    assert (await _login(auth, "user-new")).status_code == 401
    auth.expect_error(await _login(auth, "user-newer"), 429)


async def test_default_limits_are_10_per_30_seconds(make_auth: MakeAuth) -> None:
    clock = Clock()
    auth = await make_auth(rate_limit_clock=clock)
    assert auth.settings.login_rate_limit == 10
    assert auth.settings.login_rate_window_seconds == 30
    # Names of their own, so no per-name delay applies: the address's budget is spent.
    for n in range(10):
        assert (await _login(auth, f"defaults{n}")).status_code == 401
    limited = await _login(auth, "defaults")
    auth.expect_error(limited, 429, "rate_limited")
    assert limited.headers["Retry-After"] == "3"


async def test_register_is_limited_per_ip_and_per_username(make_auth: MakeAuth) -> None:
    clock = Clock()
    auth = await make_auth(
        register_rate_limit=2, register_rate_window_seconds=10, rate_limit_clock=clock
    )
    await auth.register("reg1")
    await auth.register("reg2")
    limited = await auth.client.post(
        "/v1/auth/register", json={"username": "reg3", "password": PASSWORD}
    )
    auth.expect_error(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) == 5
    clock.now += 5
    await auth.register("reg3")

    # Per username, from many IPs (behind a trusted proxy, so each request has its own).
    proxied = await make_auth(
        register_rate_limit=2,
        register_rate_window_seconds=10,
        rate_limit_clock=clock,
        trusted_proxies="10.0.0.1",
        client_address=("10.0.0.1", 1),
    )
    for i in range(2):
        response = await proxied.client.post(
            "/v1/auth/register",
            json={"username": "contested", "password": "short"},
            headers={"X-Forwarded-For": f"192.0.2.{i}"},
        )
        assert response.status_code == 400  # invalid input is not counted
    for i in range(2):
        response = await proxied.client.post(
            "/v1/auth/register",
            json={"username": "contested", "password": PASSWORD},
            headers={"X-Forwarded-For": f"192.0.2.{i}"},
        )
        assert response.status_code in (201, 409)
    # Per (username, address): the name's budget at one address is spent there only;
    # another address still gets the real answer (taken), not a refusal.
    response = await proxied.client.post(
        "/v1/auth/register",
        json={"username": "Contested", "password": PASSWORD},
        headers={"X-Forwarded-For": "192.0.2.0"},
    )
    assert response.status_code == 409
    limited = await proxied.client.post(
        "/v1/auth/register",
        json={"username": "Contested", "password": PASSWORD},
        headers={"X-Forwarded-For": "192.0.2.0"},
    )
    proxied.expect_error(limited, 429, "rate_limited")
    elsewhere = await proxied.client.post(
        "/v1/auth/register",
        json={"username": "Contested", "password": PASSWORD},
        headers={"X-Forwarded-For": "192.0.2.99"},
    )
    proxied.expect_error(elsewhere, 409)


async def test_forwarded_for_is_believed_only_from_trusted_proxies(make_auth: MakeAuth) -> None:
    clock = Clock()
    behind_proxy = await make_auth(
        login_rate_limit=2,
        rate_limit_clock=clock,
        trusted_proxies="10.0.0.0/8",
        client_address=("10.1.2.3", 1),
    )
    # Two different real clients behind the proxy each get their own budget; a spoofed
    # left-most entry does not change who they are.
    for i in range(2):
        response = await _login(
            behind_proxy, f"a{i}x", headers={"X-Forwarded-For": "1.1.1.1, 198.51.100.7"}
        )
        assert response.status_code == 401
    spoofed = await _login(
        behind_proxy, "a9x", headers={"X-Forwarded-For": "9.9.9.9, 198.51.100.7"}
    )
    behind_proxy.expect_error(spoofed, 429)
    other_client = await _login(
        behind_proxy, "a9x", headers={"X-Forwarded-For": "198.51.100.8, 10.0.0.5"}
    )
    assert other_client.status_code == 401

    # From an untrusted peer the header is ignored: rotating it does not help.
    direct = await make_auth(login_rate_limit=2, rate_limit_clock=clock)
    for i in range(2):
        response = await _login(direct, f"b{i}x", headers={"X-Forwarded-For": f"203.0.113.{i}"})
        assert response.status_code == 401
    rotated = await _login(direct, "b9x", headers={"X-Forwarded-For": "203.0.113.200"})
    direct.expect_error(rotated, 429)


@pytest.mark.parametrize(
    ("peer", "header", "expected"),
    [
        ("203.0.113.1", ["198.51.100.1"], "203.0.113.1"),  # untrusted peer: header ignored
        ("10.0.0.1", [], "10.0.0.1"),  # trusted peer without header
        ("10.0.0.1", ["198.51.100.1"], "198.51.100.1"),
        ("10.0.0.1", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),  # left part is client's
        ("10.0.0.1", ["198.51.100.1, 10.0.0.2"], "198.51.100.1"),  # skip trusted hops
        ("10.0.0.1", ["6.6.6.6", "198.51.100.1"], "198.51.100.1"),  # repeated headers
        ("10.0.0.1", ["10.0.0.3, 10.0.0.2"], "10.0.0.3"),  # all trusted
        ("10.0.0.1", ["garbage"], "garbage"),
        ("10.0.0.1", ["x" * 200], "x" * 64),
        ("::1", ["2001:db8::1"], "2001:db8::1"),
        (None, [], "unknown"),
    ],
)
def test_client_ip(peer: str | None, header: list[str], expected: str) -> None:
    settings = Settings(trusted_proxies="10.0.0.0/8, ::1")
    assert client_ip(peer, header, settings.trusted_proxies) == expected


async def test_rate_limits_are_counted_in_metrics(make_auth: MakeAuth) -> None:
    auth = await make_auth(login_rate_limit=1, rate_limit_clock=Clock())
    await _login(auth, "counted")
    auth.expect_error(await _login(auth, "counted"), 429)
    text = (await auth.client.get("/metrics")).text
    assert 'roomcast_auth_rate_limited_total{endpoint="login",key="ip"}' in text
    assert 'roomcast_auth_logins_total{result="rate_limited"}' in text


async def test_parallel_guesses_from_many_addresses_take_turns(make_auth: MakeAuth) -> None:
    """The review's finding: concurrent attempts on one name from many addresses all
    waited the delay and were then checked together, which paced nothing. Addresses
    that already failed on the name now share its time slots, one check per delay, and
    nobody waits longer than the cap: the rest are refused with the wait. The owner, at
    an address that did not fail, waits only the delay and gets in."""
    clock = Clock()
    sleeps = GatedSleeps()
    auth = await make_auth(
        rate_limit_clock=clock,
        backoff_sleep=sleeps,
        trusted_proxies="10.0.0.1",
        client_address=("10.0.0.1", 1),
    )
    await auth.register("target")
    guessers = [from_ip(f"203.0.113.{n}") for n in range(8)]
    sleeps.gate.set()
    for guesser in guessers:  # one failure each: 8 on the name, a 2 s delay now
        assert (await _login(auth, "target", **guesser)).status_code == 401
    assert sleeps.delays == [0.25, 0.5, 1.0]
    sleeps.delays.clear()
    sleeps.gate.clear()

    attempts = [asyncio.create_task(_login(auth, "target", **g)) for g in guessers]
    await settled(attempts, sleeps)
    # Slots 2 s apart, never beyond the 4 s cap: two are checked, in turn.
    assert sleeps.delays == [2.0, 4.0]
    refused = [t.result() for t in attempts if t.done()]
    assert len(refused) == 6
    for response in refused:
        auth.expect_error(response, 429, "rate_limited")
        assert 1 <= int(response.headers["Retry-After"]) <= 4
    # Meanwhile the owner, from an address that never failed: just the delay.
    owner = asyncio.create_task(_login(auth, "target", PASSWORD, **from_ip("198.51.100.5")))
    await settled([*attempts, owner], sleeps)
    assert sleeps.delays == [2.0, 4.0, 2.0]
    checked = [t for t in attempts if not t.done()]
    sleeps.gate.set()
    assert [(await t).status_code for t in checked] == [401, 401]
    assert (await owner).status_code == 200


async def test_a_successful_login_resets_the_delay(make_auth: MakeAuth) -> None:
    clock = Clock()
    sleeps = RecordedSleeps()
    auth = await make_auth(
        rate_limit_clock=clock,
        backoff_sleep=sleeps,
        trusted_proxies="10.0.0.1",
        client_address=("10.0.0.1", 1),
    )
    await auth.register("forgetful")
    for n in range(8):
        assert (await _login(auth, "forgetful", **from_ip(f"192.0.2.{n}"))).status_code == 401
    assert sleeps.delays == [0.25, 0.5, 1.0]
    # The owner gets in (after the 2 s delay those failures earned)...
    ok = await _login(auth, "forgetful", PASSWORD, **from_ip("192.0.2.0"))
    assert ok.status_code == 200
    assert sleeps.delays[-1] == 2.0
    # ...and the name starts afresh: the next tries, even from a guessing address, are
    # not delayed until five new failures.
    sleeps.delays.clear()
    for n in range(5):
        assert (await _login(auth, "forgetful", **from_ip(f"192.0.2.{n}"))).status_code == 401
    assert sleeps.delays == []


async def test_the_back_off_remembers_a_bounded_number_of_names_and_addresses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Names and (name, address) pairs are kept in bounded tables: a spray of names
    from many addresses forgets the oldest (which only forgives), never grows."""
    monkeypatch.setattr(limits, "MAX_TRACKED_KEYS", 5)
    clock = Clock()
    backoff = limits.UsernameBackoff(
        free_failures=0,
        base_seconds=1.0,
        max_seconds=4.0,
        forgive_seconds=30.0,
        address_memory_seconds=900.0,
        clock=clock,
        sleep=RecordedSleeps(),  # a frozen clock: the slots stay taken
    )
    for n in range(50):
        backoff.failed(f"name{n}", f"192.0.2.{n}")
    assert [backoff.failures(f"name{n}") for n in (0, 44, 45, 49)] == [0.0, 0.0, 1.0, 1.0]
    # The most recent name and address are still remembered: that address queues
    # (slots 2 s apart, none beyond the 4 s cap).
    for _ in range(2):
        await backoff.wait("name49", "192.0.2.49")
    with pytest.raises(TooManyAttempts):
        await backoff.wait("name49", "192.0.2.49")
    # Once pushed out, the pair is an address like any other: never refused.
    for n in range(5):
        backoff.failed(f"other{n}", "192.0.2.201")
    for _ in range(3):
        await backoff.wait("name49", "192.0.2.49")


def test_the_back_off_forgets_the_least_recently_failed_name_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A name that failed again is kept; reading a name's delay does not keep it."""
    monkeypatch.setattr(limits, "MAX_TRACKED_KEYS", 2)
    backoff = limits.UsernameBackoff(
        free_failures=0,
        base_seconds=1.0,
        max_seconds=4.0,
        forgive_seconds=30.0,
        address_memory_seconds=900.0,
        clock=Clock(),
        sleep=RecordedSleeps(),
    )
    backoff.failed("first", "192.0.2.1")
    backoff.failed("second", "192.0.2.2")
    backoff.failed("first", "192.0.2.1")  # now "second" is the least recently failed
    assert backoff.delay("second") == 2.0  # a read: "second" stays the oldest
    backoff.failed("third", "192.0.2.3")
    assert backoff.failures("first") == 2.0
    assert backoff.failures("second") == 0.0  # forgotten (forgiven)
    assert backoff.failures("third") == 1.0
