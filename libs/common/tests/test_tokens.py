"""Token verification: everything a forged or stale token might try is refused."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key

from roomcast.common.errors import Unauthenticated
from roomcast.common.tokens import TokenSigner, TokenVerifier

ISS, AUD = "roomcast-auth", "roomcast"


def make_signer(key: Ed25519PrivateKey | None = None) -> TokenSigner:
    return TokenSigner(
        key or Ed25519PrivateKey.generate(), issuer=ISS, audience=AUD, access_ttl_seconds=900
    )


def claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {
        "iss": ISS,
        "aud": AUD,
        "sub": "a" * 24,
        "typ": "access",
        "iat": now,
        "exp": now + 600,
        "jti": "j1",
        "username": "alice",
    }
    base.update(overrides)
    return base


async def test_valid_token_round_trips() -> None:
    signer = make_signer()
    token, ttl = signer.issue_access(
        user_id="a" * 24, username="alice", display_name="Alice", roles=("admin",)
    )
    verified = await TokenVerifier.from_jwks(signer.jwks(), issuer=ISS, audience=AUD).verify(token)
    assert verified.user_id == "a" * 24
    assert verified.username == "alice"
    assert verified.display_name == "Alice"
    assert verified.is_global_admin
    assert ttl == 900


def _unsigned(payload: dict[str, object], header: dict[str, object]) -> str:
    def enc(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{enc(header)}.{enc(payload)}."


@pytest.mark.parametrize(
    ("forge", "code"),
    [
        ("alg_none", "invalid_token"),
        ("rs256_other_key", "invalid_token"),
        ("other_ed25519_key_same_kid", "invalid_token"),
        ("expired", "token_expired"),
        ("wrong_audience", "invalid_token"),
        ("wrong_issuer", "invalid_token"),
        ("refresh_type", "invalid_token"),
        ("no_kid", "invalid_token"),
        ("garbage", "invalid_token"),
    ],
)
async def test_forged_and_stale_tokens_are_refused(forge: str, code: str) -> None:
    key = Ed25519PrivateKey.generate()
    signer = make_signer(key)
    kid = signer.kid
    verifier = TokenVerifier.from_jwks(signer.jwks(), issuer=ISS, audience=AUD)
    header = {"kid": kid}
    token: str
    if forge == "alg_none":
        token = _unsigned(claims(), {"alg": "none", "typ": "JWT", "kid": kid})
    elif forge == "rs256_other_key":
        rsa = generate_private_key(public_exponent=65537, key_size=2048)
        token = jwt.encode(claims(), rsa, algorithm="RS256", headers=header)
    elif forge == "other_ed25519_key_same_kid":
        token = jwt.encode(
            claims(), Ed25519PrivateKey.generate(), algorithm="EdDSA", headers=header
        )
    elif forge == "expired":
        token = jwt.encode(
            claims(exp=int(time.time()) - 120), key, algorithm="EdDSA", headers=header
        )
    elif forge == "wrong_audience":
        token = jwt.encode(claims(aud="other"), key, algorithm="EdDSA", headers=header)
    elif forge == "wrong_issuer":
        token = jwt.encode(claims(iss="evil"), key, algorithm="EdDSA", headers=header)
    elif forge == "refresh_type":
        token = jwt.encode(claims(typ="refresh"), key, algorithm="EdDSA", headers=header)
    elif forge == "no_kid":
        token = jwt.encode(claims(), key, algorithm="EdDSA")
    else:
        token = "not.a.token"
    with pytest.raises(Unauthenticated) as info:
        await verifier.verify(token)
    assert info.value.code == code


def _hs256(payload: dict[str, object], header: dict[str, object], secret: bytes) -> str:
    """An HS256 JWT signed by hand: PyJWT refuses to use a public key as an HMAC
    secret, which is exactly what a key-confusion attacker does anyway."""

    def enc(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{enc(json.dumps(header).encode())}.{enc(json.dumps(payload).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{enc(signature)}"


@pytest.mark.parametrize("secret_form", ["pem", "pem_no_newline", "raw", "jwk_json", "jwk_x"])
async def test_hs256_signed_with_the_public_key_is_refused(secret_form: str) -> None:
    """Key confusion: an attacker signs HS256 using the published public key (as PEM, as
    raw bytes, as the JWK) as the HMAC secret. A verifier that let the token choose the
    algorithm would check that HMAC with the same public key and accept it."""
    key = Ed25519PrivateKey.generate()
    signer = make_signer(key)
    jwk = signer.jwks()["keys"][0]
    public = key.public_key()
    secrets = {
        "pem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "raw": public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        "jwk_json": json.dumps(jwk).encode(),
        "jwk_x": str(jwk["x"]).encode(),
    }
    secrets["pem_no_newline"] = secrets["pem"].rstrip(b"\n")
    secret = secrets[secret_form]
    token = _hs256(claims(), {"alg": "HS256", "typ": "JWT", "kid": signer.kid}, secret)
    # The forgery is a real HS256 token under that secret, not a malformed string.
    signing_input, _, signature = token.rpartition(".")
    expected = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)) == expected
    verifier = TokenVerifier.from_jwks(signer.jwks(), issuer=ISS, audience=AUD)
    with pytest.raises(Unauthenticated) as info:
        await verifier.verify(token)
    assert info.value.code == "invalid_token"


async def test_unknown_kid_refetches_jwks_but_rate_limited() -> None:
    old, new = make_signer(), make_signer()
    published = {"jwks": old.jwks()}
    fetches = 0
    now = [1000.0]

    async def fetch() -> dict[str, object]:
        nonlocal fetches
        fetches += 1
        return published["jwks"]

    verifier = TokenVerifier(fetch, issuer=ISS, audience=AUD, clock=lambda: now[0])
    old_token, _ = old.issue_access(user_id="b" * 24, username="bob", display_name="Bob")
    new_token, _ = new.issue_access(user_id="b" * 24, username="bob", display_name="Bob")
    await verifier.verify(old_token)
    assert fetches == 1

    # auth rotated: the new kid is unknown until a refetch
    published["jwks"] = {"keys": old.jwks()["keys"] + new.jwks()["keys"]}
    await verifier.verify(new_token)
    assert fetches == 2

    # a flood of unknown kids within the interval costs no further fetch
    stranger, _ = make_signer().issue_access(user_id="c" * 24, username="eve", display_name="E")
    for _ in range(5):
        with pytest.raises(Unauthenticated):
            await verifier.verify(stranger)
    assert fetches == 2
    now[0] += 11
    with pytest.raises(Unauthenticated):
        await verifier.verify(stranger)
    assert fetches == 3


async def test_concurrent_verifications_share_one_jwks_fetch() -> None:
    signer = make_signer()
    fetches = 0
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_fetch() -> dict[str, object]:
        nonlocal fetches
        fetches += 1
        started.set()
        await release.wait()
        return signer.jwks()

    verifier = TokenVerifier(slow_fetch, issuer=ISS, audience=AUD)
    token, _ = signer.issue_access(user_id="d" * 24, username="dan", display_name="Dan")
    waiting = [asyncio.create_task(verifier.verify(token)) for _ in range(50)]
    await started.wait()
    release.set()
    results = await asyncio.gather(*waiting)
    assert {r.user_id for r in results} == {"d" * 24}
    assert fetches == 1
