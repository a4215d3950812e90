"""Token verification for the gateway: auth's JWKS, fetched once per burst.

``TokenVerifier`` refetches the JWKS under a lock when its copy is missing or stale,
and every waiter refetches in turn: N sockets authenticating at once after a start (or
at TTL expiry) would cost N sequential HTTP fetches (~4 s for 50 here). The fetcher
below shares one in-flight fetch and reuses its result for a second, over a kept-alive
HTTP client, so a burst costs one request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import httpx

from roomcast.common.errors import DependencyUnavailable
from roomcast.common.tokens import TokenVerifier
from roomcast.gateway.settings import Settings

# A fetched JWKS is reused for this long by refetch requests: long enough to absorb a
# burst of verifications, far below the verifier's 10 s minimum between forced refetches,
# so key rotation is not delayed.
REUSE_SECONDS = 1.0
# JWKS request timeout: auth answers from memory; 3 s rides out a brief hiccup.
FETCH_TIMEOUT_SECONDS = 3.0


class JwksFetcher:
    def __init__(self, url: str, *, timeout: float = FETCH_TIMEOUT_SECONDS) -> None:
        self.url = url
        self._client = httpx.AsyncClient(timeout=timeout)
        self._last: Mapping[str, Any] | None = None
        self._at = float("-inf")
        self._inflight: asyncio.Task[Mapping[str, Any]] | None = None

    async def __call__(self) -> Mapping[str, Any]:
        if self._last is not None and time.monotonic() - self._at < REUSE_SECONDS:
            return self._last
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._fetch())
        return await asyncio.shield(self._inflight)

    async def _fetch(self) -> Mapping[str, Any]:
        try:
            response = await self._client.get(self.url)
            response.raise_for_status()
            data: Mapping[str, Any] = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise DependencyUnavailable(f"cannot fetch JWKS: {exc}") from exc
        self._last, self._at = data, time.monotonic()
        return data

    async def close(self) -> None:
        await self._client.aclose()


def build_verifier(settings: Settings) -> tuple[TokenVerifier, JwksFetcher]:
    fetcher = JwksFetcher(settings.jwks_url)
    verifier = TokenVerifier(fetcher, issuer=settings.jwt_issuer, audience=settings.jwt_audience)
    return verifier, fetcher
