"""The public REST API as the chaos run uses it: users, rooms, history pages, through
whichever gateway answers."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

# The chaos users' password: throwaway accounts on a throwaway stack.
PASSWORD = "correct horse battery staple"  # noqa: S105
# REST calls of the run (register, login, join, history pages) under a loaded machine.
HTTP_TIMEOUT_SECONDS = 30.0
# A history page: the largest the API serves.
PAGE_LIMIT = 100


class Unavailable(Exception):
    """A REST call that kept failing with a retryable answer (503, 429, no connection)."""


class Api:
    """The public REST API through whichever gateway answers, as named users (logged in
    again when their access token expires)."""

    def __init__(self, base_urls: list[str]) -> None:
        self.bases = base_urls
        self.http = httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS)
        self.tokens: dict[str, str] = {}

    async def call(
        self, method: str, path: str, user: str | None = None, *, attempts: int = 20, **kw: Any
    ) -> Any:
        last: str = ""
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
            headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
            base = self.bases[attempt % len(self.bases)]
            try:
                r = await self.http.request(method, base + path, headers=headers, **kw)
            except httpx.HTTPError as exc:
                last = repr(exc)
                continue
            if r.status_code < 300:
                return r.json() if r.content else None
            if r.status_code == 401 and user is not None:
                last = r.text
                await self.login(user)
                continue
            if r.status_code not in (429, 502, 503):
                raise AssertionError(f"{method} {path}: {r.status_code} {r.text}")
            last = f"{r.status_code} {r.text}"
        raise Unavailable(f"{method} {path} kept failing: {last}")

    async def user(self, username: str) -> str:
        body = {"username": username, "password": PASSWORD}
        await self.call("POST", "/v1/auth/register", json=body)
        return await self.login(username)

    async def login(self, username: str) -> str:
        body = await self.call(
            "POST", "/v1/auth/login", json={"username": username, "password": PASSWORD}
        )
        self.tokens[username] = str(body["access_token"])
        return self.tokens[username]

    async def close(self) -> None:
        await self.http.aclose()

    async def history_head(self, user: str, room: str) -> int:
        """The newest seq history lists for the room (0 while it cannot answer)."""
        try:
            page = await self.call(
                "GET",
                f"/v1/rooms/{room}/messages",
                user,
                attempts=len(self.bases),  # once through each gateway: one may be down
                params={"limit": 1},
            )
        except Unavailable:
            return 0
        items = page["items"]
        return int(items[0]["seq"]) if items else 0

    async def page_down(self, user: str, room: str, floor: int) -> list[tuple[int, str]]:
        """(seq, client_id) of the room's listed messages above ``floor``, newest first."""
        items: list[tuple[int, str]] = []
        before: int | None = None
        while True:
            params: dict[str, int] = {"limit": PAGE_LIMIT}
            if before is not None:
                params["before"] = before
            page = await self.call(
                "GET", f"/v1/rooms/{room}/messages", user, attempts=len(self.bases), params=params
            )
            for item in page["items"]:
                content = str(item.get("body", {}).get("content", ""))
                items.append((int(item["seq"]), content.split(" ", 1)[0]))
            before = page["next_before"]
            if before is None or before <= floor:
                return [item for item in items if item[0] > floor]
