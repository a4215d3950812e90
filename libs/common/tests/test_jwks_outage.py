"""An auth outage does not log everybody out: while JWKS refetches fail the verifier
keeps the keys it has (bounded stale-while-error), asks auth again at most once per
back-off interval (negative cache), and refuses with 503 only past the bound. Real HTTP
against a JWKS server that is stopped; the verifier's clock is simulated (no waiting)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from roomcast.common.errors import DependencyUnavailable, Unauthenticated
from roomcast.common.jwks import HttpJwksFetcher
from roomcast.common.tokens import (
    JWKS_FAILURE_BACKOFF_SECONDS,
    JWKS_TTL_SECONDS,
    TokenSigner,
    TokenVerifier,
)
from roomcast.testing.fakes import JwksServer

ISS, AUD = "roomcast-auth", "roomcast"


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


class CountingFetcher:
    """The shared HTTP fetcher, counting the requests it makes and how many failed."""

    def __init__(self, url: str) -> None:
        self.inner = HttpJwksFetcher(url, timeout=0.5)
        self.calls = 0
        self.failures = 0

    async def __call__(self) -> Mapping[str, Any]:
        self.calls += 1
        try:
            return await self.inner()
        except DependencyUnavailable:
            self.failures += 1
            raise


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner(
        Ed25519PrivateKey.generate(), issuer=ISS, audience=AUD, access_ttl_seconds=900
    )


async def test_ten_minute_auth_outage_keeps_valid_tokens_working(signer: TokenSigner) -> None:
    server = JwksServer(signer.jwks())
    server.start()
    fetcher = CountingFetcher(server.url)
    clock = Clock()
    verifier = TokenVerifier(fetcher, issuer=ISS, audience=AUD, clock=clock)
    token, _ = signer.issue_access(user_id="a" * 24, username="alice", display_name="Alice")
    try:
        assert (await verifier.verify(token)).username == "alice"
        assert fetcher.calls == 1
        server.stop()  # auth goes down

        # Ten simulated minutes, well past the 5-minute JWKS TTL, a verification per
        # second: every one succeeds from the cached keys.
        for _ in range(600):
            clock.now += 1
            assert (await verifier.verify(token)).user_id == "a" * 24
        # The failures were negatively cached: about one request per back-off interval
        # after the TTL ran out, not one per verification.
        outage_after_ttl = 600 - JWKS_TTL_SECONDS
        assert fetcher.failures >= 1
        assert fetcher.calls - 1 <= outage_after_ttl / JWKS_FAILURE_BACKOFF_SECONDS + 1

        # A token with a key nobody knows is still refused, and tells the client to
        # retry (auth may have rotated while unreachable) rather than to log out.
        stranger = TokenSigner(
            Ed25519PrivateKey.generate(), issuer=ISS, audience=AUD, access_ttl_seconds=900
        )
        other, _ = stranger.issue_access(user_id="b" * 24, username="bob", display_name="B")
        with pytest.raises(DependencyUnavailable):
            await verifier.verify(other)
    finally:
        await fetcher.inner.close()


async def test_auth_back_after_an_outage_is_used_again(signer: TokenSigner) -> None:
    keys: dict[str, Any] = {"jwks": signer.jwks(), "up": True}
    calls = 0

    async def fetch() -> Mapping[str, Any]:
        nonlocal calls
        calls += 1
        if not keys["up"]:
            raise DependencyUnavailable("auth down")
        jwks: Mapping[str, Any] = keys["jwks"]
        return jwks

    clock = Clock()
    verifier = TokenVerifier(fetch, issuer=ISS, audience=AUD, clock=clock)
    token, _ = signer.issue_access(user_id="a" * 24, username="alice", display_name="Alice")
    await verifier.verify(token)
    keys["up"] = False
    clock.now += JWKS_TTL_SECONDS + 1
    await verifier.verify(token)
    failed_calls = calls
    # Within the back-off: no request at all.
    clock.now += JWKS_FAILURE_BACKOFF_SECONDS / 2
    await verifier.verify(token)
    assert calls == failed_calls
    # auth is back, having rotated: the old key is withdrawn, the next fetch says so.
    keys["up"] = True
    keys["jwks"] = {"keys": []}
    clock.now += JWKS_FAILURE_BACKOFF_SECONDS
    with pytest.raises(Unauthenticated):
        await verifier.verify(token)
    # The TTL refetch, then the (rate-limited) refetch for the now unknown kid.
    assert calls == failed_calls + 2


async def test_stale_keys_are_bounded(signer: TokenSigner) -> None:
    up = True

    async def fetch() -> Mapping[str, Any]:
        if not up:
            raise DependencyUnavailable("auth down")
        return signer.jwks()

    clock = Clock()
    verifier = TokenVerifier(
        fetch, issuer=ISS, audience=AUD, clock=clock, stale_if_error_seconds=3600
    )
    token, _ = signer.issue_access(user_id="a" * 24, username="alice", display_name="Alice")
    await verifier.verify(token)
    up = False
    clock.now += JWKS_TTL_SECONDS + 3600 - 1
    await verifier.verify(token)  # still within the bound
    clock.now += JWKS_FAILURE_BACKOFF_SECONDS + 2
    with pytest.raises(DependencyUnavailable):
        await verifier.verify(token)


async def test_first_fetch_failing_is_unavailable_and_negatively_cached() -> None:
    calls = 0

    async def fetch() -> Mapping[str, Any]:
        nonlocal calls
        calls += 1
        raise DependencyUnavailable("auth down")

    clock = Clock()
    verifier = TokenVerifier(fetch, issuer=ISS, audience=AUD, clock=clock)
    signer = TokenSigner(
        Ed25519PrivateKey.generate(), issuer=ISS, audience=AUD, access_ttl_seconds=900
    )
    token, _ = signer.issue_access(user_id="a" * 24, username="alice", display_name="Alice")
    for _ in range(50):
        with pytest.raises(DependencyUnavailable):
            await verifier.verify(token)
    assert calls == 1


async def test_a_hanging_refetch_does_not_hold_up_other_verifications(
    signer: TokenSigner,
) -> None:
    hang, refetching = asyncio.Event(), asyncio.Event()
    calls = 0

    async def fetch() -> Mapping[str, Any]:
        nonlocal calls
        calls += 1
        if calls > 1:
            refetching.set()
            await hang.wait()  # auth accepts the connection and never answers
            raise DependencyUnavailable("timed out")
        return signer.jwks()

    clock = Clock()
    verifier = TokenVerifier(fetch, issuer=ISS, audience=AUD, clock=clock)
    token, _ = signer.issue_access(user_id="a" * 24, username="alice", display_name="Alice")
    await verifier.verify(token)
    clock.now += JWKS_TTL_SECONDS + 1
    first = asyncio.create_task(verifier.verify(token))  # starts the refetch, waits on it
    async with asyncio.timeout(5):
        await refetching.wait()
    # Others are served from the keys at hand at once, not after the fetch timeout.
    async with asyncio.timeout(1):
        for _ in range(100):
            assert (await verifier.verify(token)).username == "alice"
    assert not first.done()
    hang.set()
    assert (await first).username == "alice"  # stale-if-error for the waiting one too
