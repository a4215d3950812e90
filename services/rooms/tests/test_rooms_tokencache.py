"""The verified-token cache: hits skip verification, entries end at the token's expiry
or the cache's max age (whichever is first), failures are not cached, size is bounded."""

from __future__ import annotations

import time

import pytest

from roomcast.common.errors import Unauthenticated
from roomcast.common.revocations import RevocationWatcher
from roomcast.common.tokens import AccessClaims, TokenSigner, TokenVerifier
from roomcast.rooms.tokencache import CachingVerifier


class Counting:
    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier
        self.calls = 0

    async def verify(self, token: str) -> AccessClaims:
        self.calls += 1
        return await self.verifier.verify(token)

    def check_session(self, claims: AccessClaims) -> None:
        self.verifier.check_session(claims)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def make(verifier: TokenVerifier, **kwargs: float) -> tuple[CachingVerifier, Counting, Clock]:
    counting, clock = Counting(verifier), Clock()
    cache = CachingVerifier(counting, clock=clock, **kwargs)  # type: ignore[arg-type]
    return cache, counting, clock


def token(signer: TokenSigner, ttl: int = 900, user: str = "a" * 24) -> str:
    return signer.issue_access(user_id=user, username="u", display_name="U", ttl_seconds=ttl)[0]


async def test_hit_skips_verification_until_max_age(
    verifier: TokenVerifier, signer: TokenSigner
) -> None:
    cache, counting, clock = make(verifier, max_age_seconds=60)
    tok = token(signer)
    first = await cache.verify(tok)
    assert (await cache.verify(tok)) == first
    assert counting.calls == 1
    clock.now += 61
    await cache.verify(tok)
    assert counting.calls == 2


async def test_entry_never_outlives_the_token(verifier: TokenVerifier, signer: TokenSigner) -> None:
    cache, counting, clock = make(verifier, max_age_seconds=3600)
    tok = token(signer, ttl=10)
    claims = await cache.verify(tok)
    clock.now = claims.expires_at - 0.001
    await cache.verify(tok)
    assert counting.calls == 1
    clock.now = claims.expires_at
    await cache.verify(tok)  # the real verifier (real time) still accepts it
    assert counting.calls == 2


async def test_failures_are_not_cached(verifier: TokenVerifier, signer: TokenSigner) -> None:
    cache, counting, _ = make(verifier)
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await cache.verify("garbage")
    expired = token(signer, ttl=-120)
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await cache.verify(expired)
    assert counting.calls == 4


async def test_size_is_bounded(verifier: TokenVerifier, signer: TokenSigner) -> None:
    cache, counting, _ = make(verifier, max_entries=2)
    a, b, c = (token(signer, user=ch * 24) for ch in "abc")
    for tok in (a, b, c):
        await cache.verify(tok)
    assert counting.calls == 3
    await cache.verify(c)
    await cache.verify(b)
    assert counting.calls == 3
    await cache.verify(a)  # evicted as the least recently used
    assert counting.calls == 4


async def test_a_cached_token_of_a_revoked_session_is_refused(signer: TokenSigner) -> None:
    revoked = RevocationWatcher(required=False)
    verifier = TokenVerifier.from_jwks(
        signer.jwks(), issuer=signer.issuer, audience=signer.audience
    )
    verifier.revocations = revoked
    cache, counting, _ = make(verifier)
    tok = signer.issue_access(user_id="a" * 24, username="u", display_name="U", session_id="s1")[0]
    await cache.verify(tok)
    await cache.verify(tok)
    assert counting.calls == 1  # the second came from the cache
    revoked.add("s1", "a" * 24)
    with pytest.raises(Unauthenticated) as info:
        await cache.verify(tok)
    assert info.value.code == "session_revoked"
