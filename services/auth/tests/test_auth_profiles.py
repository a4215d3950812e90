"""Profiles: GET/PATCH /v1/users/me, public profiles without email, the JWKS, and the
health, readiness and metrics endpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from roomcast.common.tokens import TokenSigner, TokenVerifier, key_id, load_private_key

if TYPE_CHECKING:
    from conftest import AuthHarness, MakeAuth


async def _logged_in(auth: AuthHarness, name: str = "paula", **extra: Any) -> tuple[Any, str]:
    user = await auth.register(name, **extra)
    return user, (await auth.login(name))["access_token"]


async def test_me_returns_the_private_profile(auth: AuthHarness) -> None:
    user, token = await _logged_in(auth, email="paula@example.com")
    response = await auth.client.get("/v1/users/me", headers=auth.bearer(token))
    assert response.status_code == 200
    assert response.json() == {"user": user}
    assert response.json()["user"]["email"] == "paula@example.com"


async def test_patch_me_changes_display_name_and_avatar(auth: AuthHarness) -> None:
    user, token = await _logged_in(auth)
    response = await auth.client.patch(
        "/v1/users/me",
        headers=auth.bearer(token),
        json={"display_name": "Paula P.", "avatar_url": "https://cdn.example.com/a/p.png"},
    )
    assert response.status_code == 200, response.text
    changed = response.json()["user"]
    assert changed["display_name"] == "Paula P."
    assert changed["avatar_url"] == "https://cdn.example.com/a/p.png"
    assert changed["username"] == user["username"]
    assert changed["created_at"] == user["created_at"]
    # Persisted, and visible in the public profile and in the next tokens.
    public = (await auth.client.get(f"/v1/users/{user['id']}")).json()["user"]
    assert public["display_name"] == "Paula P."
    claims = await (await auth.verifier()).verify((await auth.login("paula"))["access_token"])
    assert claims.display_name == "Paula P."
    assert claims.avatar_url == "https://cdn.example.com/a/p.png"
    # Only the fields sent change; null removes the avatar.
    response = await auth.client.patch(
        "/v1/users/me", headers=auth.bearer(token), json={"avatar_url": None}
    )
    assert response.json()["user"]["avatar_url"] is None
    assert response.json()["user"]["display_name"] == "Paula P."
    # An empty patch changes nothing.
    response = await auth.client.patch("/v1/users/me", headers=auth.bearer(token), json={})
    assert response.status_code == 200
    assert response.json()["user"]["display_name"] == "Paula P."


@pytest.mark.parametrize(
    "body",
    [
        {"display_name": ""},
        {"display_name": "   "},
        {"display_name": "x" * 65},
        {"display_name": None},
        {"display_name": {"$set": "x"}},
        {"display_name": ["x"]},
        {"avatar_url": "ftp://example.com/a.png"},
        {"avatar_url": "javascript:alert(1)"},
        {"avatar_url": "https://"},
        {"avatar_url": "not a url"},
        {"avatar_url": "https://example.com/" + "a" * 500},
        {"avatar_url": "https://exa mple.com/a.png"},
        {"avatar_url": "https://user:pw@example.com/a.png"},
        {"avatar_url": "https://example.com:99999/a.png"},
        {"avatar_url": "HTTPS://EXAMPLE.COM/\u00e9.png"},
        {"display_name": "evil\u202egnp.exe"},
        {"avatar_url": {"$ne": None}},
        {"username": "renamed"},
        {"email": "new@example.com"},
    ],
)
async def test_patch_me_validates(auth: AuthHarness, body: Any) -> None:
    _, token = await _logged_in(auth)
    response = await auth.client.patch("/v1/users/me", headers=auth.bearer(token), json=body)
    auth.expect_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    "name", ["Zoë", "李小龙", "👨\u200d👩\u200d👧 family", "a", "x" * 64, "  padded  "]
)
async def test_display_names_accept_unicode(auth: AuthHarness, name: str) -> None:
    _, token = await _logged_in(auth)
    response = await auth.client.patch(
        "/v1/users/me", headers=auth.bearer(token), json={"display_name": name}
    )
    assert response.status_code == 200, response.text
    assert response.json()["user"]["display_name"] == name.strip()


async def test_avatar_url_limits(auth: AuthHarness) -> None:
    _, token = await _logged_in(auth)
    longest = "http://example.com/" + "a" * (512 - len("http://example.com/"))
    ok = await auth.client.patch(
        "/v1/users/me", headers=auth.bearer(token), json={"avatar_url": longest}
    )
    assert ok.status_code == 200
    assert ok.json()["user"]["avatar_url"] == longest
    too_long = await auth.client.patch(
        "/v1/users/me", headers=auth.bearer(token), json={"avatar_url": longest + "a"}
    )
    auth.expect_error(too_long, 400, "invalid_request")


async def test_profile_endpoints_need_a_token(auth: AuthHarness) -> None:
    auth.expect_error(await auth.client.get("/v1/users/me"), 401)
    response = await auth.client.patch("/v1/users/me", json={"display_name": "x"})
    auth.expect_error(response, 401)


async def test_public_profile_never_shows_the_email(auth: AuthHarness) -> None:
    user, _ = await _logged_in(auth, email="secret@example.com")
    response = await auth.client.get(f"/v1/users/{user['id']}")
    assert response.status_code == 200
    public = response.json()["user"]
    assert set(public) == {"id", "username", "display_name", "avatar_url", "created_at"}
    assert "secret@example.com" not in response.text
    assert public == {k: v for k, v in user.items() if k != "email"}


@pytest.mark.parametrize(
    "user_id",
    [
        "0" * 24,
        "f" * 24,
        "nothex",
        "ABCDEF0123456789ABCDEF01",
        "0" * 25,
        "%7B%22%24ne%22%3Anull%7D",
        "null",
        "me2",
    ],
)
async def test_unknown_or_invalid_user_ids_are_404(auth: AuthHarness, user_id: str) -> None:
    await auth.register("someone")
    response = await auth.client.get(f"/v1/users/{user_id}")
    auth.expect_error(response, 404, "user_not_found")


async def test_jwks_serves_the_signing_key(auth: AuthHarness) -> None:
    response = await auth.client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    keys = response.json()["keys"]
    assert [k["kid"] for k in keys] == [auth.signer.kid]
    assert keys[0]["kty"] == "OKP"
    assert keys[0]["crv"] == "Ed25519"
    assert keys[0]["alg"] == "EdDSA"
    assert "d" not in keys[0]


async def test_previous_keys_keep_verifying_after_rotation(
    make_auth: MakeAuth, signing_key_pem: bytes
) -> None:
    """Rotation: the new app signs with a new key and publishes the old public key, so
    tokens issued before the rotation still verify against the served JWKS."""
    old_key = load_private_key(signing_key_pem)
    before = await make_auth()
    await before.register("rotating")
    old_token = (await before.login("rotating"))["access_token"]

    new_key = Ed25519PrivateKey.generate()
    signer = TokenSigner(
        new_key,
        issuer="roomcast-auth",
        audience="roomcast",
        access_ttl_seconds=900,
        extra_public_keys=(old_key.public_key(),),
    )
    after = await make_auth(token_signer=signer)
    kids = [k["kid"] for k in (await after.client.get("/.well-known/jwks.json")).json()["keys"]]
    assert kids == [key_id(new_key.public_key()), key_id(old_key.public_key())]
    verifier: TokenVerifier = await after.verifier()
    assert (await verifier.verify(old_token)).username == "rotating"
    me = await after.client.get("/v1/users/me", headers=after.bearer(old_token))
    assert me.status_code == 200
    new_token = (await after.login("rotating"))["access_token"]
    assert (await verifier.verify(new_token)).username == "rotating"


async def test_health_readiness_and_metrics(auth: AuthHarness) -> None:
    assert (await auth.client.get("/healthz")).json() == {"status": "ok"}
    ready = await auth.client.get("/readyz")
    assert ready.status_code == 200
    await auth.register("metered")
    await auth.login("metered")
    bad = await auth.client.post(
        "/v1/auth/login", json={"username": "metered", "password": "wrong-password"}
    )
    assert bad.status_code == 401
    text = (await auth.client.get("/metrics")).text
    assert 'roomcast_auth_logins_total{result="success"}' in text
    assert 'roomcast_auth_logins_total{result="invalid_credentials"}' in text
    assert 'roomcast_auth_registrations_total{result="success"}' in text
    assert "roomcast_auth_bcrypt_seconds_bucket" in text
    assert "roomcast_auth_http_requests_total" in text
    assert "metered" not in text  # no user names in labels


async def test_readiness_fails_when_mongodb_is_down(make_auth: MakeAuth) -> None:
    auth = await make_auth(
        mongo_url="mongodb://127.0.0.1:1/?directConnection=true",
        mongo_timeout_ms=200,
        create_indexes=False,
    )
    auth.expect_error(await auth.client.get("/readyz"), 503)
    assert (await auth.client.get("/healthz")).status_code == 200
    login = await auth.client.post(
        "/v1/auth/login", json={"username": "anyone", "password": "password1"}
    )
    auth.expect_error(login, 503, "dependency_unavailable")
