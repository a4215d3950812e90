"""Finding users: GET /v1/users?username= (exact, public profile, rate limited) and the
batch POST /v1/users/lookup the gateway uses to name a members page (rate limited too)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from roomcast.auth.directory import BATCH_LOOKUP_RATE_LIMIT, LOOKUP_RATE_LIMIT, MAX_BATCH_IDS

if TYPE_CHECKING:
    from conftest import AuthHarness, MakeAuth


async def _token(auth: AuthHarness, name: str) -> str:
    await auth.register(name)
    return str((await auth.login(name))["access_token"])


async def test_username_lookup_is_exact_and_public(auth: AuthHarness) -> None:
    token = await _token(auth, "finder")
    bob = await auth.register("Bobby", email="bobby@example.com", display_name="Bob B.")
    for name in ("Bobby", "bobby"):  # usernames are unique case-insensitively
        response = await auth.client.get(
            "/v1/users", params={"username": name}, headers=auth.bearer(token)
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"user": {k: v for k, v in bob.items() if k != "email"}}, (
            "public profile only"
        )
    # A prefix or another name is not a match.
    for name in ("Bob", "bobby2"):
        response = await auth.client.get(
            "/v1/users", params={"username": name}, headers=auth.bearer(token)
        )
        auth.expect_error(response, 404, "user_not_found")


async def test_username_lookup_validates_and_needs_a_token(auth: AuthHarness) -> None:
    token = await _token(auth, "checker")
    response = await auth.client.get("/v1/users", params={"username": "bobby"})
    auth.expect_error(response, 401, "missing_token")
    for params in ({"username": "x"}, {"username": '{"$ne": null}'}, {}):
        response = await auth.client.get("/v1/users", params=params, headers=auth.bearer(token))
        auth.expect_error(response, 400, "invalid_request")


async def test_username_lookup_is_rate_limited_per_caller(make_auth: MakeAuth) -> None:
    now = [1000.0]
    auth = await make_auth(rate_limit_clock=lambda: now[0])
    token = await _token(auth, "prober")
    other = await _token(auth, "patient")
    headers = auth.bearer(token)
    for i in range(LOOKUP_RATE_LIMIT):
        response = await auth.client.get(
            "/v1/users", params={"username": f"name{i:03d}"}, headers=headers
        )
        assert response.status_code == 404
    response = await auth.client.get("/v1/users", params={"username": "prober"}, headers=headers)
    auth.expect_error(response, 429, "rate_limited")
    assert int(response.headers["retry-after"]) >= 1
    # Another caller is not affected, and the bucket refills with time.
    response = await auth.client.get(
        "/v1/users", params={"username": "prober"}, headers=auth.bearer(other)
    )
    assert response.status_code == 200
    now[0] += 5
    response = await auth.client.get("/v1/users", params={"username": "prober"}, headers=headers)
    assert response.status_code == 200


async def test_batch_lookup_names_known_ids_only(auth: AuthHarness) -> None:
    token = await _token(auth, "gatherer")
    ann = await auth.register("ann", email="ann@example.com")
    ben = await auth.register("ben")
    unknown = "0" * 24
    response = await auth.client.post(
        "/v1/users/lookup",
        json={"ids": [ann["id"], ben["id"], unknown, ann["id"]]},
        headers=auth.bearer(token),
    )
    assert response.status_code == 200, response.text
    items = sorted(response.json()["items"], key=lambda u: u["username"])
    assert [u["username"] for u in items] == ["ann", "ben"]
    assert all("email" not in u for u in items)
    # Validated before any query: ids must be ObjectIds, at most a page of them.
    for body in (
        {"ids": [{"$ne": None}]},
        {"ids": ["nothex"]},
        {"ids": [unknown] * (MAX_BATCH_IDS + 1)},
    ):
        response = await auth.client.post("/v1/users/lookup", json=body, headers=auth.bearer(token))
        auth.expect_error(response, 400, "invalid_request")
    response = await auth.client.post("/v1/users/lookup", json={"ids": [ann["id"]]})
    auth.expect_error(response, 401, "missing_token")


async def test_batch_lookup_is_rate_limited_per_caller(make_auth: MakeAuth) -> None:
    """100 ids a call, any signed-in caller: without a limit one account could keep
    auth querying at full speed. The batch has its own bucket per caller."""
    now = [1000.0]
    auth = await make_auth(rate_limit_clock=lambda: now[0])
    token = await _token(auth, "harvester")
    other = await _token(auth, "browser")
    ids = {"ids": ["0" * 24] * MAX_BATCH_IDS}
    headers = auth.bearer(token)
    for _ in range(BATCH_LOOKUP_RATE_LIMIT):
        response = await auth.client.post("/v1/users/lookup", json=ids, headers=headers)
        assert response.status_code == 200, response.text
    refused = await auth.client.post("/v1/users/lookup", json=ids, headers=headers)
    auth.expect_error(refused, 429, "rate_limited")
    assert int(refused.headers["retry-after"]) >= 1
    # Its own bucket: the username lookup and other callers are not affected.
    response = await auth.client.get("/v1/users", params={"username": "browser"}, headers=headers)
    assert response.status_code == 200
    response = await auth.client.post("/v1/users/lookup", json=ids, headers=auth.bearer(other))
    assert response.status_code == 200
    # The bucket refills with time (60 a minute: one a second).
    now[0] += 1
    response = await auth.client.post("/v1/users/lookup", json=ids, headers=headers)
    assert response.status_code == 200
    text = (await auth.client.get("/metrics")).text
    assert 'roomcast_auth_rate_limited_total{endpoint="user_batch_lookup",key="user"}' in text
