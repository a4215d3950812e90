"""Bearer access tokens on /v1/users/me: only a genuine, current access token from our
key, issuer and audience is accepted; every forgery is a 401 with the envelope."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from roomcast.common.tokens import TokenSigner, load_private_key

if TYPE_CHECKING:
    from conftest import AuthHarness


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def _claims(auth: AuthHarness) -> tuple[dict[str, Any], dict[str, Any]]:
    """A genuine token's header and claims (to forge variations of)."""
    await auth.register("target")
    token = (await auth.login("target"))["access_token"]
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    return header, claims


async def _me(auth: AuthHarness, token: str) -> Any:
    return await auth.client.get("/v1/users/me", headers=auth.bearer(token))


async def test_genuine_token_is_accepted(auth: AuthHarness) -> None:
    await auth.register("target")
    token = (await auth.login("target"))["access_token"]
    response = await _me(auth, token)
    assert response.status_code == 200
    assert response.json()["user"]["username"] == "target"


async def test_missing_or_malformed_authorization(auth: AuthHarness) -> None:
    auth.expect_error(await auth.client.get("/v1/users/me"), 401, "missing_token")
    for value in ["Basic abc", "Bearer", "Bearer ", "token", "Bearer " + "a" * 5000]:
        response = await auth.client.get("/v1/users/me", headers={"Authorization": value})
        assert response.status_code == 401, value
        auth.expect_error(response, 401)
    auth.expect_error(await _me(auth, "not.a.jwt"), 401, "invalid_token")


async def test_alg_none_is_refused(auth: AuthHarness) -> None:
    header, claims = await _claims(auth)
    forged = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': header['kid']})}.{_b64(claims)}."
    auth.expect_error(await _me(auth, forged), 401, "invalid_token")


async def test_token_from_another_key_is_refused(auth: AuthHarness) -> None:
    header, claims = await _claims(auth)
    other = Ed25519PrivateKey.generate()
    # Claiming our kid but signed by another key: the signature fails.
    same_kid = jwt.encode(claims, other, algorithm="EdDSA", headers={"kid": header["kid"]})
    auth.expect_error(await _me(auth, same_kid), 401, "invalid_token")
    # With its own kid: unknown key.
    foreign = TokenSigner(other, issuer="roomcast-auth", audience="roomcast", access_ttl_seconds=60)
    token, _ = foreign.issue_access(user_id=claims["sub"], username="target", display_name="t")
    auth.expect_error(await _me(auth, token), 401, "invalid_token")


async def test_hs256_with_the_public_key_as_secret_is_refused(auth: AuthHarness) -> None:
    header, claims = await _claims(auth)
    jwk = (await auth.client.get("/.well-known/jwks.json")).json()["keys"][0]
    for secret in (jwk["x"].encode(), json.dumps(jwk).encode()):
        body = f"{_b64({'alg': 'HS256', 'typ': 'JWT', 'kid': header['kid']})}.{_b64(claims)}"
        import hashlib
        import hmac

        sig = hmac.new(secret, body.encode(), hashlib.sha256).digest()
        forged = body + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()
        auth.expect_error(await _me(auth, forged), 401, "invalid_token")


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"exp": int(time.time()) - 120, "iat": int(time.time()) - 1000}, "token_expired"),
        ({"aud": "someone-else"}, "invalid_token"),
        ({"iss": "evil-auth"}, "invalid_token"),
        ({"typ": "refresh"}, "invalid_token"),
        ({"typ": None}, "invalid_token"),
    ],
)
async def test_wrong_claims_signed_with_our_key_are_refused(
    auth: AuthHarness, signing_key_pem: bytes, change: dict[str, Any], code: str
) -> None:
    header, claims = await _claims(auth)
    claims.update(change)
    claims = {k: v for k, v in claims.items() if v is not None}
    key = load_private_key(signing_key_pem)
    token = jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": header["kid"]})
    auth.expect_error(await _me(auth, token), 401, code)


async def test_an_expired_token_from_the_signer_is_refused(auth: AuthHarness) -> None:
    _, claims = await _claims(auth)
    token, _ = auth.signer.issue_access(
        user_id=claims["sub"], username="target", display_name="t", ttl_seconds=-120
    )
    auth.expect_error(await _me(auth, token), 401, "token_expired")


async def test_a_refresh_token_is_not_an_access_token(auth: AuthHarness) -> None:
    await auth.register("target")
    refresh = (await auth.login("target"))["refresh_token"]
    auth.expect_error(await _me(auth, refresh), 401, "invalid_token")


async def test_tampered_payload_is_refused(auth: AuthHarness) -> None:
    await auth.register("target")
    await auth.register("other")
    token = (await auth.login("target"))["access_token"]
    other_id = (await auth.login("other"))["user"]["id"]
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = other_id
    claims["roles"] = ["admin"]
    auth.expect_error(await _me(auth, f"{head}.{_b64(claims)}.{sig}"), 401, "invalid_token")


async def test_token_of_a_user_that_does_not_exist(auth: AuthHarness) -> None:
    token, _ = auth.signer.issue_access(
        user_id=uuid.uuid4().hex[:24], username="ghost", display_name="Ghost"
    )
    auth.expect_error(await _me(auth, token), 401, "invalid_token")


def test_jwks_never_contains_private_material(signing_key_pem: bytes) -> None:
    key = load_private_key(signing_key_pem)
    private_raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    signer = TokenSigner(key, issuer="i", audience="a", access_ttl_seconds=60)
    jwks = json.dumps(signer.jwks())
    assert base64.urlsafe_b64encode(private_raw).rstrip(b"=").decode() not in jwks
    assert '"d"' not in jwks
