"""Fetching auth's JWKS over HTTP: the one fetcher every verifying service uses.

:class:`~roomcast.common.tokens.TokenVerifier` decides *when* to fetch (TTL, unknown
kid, stale-if-error, negative cache); this decides *how*: one kept-alive HTTP client,
and one request in flight shared by every caller, so a burst of verifications after a
start (hundreds of sockets authenticating at once) costs one request to auth.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import httpx

from roomcast.common.errors import DependencyUnavailable

# JWKS request timeout: auth answers from memory, so 3 s rides out a brief hiccup while
# bounding how long verifications queue behind a fetch to an unreachable auth.
FETCH_TIMEOUT_SECONDS = 3.0


class HttpJwksFetcher:
    """``await fetcher()`` returns the JWKS document or raises
    :class:`DependencyUnavailable`."""

    def __init__(self, url: str, *, timeout: float = FETCH_TIMEOUT_SECONDS) -> None:
        self.url = url
        self._client = httpx.AsyncClient(timeout=timeout)
        self._inflight: asyncio.Task[Mapping[str, Any]] | None = None

    async def __call__(self) -> Mapping[str, Any]:
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._fetch())
        return await asyncio.shield(self._inflight)

    async def _fetch(self) -> Mapping[str, Any]:
        try:
            response = await self._client.get(self.url)
            response.raise_for_status()
            data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise DependencyUnavailable(f"cannot fetch JWKS: {exc}") from exc
        if not isinstance(data, Mapping):
            raise DependencyUnavailable("JWKS is not a JSON object")
        return data

    async def close(self) -> None:
        await self._client.aclose()
