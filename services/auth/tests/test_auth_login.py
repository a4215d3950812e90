"""Login: the token pair, the access token's claims (verified against the served JWKS),
one answer for unknown users and wrong passwords, long passwords never truncated, the
default cost, and bcrypt running off the event loop."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import TYPE_CHECKING, Any

import jwt
import pytest

from roomcast.auth.passwords import PasswordHasher, cost_of, prehash
from roomcast.auth.settings import Settings

if TYPE_CHECKING:
    from conftest import AuthHarness, MakeAuth

PASSWORD = "correct horse battery staple"


async def test_login_returns_a_verifiable_token_pair(auth: AuthHarness) -> None:
    registered = await auth.register("Alice", email="alice@example.com", display_name="Alice A")
    body = await auth.login("alice")  # usernames are case-insensitive at login too
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in", "user"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    assert body["user"] == registered
    assert isinstance(body["refresh_token"], str)
    assert len(body["refresh_token"]) >= 40

    claims = await (await auth.verifier()).verify(body["access_token"])
    assert claims.user_id == registered["id"]
    assert claims.username == "Alice"
    assert claims.display_name == "Alice A"
    assert claims.avatar_url is None
    assert claims.roles == ()
    assert claims.session_id

    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "EdDSA"
    assert header["kid"] == auth.signer.kid
    raw = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert {"iss", "aud", "sub", "typ", "exp", "iat", "jti", "sid", "roles"} <= set(raw)
    assert raw["iss"] == "roomcast-auth"
    assert raw["aud"] == "roomcast"
    assert raw["typ"] == "access"
    assert raw["exp"] - raw["iat"] == 900
    assert "email" not in raw


async def test_each_login_is_its_own_session(auth: AuthHarness) -> None:
    await auth.register("multi")
    verifier = await auth.verifier()
    first = await verifier.verify((await auth.login("multi"))["access_token"])
    second = await verifier.verify((await auth.login("multi"))["access_token"])
    assert first.session_id != second.session_id


async def test_admin_usernames_get_the_admin_role(make_auth: MakeAuth) -> None:
    auth = await make_auth(admin_usernames="Root, ops")
    await auth.register("root")
    await auth.register("regular")
    verifier = await auth.verifier()
    root = await verifier.verify((await auth.login("ROOT"))["access_token"])
    regular = await verifier.verify((await auth.login("regular"))["access_token"])
    assert root.roles == ("admin",)
    assert root.is_global_admin
    assert regular.roles == ()


async def test_unknown_user_and_wrong_password_look_the_same(auth: AuthHarness) -> None:
    await auth.register("known")
    wrong = await auth.client.post(
        "/v1/auth/login", json={"username": "known", "password": "wrong password"}
    )
    unknown = await auth.client.post(
        "/v1/auth/login", json={"username": "nobody", "password": "wrong password"}
    )
    auth.expect_error(wrong, 401, "invalid_credentials")
    auth.expect_error(unknown, 401, "invalid_credentials")
    assert wrong.json() == unknown.json()
    assert wrong.headers.get("content-length") == unknown.headers.get("content-length")


async def test_unknown_users_cost_a_bcrypt_check_like_known_ones(auth: AuthHarness) -> None:
    """Same path: both an unknown user and a wrong password run exactly one bcrypt check
    of the configured cost (the dummy hash has the same cost as real ones)."""
    from prometheus_client import REGISTRY

    await auth.register("known2")

    def checks() -> float:
        value = REGISTRY.get_sample_value("roomcast_auth_bcrypt_seconds_count", {"op": "verify"})
        return value or 0.0

    before = checks()
    await auth.client.post("/v1/auth/login", json={"username": "known2", "password": "nope1234"})
    after_known = checks()
    await auth.client.post("/v1/auth/login", json={"username": "ghost", "password": "nope1234"})
    after_unknown = checks()
    assert after_known - before == 1
    assert after_unknown - after_known == 1
    dummy = await auth.service.hasher._dummy_hash()
    assert cost_of(dummy.decode()) == auth.settings.bcrypt_cost


@pytest.mark.parametrize(
    "body",
    [
        {"username": {"$ne": None}, "password": PASSWORD},
        {"username": "alice", "password": {"$ne": None}},
        {"username": ["alice"], "password": PASSWORD},
        {"username": "alice", "password": ["x"]},
        {"username": "alice"},
        {"password": PASSWORD},
        {"username": "alice", "password": PASSWORD, "otp": "1"},
        {"username": "alice", "password": ""},
        {"username": "alice", "password": "p" * 1025},
        {"username": "a" * 33, "password": PASSWORD},
    ],
)
async def test_bad_login_bodies_are_400(auth: AuthHarness, body: Any) -> None:
    await auth.register("alice")
    response = await auth.client.post("/v1/auth/login", json=body)
    auth.expect_error(response, 400, "invalid_request")


async def test_bad_json_login_is_400(auth: AuthHarness) -> None:
    response = await auth.client.post(
        "/v1/auth/login", content=b'{"username": "x"', headers={"Content-Type": "application/json"}
    )
    auth.expect_error(response, 400, "invalid_request")


async def test_long_passwords_count_every_character(auth: AuthHarness) -> None:
    # 100 characters, 100+ bytes: far past bcrypt's 72-byte input limit.
    base = "".join(chr(ord("a") + i % 26) for i in range(100))
    changed = base[:79] + ("Z" if base[79] != "Z" else "Y") + base[80:]
    assert len(base.encode()) > 72
    assert base[:72] == changed[:72]
    await auth.register("longpw", password=base)
    await auth.login("longpw", base)
    response = await auth.client.post(
        "/v1/auth/login", json={"username": "longpw", "password": changed}
    )
    auth.expect_error(response, 401, "invalid_credentials")
    # Also the last character of a 1024-character password matters.
    longest = "q" * 1024
    await auth.register("longest", password=longest)
    await auth.login("longest", longest)
    response = await auth.client.post(
        "/v1/auth/login", json={"username": "longest", "password": longest[:-1] + "r"}
    )
    auth.expect_error(response, 401, "invalid_credentials")


async def test_multibyte_passwords_past_72_bytes(auth: AuthHarness) -> None:
    # 30 characters of 3-byte UTF-8: 90 bytes.
    password = "密码" * 15
    other = password[:-1] + "码" if password[-1] != "码" else password[:-1] + "密"
    assert len(password.encode()) > 72
    await auth.register("unicode", password=password)
    await auth.login("unicode", password)
    response = await auth.client.post(
        "/v1/auth/login", json={"username": "unicode", "password": other}
    )
    auth.expect_error(response, 401, "invalid_credentials")


async def test_hasher_rejects_a_changed_80th_character_directly() -> None:
    hasher = PasswordHasher(cost=4, concurrency=1, max_pending=4)
    try:
        password = "x" * 64 + "abcdefghijklmnopqrstuvwxyz"
        changed = password[:79] + "!" + password[80:]
        stored = await hasher.hash(password)
        assert stored.startswith("$2b$04$")
        assert await hasher.verify(password, stored)
        assert not await hasher.verify(changed, stored)
        assert prehash(password) != prehash(changed)
        assert len(prehash(password)) == 44  # under bcrypt's 72 bytes, no NUL possible
        assert not await hasher.verify(password, None)  # the dummy never verifies
    finally:
        hasher.close()


async def test_hashing_threads_run_at_lower_priority(auth: AuthHarness) -> None:
    hasher = auth.service.hasher
    assert auth.settings.hash_thread_niceness == 10

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    loop = asyncio.get_running_loop()
    main = niceness()
    worker = await loop.run_in_executor(hasher._executor, niceness)
    assert worker == min(19, main + 10) or worker == 10


def test_default_bcrypt_cost_is_12(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROOMCAST_AUTH_BCRYPT_COST", raising=False)
    assert Settings().bcrypt_cost == 12


async def test_hashes_made_with_an_old_cost_are_upgraded_at_login(make_auth: MakeAuth) -> None:
    old = await make_auth(bcrypt_cost=4)
    await old.register("upgrader")
    new = await make_auth(bcrypt_cost=5)
    await new.login("upgrader")
    user = await new.service.users.find_by_username("upgrader")
    assert user is not None
    assert cost_of(user.password_hash) == 5
    await new.login("upgrader")  # and the upgraded hash still verifies


async def test_bcrypt_runs_off_the_event_loop(make_auth: MakeAuth) -> None:
    """While cost-12 hashes are executing in worker threads, other requests are served:
    /healthz completes while a hash is still running."""
    auth = await make_auth(bcrypt_cost=12, hash_concurrency=2, login_rate_limit=100)
    hasher = auth.service.hasher
    await hasher.warm_up()  # the dummy hash, made once
    await auth.register("busy", password=PASSWORD)  # one cost-12 hash

    logins = [
        asyncio.create_task(
            auth.client.post("/v1/auth/login", json={"username": "busy", "password": PASSWORD})
        )
        for _ in range(4)
    ]
    # A hash starts within milliseconds; 10 s is a loaded machine's worst case.
    deadline = time.monotonic() + 10
    while hasher.running < 1:
        assert time.monotonic() < deadline, "no hash started"
        await asyncio.sleep(0.001)
    health = await auth.client.get("/healthz")
    running_when_served = hasher.running
    logins_done_when_served = sum(t.done() for t in logins)
    results = await asyncio.gather(*logins)

    assert health.status_code == 200
    assert running_when_served >= 1, "healthz waited for the hashes"
    assert logins_done_when_served < len(logins)
    assert [r.status_code for r in results] == [200] * 4


async def test_too_many_queued_hashes_are_refused_with_503(make_auth: MakeAuth) -> None:
    auth = await make_auth(
        bcrypt_cost=12, hash_concurrency=1, max_pending_hashes=1, login_rate_limit=100
    )
    await auth.register("queue")
    await auth.service.hasher.warm_up()
    results = await asyncio.gather(
        *(
            auth.client.post("/v1/auth/login", json={"username": "queue", "password": PASSWORD})
            for _ in range(4)
        )
    )
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(200) >= 1
    assert 503 in statuses
    for response in results:
        if response.status_code == 503:
            auth.expect_error(response, 503, "overloaded")
    # Once the queue drains, logins work again.
    await auth.login("queue")


async def test_service_reader_usernames_get_the_read_only_service_role(
    make_auth: MakeAuth,
) -> None:
    auth = await make_auth(service_reader_usernames="Roomcast-Notifier")
    await auth.register("roomcast-notifier")
    verifier = await auth.verifier()
    reader = await verifier.verify((await auth.login("roomcast-notifier"))["access_token"])
    assert reader.roles == ("service-reader",)
    assert reader.is_service_reader
    assert not reader.is_global_admin
