"""Users and rooms for a run, through the public REST API of the gateways.

Users are registered and logged in (or read from a users file and logged in again when
their token is missing or about to expire); rooms are created by their first member's
user and joined by the others. Requests are spread over the gateway URLs and run with
bounded concurrency; a 429 is retried after its Retry-After, a 503 or a connection
error after a short backoff.

Against a shared stack, auth's attempt limits (10 registrations or logins per 30 s per
client address by default) make creating thousands of users slow: raise them for the
test (``ROOMCAST_AUTH_REGISTER_RATE_LIMIT`` / ``ROOMCAST_AUTH_LOGIN_RATE_LIMIT``) or
reuse a users file. ``--start-stack`` raises them itself.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import itertools
import json
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from roomcast.load.plan import Layout

# In-flight REST requests: enough to hide round trips, few enough not to queue up
# behind auth's bcrypt work on a small machine.
CONCURRENCY = 32
# Attempts per request before the run gives up on 503s and connection errors.
MAX_ATTEMPTS = 30
# 429s are waited out (Retry-After) and do not count as attempts, up to this many per
# request: against auth's default limits (10 per 30 s per address) provisioning
# thousands of users is slow but must still finish.
MAX_RATE_LIMITED = 2000
# Backoff after a 503 or a connection error (doubles, capped).
BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 5.0
# A reused token must stay valid this long, else the user logs in again: a run plus
# its reconnects must not start with a token that expires midway.
MIN_TOKEN_LIFETIME_SECONDS = 300.0
REQUEST_TIMEOUT_SECONDS = 30.0


class ProvisionError(RuntimeError):
    pass


@dataclass
class UserCred:
    username: str
    password: str
    user_id: str = ""
    token: str = ""


def token_expiry(token: str) -> float:
    """The ``exp`` claim of a JWT, read without verifying it (0 if unreadable)."""
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(data.get("exp", 0))
    except (IndexError, ValueError, TypeError, AttributeError):
        return 0.0


def load_users_file(path: Path) -> list[UserCred]:
    data = json.loads(path.read_text())
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, list):
        raise ProvisionError(f"{path}: expected {{'users': [...]}}")
    out = []
    for u in users:
        if not isinstance(u, dict) or not isinstance(u.get("username"), str):
            raise ProvisionError(f"{path}: every user needs a username")
        out.append(
            UserCred(
                username=u["username"],
                password=str(u.get("password", "")),
                user_id=str(u.get("user_id", "")),
                token=str(u.get("token", "")),
            )
        )
    return out


def save_users_file(path: Path, users: Sequence[UserCred]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"users": [asdict(u) for u in users]}, out)
    tmp.replace(path)


class Rest:
    """A small REST client over several base URLs with retries."""

    def __init__(
        self,
        base_urls: Sequence[str],
        *,
        source_ip: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not base_urls:
            raise ProvisionError("no gateway URL")
        if transport is None and source_ip:
            transport = httpx.AsyncHTTPTransport(local_address=source_ip)
        self._client = httpx.AsyncClient(
            timeout=REQUEST_TIMEOUT_SECONDS,
            transport=transport,
            limits=httpx.Limits(max_connections=CONCURRENCY * 2),
        )
        self._bases = itertools.cycle([u.rstrip("/") for u in base_urls])
        self.retries = 0  # after a 503 or a connection error
        self.rate_limited = 0  # 429s waited out

    async def aclose(self) -> None:
        await self._client.aclose()

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None
    ) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        delay = BACKOFF_SECONDS
        last = ""
        attempts = limited = 0
        while attempts < MAX_ATTEMPTS and limited < MAX_RATE_LIMITED:
            url = next(self._bases) + path
            try:
                resp = await self._client.request(method, url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 429:
                    limited += 1
                    self.rate_limited += 1
                    try:
                        wait = float(resp.headers.get("retry-after", "1"))
                    except ValueError:
                        wait = 1.0
                    await asyncio.sleep(min(max(wait, 0.05), 60.0))
                    last = "HTTP 429"
                    continue
                if resp.status_code not in (502, 503, 504):
                    return resp
                last = f"HTTP {resp.status_code}"
            attempts += 1
            self.retries += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)
        raise ProvisionError(f"{method} {path}: gave up after {attempts + limited} tries ({last})")

    async def upload(self, path: str, data: bytes, *, token: str) -> httpx.Response:
        """One multipart upload (field ``file``) to the next base URL. Not retried: a
        load run counts a failed upload and skips its file message."""
        return await self._client.post(
            next(self._bases) + path,
            files={"file": ("load.txt", data, "text/plain")},
            headers={"authorization": f"Bearer {token}"},
        )


def _fail(resp: httpx.Response, what: str) -> ProvisionError:
    return ProvisionError(f"{what}: HTTP {resp.status_code} {resp.text[:300]}")


async def _gather_bounded(
    jobs: Sequence[Callable[[], Awaitable[None]]], progress: Callable[[int], None] | None
) -> None:
    sem = asyncio.Semaphore(CONCURRENCY)
    done = 0

    async def run(job: Callable[[], Awaitable[None]]) -> None:
        nonlocal done
        async with sem:
            await job()
        done += 1
        if progress is not None:
            progress(done)

    try:
        async with asyncio.TaskGroup() as tg:
            for job in jobs:
                tg.create_task(run(job))
    except ExceptionGroup as group:
        failures = group.exceptions
        if not all(isinstance(e, ProvisionError) for e in failures):
            raise
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise ProvisionError(f"{failures[0]}{more}") from None


async def register(rest: Rest, user: UserCred) -> None:
    resp = await rest.call(
        "POST", "/v1/auth/register", {"username": user.username, "password": user.password}
    )
    if resp.status_code not in (200, 201, 409):  # 409: exists already (a rerun)
        raise _fail(resp, f"register {user.username}")


async def login(rest: Rest, user: UserCred) -> None:
    resp = await rest.call(
        "POST", "/v1/auth/login", {"username": user.username, "password": user.password}
    )
    if resp.status_code != 200:
        raise _fail(resp, f"login {user.username}")
    data = resp.json()
    user.token = data["access_token"]
    user.user_id = data["user"]["id"]


async def provision_users(
    rest: Rest,
    count: int,
    *,
    users_file: Path | None = None,
    prefix: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[UserCred]:
    users: list[UserCred] = []
    if users_file is not None and users_file.exists():  # noqa: ASYNC240 (once, small)
        users = load_users_file(users_file)[:count]
    tag = prefix or f"ld{secrets.token_hex(3)}"
    fresh = [UserCred(f"{tag}_{i}", secrets.token_urlsafe(12)) for i in range(len(users), count)]

    def step(label: str, total: int) -> Callable[[int], None] | None:
        return None if progress is None else (lambda n: progress(label, n, total))

    await _gather_bounded(
        [functools.partial(register, rest, u) for u in fresh], step("registering users", len(fresh))
    )
    users.extend(fresh)
    await refresh_tokens(rest, users, progress=step)
    if users_file is not None:
        save_users_file(users_file, users)
    return users


async def refresh_tokens(
    rest: Rest,
    users: Sequence[UserCred],
    *,
    progress: Callable[[str, int], Callable[[int], None] | None] | None = None,
) -> None:
    """Log in again every user without a token valid for MIN_TOKEN_LIFETIME_SECONDS
    more (a users file's, or a rate ladder's next step on the same users)."""
    deadline = time.time() + MIN_TOKEN_LIFETIME_SECONDS
    stale = [u for u in users if not u.token or not u.user_id or token_expiry(u.token) < deadline]
    if any(not u.password for u in stale):
        raise ProvisionError("users file: a user without a valid token needs a password")
    await _gather_bounded(
        [functools.partial(login, rest, u) for u in stale],
        None if progress is None else progress("logging in", len(stale)),
    )


async def create_room(rest: Rest, token: str, name: str) -> str:
    resp = await rest.call("POST", "/v1/rooms", {"name": name, "visibility": "public"}, token)
    if resp.status_code not in (200, 201):
        raise _fail(resp, f"create room {name}")
    return str(resp.json()["room"]["id"])


async def set_slow_mode(rest: Rest, token: str, room_id: str, seconds: int) -> None:
    resp = await rest.call("PATCH", f"/v1/rooms/{room_id}", {"slow_mode_seconds": seconds}, token)
    if resp.status_code != 200:
        raise _fail(resp, f"slow mode of room {room_id}")


async def join_room(rest: Rest, token: str, room_id: str) -> None:
    resp = await rest.call("POST", f"/v1/rooms/{room_id}/join", {}, token)
    if resp.status_code not in (200, 201, 204, 409):  # 409: already a member
        raise _fail(resp, f"join room {room_id}")


async def provision_rooms(
    rest: Rest,
    layout: Layout,
    users: Sequence[UserCred],
    *,
    label: str,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[str]:
    room_ids = [""] * len(layout.rooms)

    async def make(i: int) -> None:
        token = users[layout.creator(i)].token
        room_ids[i] = await create_room(rest, token, f"{label} {i}")
        if layout.rooms[i].slow_mode_seconds:
            await set_slow_mode(rest, token, room_ids[i], layout.rooms[i].slow_mode_seconds)

    def step(name: str, total: int) -> Callable[[int], None] | None:
        return None if progress is None else (lambda n: progress(name, n, total))

    await _gather_bounded(
        [functools.partial(make, i) for i in range(len(layout.rooms))],
        step("creating rooms", len(layout.rooms)),
    )
    joins = layout.joins()
    await _gather_bounded(
        [functools.partial(join_room, rest, users[u].token, room_ids[r]) for u, r in joins],
        step("joining rooms", len(joins)),
    )
    return room_ids
