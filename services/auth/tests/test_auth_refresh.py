"""Refresh tokens: rotation on every use, reuse detection revoking the family, atomic
rotation under concurrency, expiry, logout, and storage only as hashes."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import AuthHarness, MakeAuth


async def _refresh(auth: AuthHarness, token: str) -> Any:
    return await auth.client.post("/v1/auth/refresh", json={"refresh_token": token})


async def test_refresh_rotates_the_pair(auth: AuthHarness) -> None:
    user = await auth.register("rot")
    first = await auth.login("rot")
    response = await _refresh(auth, first["refresh_token"])
    assert response.status_code == 200, response.text
    second = response.json()
    assert set(second) == {"access_token", "refresh_token", "token_type", "expires_in", "user"}
    assert second["token_type"] == "bearer"
    assert second["user"]["id"] == user["id"]
    assert second["refresh_token"] != first["refresh_token"]
    verifier = await auth.verifier()
    old_claims = await verifier.verify(first["access_token"])
    new_claims = await verifier.verify(second["access_token"])
    assert new_claims.user_id == user["id"]
    assert new_claims.session_id == old_claims.session_id  # same family
    assert new_claims.token_id != old_claims.token_id
    # The new refresh token works in turn.
    third = await _refresh(auth, second["refresh_token"])
    assert third.status_code == 200, third.text


async def test_refresh_tokens_are_stored_only_as_hashes(auth: AuthHarness) -> None:
    await auth.register("hashed")
    token = (await auth.login("hashed"))["refresh_token"]
    db = auth.service.sessions._tokens.database
    stored = [doc async for doc in db["refresh_tokens"].find({})]
    assert stored
    assert all(token not in repr(doc) for doc in stored)
    assert hashlib.sha256(token.encode()).hexdigest() in {doc["_id"] for doc in stored}
    users = [doc async for doc in db["users"].find({})]
    assert all("correct horse" not in repr(doc) for doc in users)


async def test_reusing_a_rotated_token_revokes_the_whole_family(auth: AuthHarness) -> None:
    await auth.register("victim")
    first = await auth.login("victim")
    rotated = await _refresh(auth, first["refresh_token"])
    assert rotated.status_code == 200
    newest = rotated.json()["refresh_token"]

    replay = await _refresh(auth, first["refresh_token"])
    auth.expect_error(replay, 401, "refresh_token_reused")
    # The legitimate holder's newest token is dead too: the family is revoked.
    after = await _refresh(auth, newest)
    auth.expect_error(after, 401, "invalid_refresh_token")
    # Another session of the same user is untouched.
    other = await auth.login("victim")
    assert (await _refresh(auth, other["refresh_token"])).status_code == 200


async def test_concurrent_uses_of_one_token_succeed_once(auth: AuthHarness) -> None:
    await auth.register("racer")
    token = (await auth.login("racer"))["refresh_token"]
    results = await asyncio.gather(*(_refresh(auth, token) for _ in range(10)))
    statuses = [r.status_code for r in results]
    assert statuses.count(200) == 1, statuses
    assert statuses.count(401) == 9, statuses
    for response in results:
        if response.status_code == 401:
            auth.expect_error(response, 401, "refresh_token_reused")
    # The replays revoked the family: the winner's new token is dead too.
    (winner,) = [r.json() for r in results if r.status_code == 200]
    auth.expect_error(await _refresh(auth, winner["refresh_token"]), 401, "invalid_refresh_token")


class _PausedSessionLookup:
    """The real sessions collection, except that the first ``find_one`` (the session
    check rotation makes right after spending its token) waits until the test lets it
    go, so the test can land another request exactly in that gap."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.reached = asyncio.Event()
        self.resume = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def find_one(self, *args: Any, **kwargs: Any) -> Any:
        if not self.reached.is_set():
            self.reached.set()
            await self.resume.wait()
        return await self._real.find_one(*args, **kwargs)


async def _refresh_paused_after_spend(
    auth: AuthHarness, monkeypatch: pytest.MonkeyPatch, token: str
) -> tuple[asyncio.Task[Any], _PausedSessionLookup]:
    sessions = auth.service.sessions
    paused = _PausedSessionLookup(sessions._sessions)
    monkeypatch.setattr(sessions, "_sessions", paused)
    first = asyncio.create_task(_refresh(auth, token))
    await paused.reached.wait()
    return first, paused


async def test_a_replay_overtaking_the_first_use_still_lets_the_first_use_succeed(
    auth: AuthHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving CI once hit: the replay revokes the family between the first
    use's spend and its session check. The first use is still the one success."""
    await auth.register("overtaken")
    token = (await auth.login("overtaken"))["refresh_token"]
    first, paused = await _refresh_paused_after_spend(auth, monkeypatch, token)
    auth.expect_error(await _refresh(auth, token), 401, "refresh_token_reused")
    paused.resume.set()
    response = await first
    assert response.status_code == 200, response.text
    auth.expect_error(
        await _refresh(auth, response.json()["refresh_token"]), 401, "invalid_refresh_token"
    )


async def test_a_logout_landing_after_the_spend_refuses_the_refresh(
    auth: AuthHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a replay of the spent token itself is known to come after the spend; any
    other revocation seen at the check (here a logout) refuses the refresh."""
    await auth.register("loggedout")
    token = (await auth.login("loggedout"))["refresh_token"]
    first, paused = await _refresh_paused_after_spend(auth, monkeypatch, token)
    logout = await auth.client.post("/v1/auth/logout", json={"refresh_token": token})
    assert logout.status_code == 204
    paused.resume.set()
    auth.expect_error(await first, 401, "invalid_refresh_token")


@pytest.mark.parametrize("token", ["", "x" * 257, "not-a-token", "A" * 43])
async def test_unknown_or_malformed_refresh_tokens(auth: AuthHarness, token: str) -> None:
    response = await _refresh(auth, token)
    assert response.status_code in (400, 401)
    auth.expect_error(response, response.status_code)


@pytest.mark.parametrize(
    "body", [{"refresh_token": {"$ne": None}}, {"refresh_token": ["a"]}, {}, {"token": "x"}]
)
async def test_refresh_rejects_non_string_tokens(auth: AuthHarness, body: Any) -> None:
    auth.expect_error(await _refresh_body(auth, body), 400, "invalid_request")


async def _refresh_body(auth: AuthHarness, body: Any) -> Any:
    return await auth.client.post("/v1/auth/refresh", json=body)


async def test_refresh_tokens_expire(make_auth: MakeAuth) -> None:
    now = [datetime.now(UTC)]
    auth = await make_auth(refresh_ttl_seconds=3600, wall_clock=lambda: now[0])
    await auth.register("expiring")
    token = (await auth.login("expiring"))["refresh_token"]
    now[0] += timedelta(minutes=59)
    response = await _refresh(auth, token)
    assert response.status_code == 200
    token = response.json()["refresh_token"]  # a fresh 1-hour lifetime
    now[0] += timedelta(minutes=59)
    response = await _refresh(auth, token)
    assert response.status_code == 200
    token = response.json()["refresh_token"]
    now[0] += timedelta(minutes=61)
    auth.expect_error(await _refresh(auth, token), 401, "refresh_token_expired")


async def test_logout_revokes_the_family(auth: AuthHarness) -> None:
    await auth.register("leaver")
    first = await auth.login("leaver")
    second = (await _refresh(auth, first["refresh_token"])).json()
    response = await auth.client.post(
        "/v1/auth/logout", json={"refresh_token": second["refresh_token"]}
    )
    assert response.status_code == 204
    assert response.content == b""
    auth.expect_error(await _refresh(auth, second["refresh_token"]), 401, "invalid_refresh_token")
    # Logging out again, or with an unknown token, is not an error.
    again = await auth.client.post(
        "/v1/auth/logout", json={"refresh_token": second["refresh_token"]}
    )
    assert again.status_code == 204
    unknown = await auth.client.post("/v1/auth/logout", json={"refresh_token": "nope"})
    assert unknown.status_code == 204
    bad = await auth.client.post("/v1/auth/logout", json={"refresh_token": {"$ne": None}})
    auth.expect_error(bad, 400, "invalid_request")


async def test_logout_with_an_older_token_of_the_family_also_ends_it(auth: AuthHarness) -> None:
    await auth.register("oldtoken")
    first = await auth.login("oldtoken")
    second = (await _refresh(auth, first["refresh_token"])).json()
    response = await auth.client.post(
        "/v1/auth/logout", json={"refresh_token": first["refresh_token"]}
    )
    assert response.status_code == 204
    auth.expect_error(await _refresh(auth, second["refresh_token"]), 401, "invalid_refresh_token")
