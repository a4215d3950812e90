"""``POST /v1/rooms/{id}/join`` with odd invite codes, through the gateway to the REAL
auth and rooms processes: a wrong code of any characters is 404 exactly like a missing
room (never 503, which would tell a private room from a missing one), a value of the
wrong type is 400, and a kick makes the kicked member's code useless."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from test_gateway_rest_kit import (
    Gateway,
    assert_error,
    bearer,
    new_id,
)

from roomcast.gateway.rest.models import MAX_INVITE_CODE_CHARS

# Odd codes tried per run; each costs two joins through the gateway.
MAX_CODE_EXAMPLES = 50


async def join(gw: Gateway, room_id: str, token: str, body: Any) -> httpx.Response:
    return await gw.client.post(f"/v1/rooms/{room_id}/join", json=body, headers=bearer(token))


CODES = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=MAX_INVITE_CODE_CHARS + 40),
    st.text(alphabet=st.characters(min_codepoint=0x80, codec="utf-8"), min_size=1, max_size=20),
    st.sampled_from(["ü" * 12, "ümlaut-code", "\u202etxt.exe", "👩‍👩‍👧", "\x00", "x" * 10_000]),
)


@pytest.fixture
def hypothesis_home(tmp_path: Path) -> Iterator[None]:
    """Hypothesis keeps caches in ./.hypothesis; keep them out of the work tree."""
    set_hypothesis_home_dir(tmp_path / "hypothesis")
    try:
        yield
    finally:
        set_hypothesis_home_dir(None)


@pytest.mark.usefixtures("hypothesis_home")
async def test_odd_invite_codes_answer_like_a_missing_room(gw: Gateway) -> None:
    owner, outsider = await gw.register(), await gw.register()
    room = await gw.create_room(owner["token"], visibility="private")
    loop = asyncio.get_running_loop()

    async def both(code: str) -> tuple[httpx.Response, httpx.Response]:
        body = {"invite_code": code}
        private = await join(gw, room["id"], outsider["token"], body)
        missing = await join(gw, new_id(), outsider["token"], body)
        return private, missing

    @hypothesis_settings(
        max_examples=MAX_CODE_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(code=CODES)
    def property_holds(code: str) -> None:
        if code == room["invite_code"]:
            return
        private, missing = asyncio.run_coroutine_threadsafe(both(code), loop).result(30)
        if len(code) > MAX_INVITE_CODE_CHARS:
            assert_error(private, 400, "invalid_request")
            assert_error(missing, 400, "invalid_request")
        else:
            assert_error(private, 404, "room_not_found")
            assert private.json() == missing.json(), code

    # Hypothesis drives the examples from a thread; the requests run on this loop.
    await asyncio.to_thread(property_holds)


@pytest.mark.parametrize("value", [12, 1.5, True, ["code"], {"code": "x"}])
async def test_an_invite_code_of_the_wrong_type_is_a_validation_error(
    gw: Gateway, value: Any
) -> None:
    owner, outsider = await gw.register(), await gw.register()
    room = await gw.create_room(owner["token"], visibility="private")
    for room_id in (room["id"], new_id()):
        response = await join(gw, room_id, outsider["token"], {"invite_code": value})
        assert_error(response, 400, "invalid_request")


async def test_a_kicked_member_cannot_come_back_with_the_old_code(gw: Gateway) -> None:
    owner, admin, kicked = await gw.register(), await gw.register(), await gw.register()
    room = await gw.create_room(owner["token"], visibility="private")
    url = f"/v1/rooms/{room['id']}"
    old_code = room["invite_code"]
    for user in (admin, kicked):
        joined = await join(gw, room["id"], user["token"], {"invite_code": old_code})
        assert joined.status_code == 200, joined.text
    promoted = await gw.client.put(
        f"{url}/members/{admin['id']}", json={"role": "admin"}, headers=bearer(owner["token"])
    )
    assert promoted.status_code == 200, promoted.text

    removed = await gw.client.delete(
        f"{url}/members/{kicked['id']}", headers=bearer(admin["token"])
    )
    assert removed.status_code == 204, removed.text

    back = await join(gw, room["id"], kicked["token"], {"invite_code": old_code})
    missing = await join(gw, new_id(), kicked["token"], {"invite_code": old_code})
    assert_error(back, 404, "room_not_found")
    assert back.json() == missing.json()
    # The owner and admins read the new code where they read the old one.
    codes = []
    for manager in (owner, admin):
        seen = await gw.client.get(url, headers=bearer(manager["token"]))
        assert seen.status_code == 200, seen.text
        codes.append(seen.json()["room"]["invite_code"])
    assert codes[0] == codes[1]
    assert codes[0] not in (None, old_code)
