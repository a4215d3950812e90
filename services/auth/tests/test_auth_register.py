"""Registration: the user shape, username/email/password rules, uniqueness under
concurrency, and strict input validation (every bad input is a 400 envelope)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import AuthHarness, MakeAuth

PASSWORD = "correct horse battery staple"


async def test_register_returns_the_user_with_email(auth: AuthHarness) -> None:
    response = await auth.client.post(
        "/v1/auth/register",
        json={
            "username": "Alice",
            "password": PASSWORD,
            "email": "Alice@Example.COM",
            "display_name": "  Alice A.  ",
        },
    )
    assert response.status_code == 201, response.text
    user = response.json()["user"]
    assert set(user) == {"id", "username", "display_name", "avatar_url", "created_at", "email"}
    assert len(user["id"]) == 24
    assert int(user["id"], 16) >= 0
    assert user["username"] == "Alice"
    assert user["display_name"] == "Alice A."
    assert user["avatar_url"] is None
    assert user["email"].lower() == "alice@example.com"
    assert datetime.fromisoformat(user["created_at"]).tzinfo is not None
    assert "password" not in response.text
    assert "password_hash" not in response.text


async def test_display_name_defaults_to_username_and_email_is_optional(auth: AuthHarness) -> None:
    user = await auth.register("bob_1.x-y")
    assert user["display_name"] == "bob_1.x-y"
    assert user["email"] is None


async def test_usernames_are_unique_case_insensitively(auth: AuthHarness) -> None:
    await auth.register("Alice")
    response = await auth.client.post(
        "/v1/auth/register", json={"username": "alice", "password": PASSWORD}
    )
    auth.expect_error(response, 409, "username_taken")
    response = await auth.client.post(
        "/v1/auth/register", json={"username": "ALICE", "password": PASSWORD}
    )
    auth.expect_error(response, 409, "username_taken")


async def test_emails_are_unique_case_insensitively(auth: AuthHarness) -> None:
    await auth.register("first", email="Same@Example.com")
    await auth.register("nomail1")
    await auth.register("nomail2")  # many users without an email do not collide
    response = await auth.client.post(
        "/v1/auth/register",
        json={"username": "second", "password": PASSWORD, "email": "same@EXAMPLE.com"},
    )
    auth.expect_error(response, 409, "email_taken")
    # The refused registration left nothing behind: the name is still free.
    await auth.register("second", email="other@example.com")


async def test_concurrent_registrations_of_one_name_make_exactly_one_user(
    make_auth: MakeAuth,
) -> None:
    auth = await make_auth(register_rate_limit=100)
    names = [
        "racer",
        "Racer",
        "RACER",
        "racer",
        "rAcer",
        "racer",
        "raCer",
        "racer",
        "RaceR",
        "racer",
    ]

    async def attempt(name: str) -> int:
        response = await auth.client.post(
            "/v1/auth/register", json={"username": name, "password": PASSWORD}
        )
        if response.status_code == 409:
            assert response.json()["error"]["code"] == "username_taken"
        return response.status_code

    statuses = await asyncio.gather(*(attempt(n) for n in names))
    assert sorted(statuses) == [201] + [409] * 9
    users = auth.service.users
    assert await users.exists("racer")
    count = await users._users.count_documents({"username_lower": "racer"})
    assert count == 1


@pytest.mark.parametrize(
    "username",
    ["ab", "a" * 33, "has space", "émile", "semi;colon", "slash/", "star*", "", "gt>"],
)
async def test_bad_usernames_are_refused(auth: AuthHarness, username: str) -> None:
    response = await auth.client.post(
        "/v1/auth/register", json={"username": username, "password": PASSWORD}
    )
    auth.expect_error(response, 400, "invalid_request")


async def test_username_bounds_are_accepted(auth: AuthHarness) -> None:
    await auth.register("abc")
    await auth.register("z" * 32)


@pytest.mark.parametrize("password", ["short", "1234567", "x" * 1025])
async def test_bad_password_lengths_are_refused(auth: AuthHarness, password: str) -> None:
    response = await auth.client.post(
        "/v1/auth/register", json={"username": "carol", "password": password}
    )
    auth.expect_error(response, 400, "invalid_request")


async def test_password_bounds_are_accepted(auth: AuthHarness) -> None:
    await auth.register("eight", password="12345678")
    await auth.register("longest", password="p" * 1024)


@pytest.mark.parametrize(
    "email", ["not-an-email", "a@", "@b.com", "a b@c.com", "x" * 250 + "@example.com"]
)
async def test_bad_emails_are_refused(auth: AuthHarness, email: str) -> None:
    response = await auth.client.post(
        "/v1/auth/register", json={"username": "dave", "password": PASSWORD, "email": email}
    )
    auth.expect_error(response, 400, "invalid_request")


@pytest.mark.parametrize("display_name", ["", "   ", "x" * 65, "bell\u0007", "zero\u200bwidth"])
async def test_bad_display_names_are_refused(auth: AuthHarness, display_name: str) -> None:
    response = await auth.client.post(
        "/v1/auth/register",
        json={"username": "erin", "password": PASSWORD, "display_name": display_name},
    )
    auth.expect_error(response, 400, "invalid_request")


INJECTIONS: list[Any] = [{"$ne": None}, {"$gt": ""}, ["alice"], 12345, True, None]


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize("field", ["username", "password", "email", "display_name"])
async def test_non_string_fields_are_refused_not_queried(
    auth: AuthHarness, field: str, value: Any
) -> None:
    await auth.register("victim", email="victim@example.com")
    body: dict[str, Any] = {"username": "mallory", "password": PASSWORD, field: value}
    if field in ("email", "display_name") and value is None:
        body[field] = {"$ne": None}  # null is a legal "absent" for optional fields
    response = await auth.client.post("/v1/auth/register", json=body)
    auth.expect_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"username": "frank"},
        {"password": PASSWORD},
        {"username": "frank", "password": PASSWORD, "role": "admin"},
        ["frank", PASSWORD],
        "frank",
        None,
    ],
)
async def test_malformed_bodies_are_refused(auth: AuthHarness, body: Any) -> None:
    response = await auth.client.post("/v1/auth/register", json=body)
    auth.expect_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    "raw", [b"{", b'{"username": "frank", "password": }', b"\xff\xfe", b"", b"nul\x00"]
)
async def test_invalid_json_is_a_400(auth: AuthHarness, raw: bytes) -> None:
    response = await auth.client.post(
        "/v1/auth/register", content=raw, headers={"Content-Type": "application/json"}
    )
    auth.expect_error(response, 400, "invalid_request")


async def test_oversized_bodies_are_a_413(auth: AuthHarness) -> None:
    body = {"username": "grace", "password": "p" * (20 * 1024)}
    response = await auth.client.post("/v1/auth/register", json=body)
    auth.expect_error(response, 413, "payload_too_large")
