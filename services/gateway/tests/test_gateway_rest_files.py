"""File upload and download through the gateway's REST edge, relayed to the REAL
history process: the edge's own size limit, and the download's headers relayed."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import nats
import orjson
from test_gateway_rest_kit import (
    Gateway,
    RestStack,
    assert_error,
    bearer,
    gateway_opener,
)

from roomcast.common.chatstream import StreamSettings, ensure_chat_stream
from roomcast.common.subjects import room_subject
from roomcast.testing.polling import eventually

IssueToken = Any

# The module's stack (conftest.py) runs history too.
REST_STACK_HISTORY = True


async def share(stack: RestStack, room_id: str, user_id: str, file: dict[str, Any]) -> None:
    """A file message as a gateway publishes it."""
    nc = await nats.connect(stack.nats.url)
    try:
        js = nc.jetstream()
        await ensure_chat_stream(js, StreamSettings(), update=False)
        record = {
            "kind": "message",
            "room": room_id,
            "sender": {"id": user_id, "username": "owner", "display_name": "O", "avatar_url": None},
            "body": {"type": "file", "file": file},
            "sent_at": dt.datetime.now(dt.UTC).isoformat(),
            "client_id": uuid.uuid4().hex,
        }
        await js.publish(
            room_subject(room_id), orjson.dumps(record), headers={"Nats-Msg-Id": uuid.uuid4().hex}
        )
    finally:
        await nc.close()


async def test_files_through_the_edge(
    gw: Gateway, stack: RestStack, issue_token: IssueToken
) -> None:
    owner_id = uuid.uuid4().hex[:24]
    owner = issue_token(user_id=owner_id)
    room = (await gw.create_room(owner, name="files"))["id"]
    upload_url = f"/v1/rooms/{room}/files"
    data = b"<svg onload=alert(1)>" * 100

    # The edge refuses a body declaring more than the file limit plus the multipart
    # framing allowance (80 KiB), before relaying a byte of it.
    async with gateway_opener(stack)(files_max_bytes=1000, max_body_bytes=10**6) as small:
        big = b"x" * (1000 + 81 * 1024)
        too_big = await small.client.post(
            upload_url, headers=bearer(owner), files={"file": ("a.bin", big, "text/plain")}
        )
        assert_error(too_big, 413, "file_too_large")

    assert_error(await gw.client.post(upload_url, files={"file": ("a", b"x")}), 401)
    uploaded = await gw.client.post(
        upload_url, headers=bearer(owner), files={"file": ("a.svg", data, "image/svg+xml")}
    )
    assert uploaded.status_code == 201, uploaded.text
    file = uploaded.json()["file"]
    assert file["size"] == len(data)

    url = f"/v1/files/{file['id']}"
    assert_error(await gw.client.get(url, headers=bearer(owner)), 404, "file_not_found")
    assert_error(await gw.client.get("/v1/files/not-a-file-id", headers=bearer(owner)), 400)
    await share(stack, room, owner_id, file)

    async def shared() -> bool:
        return (await gw.client.get(url, headers=bearer(owner))).status_code == 200

    await eventually(shared, within=30, what="history to store the file message")
    response = await gw.client.get(url, headers=bearer(owner))
    assert response.content == data
    assert response.headers["content-type"] == "image/svg+xml"
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"].startswith("sandbox")
    part = await gw.client.get(url, headers={**bearer(owner), "Range": "bytes=0-3"})
    assert part.status_code == 206
    assert part.content == data[:4]
    beyond = await gw.client.get(url, headers={**bearer(owner), "Range": "bytes=999999-"})
    assert_error(beyond, 416, "range_not_satisfiable")
    assert beyond.headers["content-range"] == f"bytes */{len(data)}"
