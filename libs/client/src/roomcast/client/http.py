"""``RoomcastHttp``: the REST half of the SDK (httpx.AsyncClient underneath).

It keeps the access and refresh tokens of one user. A request answered ``401
token_expired`` is retried once after refreshing the pair (single-flight: concurrent
requests share one refresh, because a refresh token can be used only once: reuse
revokes its whole family). ``access_token_provider`` hands sockets a token that is
refreshed ahead of its expiry.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO, cast
from urllib.parse import quote

import httpx
import orjson

from .errors import ApiError, Unauthorized, Unreachable, api_error
from .models import (
    AuditPage,
    Ban,
    HistoryPage,
    InboxState,
    Member,
    Mute,
    NotificationPage,
    PushRegistration,
    PushSubscriptionJSON,
    Room,
    RoomPage,
    TokenPair,
    User,
    Visibility,
)

# A request that has not completed in 10 s is treated as failed: REST calls are small and
# the gateway answers in milliseconds when healthy.
DEFAULT_TIMEOUT_SECONDS = 10.0
# Refresh an access token this long before it expires, so a socket handshake or a request
# never starts with a token that dies in flight (covers clock skew too). Longer than the
# socket's renewal leeway (30 s), so a renewing socket always gets a new token.
REFRESH_LEEWAY_SECONDS = 60.0
# Error bodies that are not our JSON envelope are quoted up to this length in exceptions.
_MAX_QUOTED_BODY = 200


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read WITHOUT verifying it (only to schedule refreshes)."""
    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error, orjson.JSONDecodeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) else None


def _error_from(response: httpx.Response) -> ApiError:
    code = f"http_{response.status_code}"
    message = response.text[:_MAX_QUOTED_BODY]
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = str(err.get("code", code))
        message = str(err.get("message", message))
    return api_error(response.status_code, code, message, response.headers.get("retry-after"))


def _unwrap(body: Any, key: str) -> Any:
    """``{"room": {...}}`` -> ``{...}``; a bare object passes through."""
    if isinstance(body, dict) and isinstance(body.get(key), dict):
        return body[key]
    return body


def _seg(value: str) -> str:
    """A path segment, percent-encoded (ids are validated by the server, never trusted)."""
    return quote(value, safe="")


class RoomcastHttp:
    """Async REST client of the Roomcast gateway API for one user."""

    def __init__(
        self,
        base_url: str,
        *,
        access_token: str | None = None,
        refresh_token: str | None = None,
        auto_refresh: bool = True,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.access_token = access_token
        self.refresh_token = refresh_token
        self.auto_refresh = auto_refresh
        self.user: User | None = None
        self._refresh_lock = asyncio.Lock()
        self._client = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> RoomcastHttp:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    # ----------------------------------------------------------------- plumbing

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        auth: bool = True,
    ) -> Any:
        """Send one request; return the decoded JSON body (None for 204); raise ApiError."""
        token = self.access_token if auth else None
        response = await self._send(method, path, json, params, token)
        if (
            response.status_code == 401
            and token is not None
            and self.auto_refresh
            and self.refresh_token is not None
        ):
            err = _error_from(response)
            if err.code == "token_expired":
                await self._refresh_after_expiry(token)
                response = await self._send(method, path, json, params, self.access_token)
        if response.status_code >= 400:
            raise _error_from(response)
        if response.status_code == 204 or not response.content:
            return None
        return orjson.loads(response.content)

    async def _send(
        self,
        method: str,
        path: str,
        json: Any,
        params: dict[str, Any] | None,
        token: str | None,
    ) -> httpx.Response:
        headers = {"accept": "application/json"}
        content: bytes | None = None
        if json is not None:
            content = orjson.dumps(json)
            headers["content-type"] = "application/json"
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        if params:
            params = {k: v for k, v in params.items() if v is not None}
        try:
            return await self._client.request(
                method, path, content=content, params=params, headers=headers
            )
        except httpx.TransportError as exc:
            raise Unreachable(f"{method} {self.base_url}{path}: {exc!r}") from exc

    async def _refresh_after_expiry(self, expired_token: str) -> None:
        async with self._refresh_lock:
            if self.access_token != expired_token:
                return  # another request refreshed meanwhile
            await self._do_refresh()

    async def _do_refresh(self) -> TokenPair:
        if self.refresh_token is None:
            raise Unauthorized(401, "no_refresh_token", "no refresh token to refresh with")

        async def rotate(refresh_token: str) -> TokenPair:
            body = await self.request(
                "POST", "/v1/auth/refresh", json={"refresh_token": refresh_token}, auth=False
            )
            return self._store_pair(body)

        # Shielded: once the server rotated the pair, a cancelled caller must not lose the
        # new refresh token (the old one is spent, and reusing it revokes the family).
        return await asyncio.shield(asyncio.ensure_future(rotate(self.refresh_token)))

    def _store_pair(self, body: Any) -> TokenPair:
        pair = cast(TokenPair, body)
        self.access_token = pair["access_token"]
        self.refresh_token = pair.get("refresh_token", self.refresh_token)
        if "user" in pair:
            self.user = pair["user"]
        return pair

    async def fresh_access_token(self) -> str:
        """The access token, refreshed first if it expires within the leeway."""
        async with self._refresh_lock:
            token = self.access_token
            if token is None:
                raise Unauthorized(401, "no_token", "not logged in")
            expiry = jwt_expiry(token)
            if (
                self.refresh_token is not None
                and expiry is not None
                and expiry - time.time() < REFRESH_LEEWAY_SECONDS
            ):
                pair = await self._do_refresh()
                token = pair["access_token"]
            return token

    @property
    def access_token_provider(self) -> Callable[[], Awaitable[str]]:
        """For ``connect(..., token=http.access_token_provider)``."""
        return self.fresh_access_token

    # --------------------------------------------------------------------- auth

    async def register(
        self,
        username: str,
        password: str,
        *,
        email: str | None = None,
        display_name: str | None = None,
    ) -> User:
        payload: dict[str, Any] = {"username": username, "password": password}
        if email is not None:
            payload["email"] = email
        if display_name is not None:
            payload["display_name"] = display_name
        body = await self.request("POST", "/v1/auth/register", json=payload, auth=False)
        return cast(User, _unwrap(body, "user"))

    async def login(self, username: str, password: str) -> TokenPair:
        """Log in and keep the token pair (and ``user``) on this client."""
        body = await self.request(
            "POST",
            "/v1/auth/login",
            json={"username": username, "password": password},
            auth=False,
        )
        return self._store_pair(body)

    async def refresh(self) -> TokenPair:
        """Rotate the token pair now."""
        async with self._refresh_lock:
            return await self._do_refresh()

    async def logout(self) -> None:
        """Revoke the refresh token and forget both tokens."""
        if self.refresh_token is not None:
            await self.request(
                "POST", "/v1/auth/logout", json={"refresh_token": self.refresh_token}, auth=False
            )
        self.access_token = None
        self.refresh_token = None

    # -------------------------------------------------------------------- users

    async def me(self) -> User:
        return cast(User, _unwrap(await self.request("GET", "/v1/users/me"), "user"))

    async def update_me(
        self, *, display_name: str | None = None, avatar_url: str | None = None
    ) -> User:
        patch = {
            k: v
            for k, v in (("display_name", display_name), ("avatar_url", avatar_url))
            if v is not None
        }
        body = await self.request("PATCH", "/v1/users/me", json=patch)
        return cast(User, _unwrap(body, "user"))

    async def get_user(self, user_id: str) -> User:
        body = await self.request("GET", f"/v1/users/{_seg(user_id)}")
        return cast(User, _unwrap(body, "user"))

    async def find_user(self, username: str) -> User:
        """The user named exactly ``username`` (case-insensitive), public profile only;
        ``NotFound`` (``user_not_found``) when nobody has that name."""
        body = await self.request("GET", "/v1/users", params={"username": username})
        return cast(User, _unwrap(body, "user"))

    # -------------------------------------------------------------------- rooms

    async def create_room(
        self, name: str, *, visibility: Visibility = "public", topic: str | None = None
    ) -> Room:
        payload: dict[str, Any] = {"name": name, "visibility": visibility}
        if topic is not None:
            payload["topic"] = topic
        return cast(Room, _unwrap(await self.request("POST", "/v1/rooms", json=payload), "room"))

    async def list_rooms(
        self, *, scope: str = "public", limit: int | None = None, cursor: str | None = None
    ) -> RoomPage:
        """One page of rooms: ``scope="public"`` (the REST default) every public room,
        ``scope="joined"`` the caller's rooms with ``unread`` and ``last_message``."""
        params = {"scope": scope, "limit": limit, "cursor": cursor}
        body = await self.request("GET", "/v1/rooms", params=params)
        return RoomPage(items=body.get("items", []), next_cursor=body.get("next_cursor"))

    async def get_room(self, room_id: str) -> Room:
        return cast(Room, _unwrap(await self.request("GET", f"/v1/rooms/{_seg(room_id)}"), "room"))

    async def update_room(
        self,
        room_id: str,
        *,
        name: str | None = None,
        topic: str | None = None,
        slow_mode_seconds: int | None = None,
        retention_days: int | None = None,
    ) -> Room:
        """Change the given fields only; ``slow_mode_seconds`` and ``retention_days``
        (0 = off) are the room's moderation policy (owner and admins)."""
        fields: tuple[tuple[str, object], ...] = (
            ("name", name),
            ("topic", topic),
            ("slow_mode_seconds", slow_mode_seconds),
            ("retention_days", retention_days),
        )
        patch = {k: v for k, v in fields if v is not None}
        body = await self.request("PATCH", f"/v1/rooms/{_seg(room_id)}", json=patch)
        return cast(Room, _unwrap(body, "room"))

    async def delete_room(self, room_id: str) -> None:
        await self.request("DELETE", f"/v1/rooms/{_seg(room_id)}")

    async def join_room(self, room_id: str, *, invite_code: str | None = None) -> Any:
        payload = {} if invite_code is None else {"invite_code": invite_code}
        return await self.request("POST", f"/v1/rooms/{_seg(room_id)}/join", json=payload)

    async def leave_room(self, room_id: str) -> None:
        await self.request("POST", f"/v1/rooms/{_seg(room_id)}/leave", json={})

    async def members(
        self, room_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> list[Member]:
        """One page of members (``user_id``, ``role``, ``joined_at``, ``username``,
        ``display_name``); the first page unless ``cursor`` is given."""
        params = {"limit": limit, "cursor": cursor}
        body = await self.request("GET", f"/v1/rooms/{_seg(room_id)}/members", params=params)
        items = body.get("items", body.get("members", [])) if isinstance(body, dict) else body
        return cast(list[Member], items)

    async def set_member_role(self, room_id: str, user_id: str, role: str) -> Member:
        path = f"/v1/rooms/{_seg(room_id)}/members/{_seg(user_id)}"
        return cast(Member, _unwrap(await self.request("PUT", path, json={"role": role}), "member"))

    async def remove_member(self, room_id: str, user_id: str) -> None:
        await self.request("DELETE", f"/v1/rooms/{_seg(room_id)}/members/{_seg(user_id)}")

    # ------------------------------------------------------------ moderation

    async def ban(self, room_id: str, user_id: str) -> Ban:
        """Ban ``user_id`` (owner and admins): removed at once, cannot join again."""
        path = f"/v1/rooms/{_seg(room_id)}/bans/{_seg(user_id)}"
        return cast(Ban, _unwrap(await self.request("PUT", path, json={}), "ban"))

    async def unban(self, room_id: str, user_id: str) -> None:
        await self.request("DELETE", f"/v1/rooms/{_seg(room_id)}/bans/{_seg(user_id)}")

    async def mute(self, room_id: str, user_id: str, until: dt.datetime | str) -> Mute:
        """Mute ``user_id`` until ``until`` (an aware datetime or an ISO 8601 string):
        they read but cannot send, edit, react or type."""
        when = until.isoformat() if isinstance(until, dt.datetime) else until
        path = f"/v1/rooms/{_seg(room_id)}/mutes/{_seg(user_id)}"
        return cast(Mute, _unwrap(await self.request("PUT", path, json={"until": when}), "mute"))

    async def unmute(self, room_id: str, user_id: str) -> None:
        await self.request("DELETE", f"/v1/rooms/{_seg(room_id)}/mutes/{_seg(user_id)}")

    async def audit(
        self, room_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> AuditPage:
        """One page of the room's audit log, newest first (owner, admins)."""
        params = {"limit": limit, "cursor": cursor}
        body = await self.request("GET", f"/v1/rooms/{_seg(room_id)}/audit", params=params)
        return AuditPage(items=body.get("items", []), next_cursor=body.get("next_cursor"))

    async def open_dm(self, user_id: str) -> Room:
        """The direct room shared with ``user_id`` (the same room every time)."""
        body = await self.request("POST", "/v1/dms", json={"user_id": user_id})
        return cast(Room, _unwrap(body, "room"))

    async def messages(
        self, room_id: str, *, before: int | None = None, limit: int | None = None
    ) -> HistoryPage:
        """One page of history, newest first; pass ``next_before`` to go further back."""
        params = {"before": before, "limit": limit}
        body = await self.request("GET", f"/v1/rooms/{_seg(room_id)}/messages", params=params)
        return HistoryPage(items=body.get("items", []), next_before=body.get("next_before"))

    async def replies(
        self, room_id: str, seq: int, *, before: int | None = None, limit: int | None = None
    ) -> HistoryPage:
        """One page of the thread of message ``seq`` (its replies), newest first."""
        params = {"before": before, "limit": limit}
        path = f"/v1/rooms/{_seg(room_id)}/messages/{int(seq)}/replies"
        body = await self.request("GET", path, params=params)
        return HistoryPage(items=body.get("items", []), next_before=body.get("next_before"))

    # -------------------------------------------------------------------- files

    async def upload_file(
        self,
        room_id: str,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        content_type: str = "application/octet-stream",
    ) -> dict[str, Any]:
        """Upload the file at ``path`` into a room (streamed from disk, docs/files.md);
        returns ``{id, name, size, content_type, sha256}``; share it with a socket send
        of ``{"type": "file", "file_id": id}``."""
        filename = name if name is not None else os.path.basename(os.fspath(path))
        with open(path, "rb") as handle:  # noqa: ASYNC230 (httpx reads it in chunks)
            response = await self._authorized(
                lambda token: self._client.post(
                    f"/v1/rooms/{_seg(room_id)}/files",
                    files={"file": (filename, handle, content_type)},
                    headers={"authorization": f"Bearer {token}"},
                ),
                rewind=handle,
            )
        if response.status_code >= 400:
            raise _error_from(response)
        return cast(dict[str, Any], orjson.loads(response.content)["file"])

    async def download_file(
        self, file_id: str, *, start: int | None = None, end: int | None = None
    ) -> bytes:
        """A shared file's bytes, or bytes ``start`` to ``end`` (inclusive) of it."""
        headers: dict[str, str] = {}
        if start is not None or end is not None:
            headers["range"] = (
                f"bytes={'' if start is None else start}-{'' if end is None else end}"
            )
        response = await self._authorized(
            lambda token: self._client.get(
                f"/v1/files/{_seg(file_id)}",
                headers={**headers, "authorization": f"Bearer {token}"},
            )
        )
        if response.status_code >= 400:
            raise _error_from(response)
        return response.content

    async def _authorized(
        self,
        call: Callable[[str], Awaitable[httpx.Response]],
        rewind: BinaryIO | None = None,
    ) -> httpx.Response:
        """``call`` with the access token, once more after a refresh if it had expired."""
        token = self.access_token
        if token is None:
            raise Unauthorized(401, "unauthenticated", "log in first")
        try:
            response = await call(token)
            if (
                response.status_code == 401
                and self.auto_refresh
                and self.refresh_token
                and _error_from(response).code == "token_expired"
            ):
                await self._refresh_after_expiry(token)
                if rewind is not None:
                    rewind.seek(0)
                assert self.access_token is not None
                response = await call(self.access_token)
        except httpx.TransportError as exc:
            raise Unreachable(f"{self.base_url}: {exc!r}") from exc
        return response

    # ------------------------------------------------------------ notifications

    async def notifications(
        self, *, cursor: str | None = None, limit: int | None = None
    ) -> NotificationPage:
        """One page of the caller's inbox (mentions, replies, DMs), newest first, with
        the unread count; pass ``next_cursor`` to go further back."""
        params = {"cursor": cursor, "limit": limit}
        body = await self.request("GET", "/v1/notifications", params=params)
        return NotificationPage(
            items=body.get("items", []),
            next_cursor=body.get("next_cursor"),
            unread=int(body.get("unread", 0)),
        )

    async def mark_notifications_read(self, up_to: int) -> InboxState:
        """Mark every notification up to the stream sequence ``up_to`` read (the read
        position never moves back: a smaller ``up_to`` leaves it where it is)."""
        body = await self.request("POST", "/v1/notifications/read", json={"up_to": up_to})
        return cast(InboxState, body)

    async def push_vapid_key(self) -> str:
        """The VAPID public key: the ``applicationServerKey`` to subscribe a browser with."""
        body = await self.request("GET", "/v1/push/vapid-key")
        return str(body["key"])

    async def register_push(self, subscription: PushSubscriptionJSON) -> PushRegistration:
        """Register a browser's ``PushSubscription.toJSON()`` for Web Push (the same
        endpoint again replaces its entry); 400 ``invalid_subscription`` when the
        endpoint is not https on a known push service or the keys are malformed."""
        body = await self.request("POST", "/v1/push/subscriptions", json=subscription)
        return cast(PushRegistration, body)

    async def unregister_push(self, endpoint: str) -> None:
        """Forget the subscription with this endpoint (no error when already gone)."""
        await self.request("DELETE", "/v1/push/subscriptions", json={"endpoint": endpoint})
