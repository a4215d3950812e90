"""The check before a ``file`` send: history confirms that the sender uploaded the
file into that room and answers its metadata, which the stored message carries.

history is asked with the sender's own token (``GET /v1/rooms/{id}/files/{file_id}``),
so it applies its own rules; a positive answer is cached briefly, since a file's
metadata never changes and a client may share one file in a few messages.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
from cachetools import TTLCache

from roomcast.common.tokens import AccessClaims
from roomcast.gateway.errors import FileNotShareable, Unavailable

# history answers from one indexed lookup in about a millisecond; 2 s means it is
# overloaded or gone, and the send is refused as unavailable (the client retries).
HISTORY_TIMEOUT_SECONDS = 2.0
# A file's metadata is immutable; a minute saves history the lookup when a file is
# shared again, and a deleted file's stale entry only lets a message point at a file
# nobody can download.
CACHE_SECONDS = 60.0
# (user, room, file) answers kept, about 300 bytes each.
CACHE_ENTRIES = 10_000


class FileShares:
    def __init__(self, history_url: str) -> None:
        self.url = history_url.rstrip("/")
        self._http: httpx.AsyncClient | None = None
        self._cache: TTLCache[tuple[str, str, str], dict[str, Any]] = TTLCache(
            CACHE_ENTRIES, CACHE_SECONDS, timer=time.monotonic
        )

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=HISTORY_TIMEOUT_SECONDS, trust_env=False)
        return self._http

    async def metadata(self, claims: AccessClaims, room: str, file_id: str) -> dict[str, Any]:
        """The file's ``{id, name, size, content_type, sha256}``, or FileNotShareable."""
        key = (claims.user_id, room, file_id)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        try:
            response = await self._client().get(
                f"{self.url}/v1/rooms/{room}/files/{file_id}",
                headers={"authorization": f"Bearer {claims.raw}"},
            )
        except httpx.HTTPError as exc:
            raise Unavailable("the history service is unavailable") from exc
        if response.status_code in (403, 404):
            raise FileNotShareable("no such file of yours in this room")
        if response.status_code != 200:
            raise Unavailable(f"history answered {response.status_code}")
        file = orjson.loads(response.content).get("file")
        if not isinstance(file, dict):
            raise Unavailable("history answered without a file")
        self._cache[key] = file
        return file

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
