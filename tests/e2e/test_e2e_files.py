"""File messages through the whole stack (two gateways, rooms, history on SecantusDB's
GridFS, real NATS): upload on one gateway, share with a ``file`` send, download on the
other by a member; refused for a non-member and once the message is deleted; ranges;
a resumed subscription replays the file message once."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest
from e2e_helpers import eventually, new_user
from test_e2e_receipts import Raw

from roomcast.client import ApiError
from roomcast.testing.stack import Stack


async def test_files_upload_share_download_across_gateways(
    e2e_stack: Stack, tmp_path: Path
) -> None:
    url_a, url_b = e2e_stack.gateway_urls
    alice, bob, eve = (
        await new_user(url_a, "alice"),
        await new_user(url_b, "bob"),
        await new_user(url_b, "eve"),
    )
    room = (await alice.create_room("files", visibility="public"))["id"]
    await bob.join_room(room)
    data = os.urandom(300_000)
    path = tmp_path / "report.pdf"
    path.write_bytes(data)

    file = await alice.upload_file(room, path, content_type="application/pdf")
    assert file == {
        "id": file["id"],
        "name": "report.pdf",
        "size": len(data),
        "content_type": "application/pdf",
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    # A non-member cannot upload into the room.
    with pytest.raises(ApiError) as refused:
        await eve.upload_file(room, path)
    assert refused.value.status in (403, 404)

    ra, rb = await Raw.open(url_a, alice), await Raw.open(url_b, bob)
    try:
        await rb.subscribe(room)
        # Bob cannot share Alice's file: only its uploader can.
        cid = uuid.uuid4().hex
        await rb.send(
            {
                "type": "send",
                "room": room,
                "client_id": cid,
                "body": {"type": "file", "file_id": file["id"]},
            }
        )
        error = await rb.expect(lambda f: f.get("ref") == cid or f.get("client_id") == cid)
        assert error["type"] == "error"
        assert error["code"] == "file_not_found"

        cid = uuid.uuid4().hex
        await ra.send(
            {
                "type": "send",
                "room": room,
                "client_id": cid,
                "body": {"type": "file", "file_id": file["id"], "caption": "the report"},
            }
        )
        ack = await ra.expect(
            lambda f: f["type"] in ("ack", "error") and cid in (f.get("client_id"), f.get("ref"))
        )
        assert ack["type"] == "ack", ack
        live = await rb.expect(lambda f: f["type"] == "message" and f["seq"] == ack["seq"])
        assert live["body"] == {"type": "file", "file": file, "caption": "the report"}

        # Bob, on the other gateway, downloads it; a range; Eve gets 404.
        # The share is checked against history's stored messages, which trail the
        # live path by one batch window (docs/files.md).
        async def shared() -> bool:
            try:
                return await bob.download_file(file["id"]) == data
            except ApiError as exc:
                if exc.status != 404:
                    raise
                return False

        await eventually(shared, "the shared file downloadable on the other gateway")
        assert await bob.download_file(file["id"], start=1000, end=1999) == data[1000:2000]
        with pytest.raises(ApiError) as hidden:
            await eve.download_file(file["id"])
        assert hidden.value.status == 404

        # A resumed subscription replays the file message exactly once.
        await rb.send({"type": "unsubscribe", "room": room})
        start = len(rb.frames)
        await rb.send({"type": "subscribe", "room": room, "since": ack["seq"] - 1})
        await rb.expect(lambda f: f["type"] == "subscribed" and f["room"] == room, start)
        await rb.expect(lambda f: f["type"] == "message" and f["seq"] == ack["seq"], start)
        mark = uuid.uuid4().hex
        await ra.send(
            {
                "type": "send",
                "room": room,
                "client_id": mark,
                "body": {"type": "text", "content": "after"},
            }
        )
        await rb.expect(
            lambda f: f["type"] == "message" and f.get("body", {}).get("content") == "after", start
        )
        replayed = [
            f for f in rb.frames[start:] if f["type"] == "message" and f["seq"] == ack["seq"]
        ]
        assert len(replayed) == 1

        # Deleting the message takes the file away from everyone.
        assert (await ra.change("delete", room, ack["seq"]))["type"] == "ack"

        async def gone() -> bool:
            try:
                await bob.download_file(file["id"])
            except ApiError as exc:
                return exc.status == 404
            return False

        await eventually(gone, "the deleted message's file refused")
    finally:
        await ra.close()
        await rb.close()
        for http in (alice, bob, eve):
            await http.aclose()
