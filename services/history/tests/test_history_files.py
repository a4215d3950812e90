"""Files in a real history process over real MongoDB, with each blob store (GridFS,
and S3 on moto's S3-compatible server): upload limits and streaming, who may download,
and ranges. The stores themselves and the collection of unshared files:
test_history_blobstores.py."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from roomcast.history.filesupload import sanitise_name
from roomcast.testing.fakes import FakeRooms

if TYPE_CHECKING:
    from conftest import BlobStorage, Kit, Publisher, S3Server


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def upload(
    client: httpx.AsyncClient, room: str, token: str, data: bytes, name: str, ctype: str
) -> httpx.Response:
    return await client.post(
        f"/v1/rooms/{room}/files", headers=auth(token), files={"file": (name, data, ctype)}
    )


def file_message(kit: type[Kit], room: str, user: str, file: dict[str, Any]) -> dict[str, Any]:
    record = kit.message(room, user, "x")
    record["body"] = {"type": "file", "file": file, "caption": "look"}
    return record


async def test_upload_share_download_ranges_and_delete(
    start_history: Callable[..., Any],
    publisher: Publisher,
    fake_rooms: FakeRooms,
    issue_token: Callable[..., str],
    kit: type[Kit],
    blob_storage: BlobStorage,
) -> None:
    room, alice, bob, eve = kit.oid(), kit.oid(), kit.oid(), kit.oid()
    fake_rooms.add_member(room, alice)
    fake_rooms.add_member(room, bob)
    history = await start_history(**blob_storage.env)
    ta, tb, te = issue_token(user_id=alice), issue_token(user_id=bob), issue_token(user_id=eve)
    data = os.urandom(600_000)

    refused = await upload(history.client, room, te, data, "x.bin", "application/octet-stream")
    assert refused.status_code in (403, 404)
    response = await upload(
        history.client, room, ta, data, "../../etc/pa\u202ess.html", "text/html"
    )
    assert response.status_code == 201, response.text
    file = response.json()["file"]
    assert file == {
        "id": file["id"],
        "name": "pass.html",
        "size": len(data),
        "content_type": "text/html",
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    # Only the uploader sees it as theirs (the gateway's check before a send).
    own = await history.client.get(f"/v1/rooms/{room}/files/{file['id']}", headers=auth(ta))
    assert own.status_code == 200
    assert own.json() == {"file": file}
    other = await history.client.get(f"/v1/rooms/{room}/files/{file['id']}", headers=auth(tb))
    assert other.status_code == 404

    # Not shared yet: nobody can download it, not even the uploader.
    url = f"/v1/files/{file['id']}"
    assert (await history.client.get(url, headers=auth(ta))).status_code == 404

    seq = await publisher.publish(room, file_message(kit, room, alice, file))
    await history.wait_stored(kit, room, ta, seq)
    whole = await history.client.get(url, headers=auth(tb))
    assert whole.status_code == 200
    assert whole.content == data
    assert whole.headers["content-type"].startswith("text/html")
    assert whole.headers["content-disposition"].startswith('attachment; filename="pass.html"')
    assert whole.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in whole.headers["content-security-policy"]

    part = await history.client.get(url, headers={**auth(tb), "Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = await history.client.get(url, headers={**auth(tb), "Range": "bytes=-10"})
    assert tail.status_code == 206
    assert tail.content == data[-10:]
    past = await history.client.get(url, headers={**auth(tb), "Range": f"bytes={len(data)}-"})
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{len(data)}"

    # A non-member gets 404, as if the file did not exist.
    assert (await history.client.get(url, headers=auth(te))).status_code == 404

    # Deleting the message takes the file away.
    await publisher.publish(room, kit.delete(room, alice, seq))

    async def gone() -> bool:
        return (await history.client.get(url, headers=auth(tb))).status_code == 404

    await kit.eventually(gone, within=30, what="the deleted message's file refused")


async def test_size_limit_and_streaming_memory(
    start_history: Callable[..., Any],
    fake_rooms: FakeRooms,
    issue_token: Callable[..., str],
    kit: type[Kit],
    blob_storage: BlobStorage,
) -> None:
    room, alice = kit.oid(), kit.oid()
    fake_rooms.add_member(room, alice)
    limit = 48 * 1024 * 1024
    history = await start_history(files_max_bytes=str(limit), **blob_storage.env)
    token = issue_token(user_id=alice)

    too_big = await upload(
        history.client, room, token, b"\0" * (limit + 1), "big.bin", "application/octet-stream"
    )
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "file_too_large"

    pid = history.proc.proc.pid

    def rss_kib() -> int:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):  # peak resident set
                return int(line.split()[1])
        raise AssertionError("no VmHWM")

    def reset_peak() -> None:
        # The peak becomes the current resident set (Linux: "5" to clear_refs), so that
        # a peak left by startup (loading the S3 client's models) cannot hide the upload's.
        Path(f"/proc/{pid}/clear_refs").write_text("5")

    reset_peak()
    before = rss_kib()
    size = 40 * 1024 * 1024
    block = os.urandom(1024 * 1024)
    digest = hashlib.sha256()
    for _ in range(40):
        digest.update(block)

    async def body() -> AsyncIterator[bytes]:
        yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n'
        yield b"Content-Type: application/octet-stream\r\n\r\n"
        for _ in range(40):
            yield block
        yield b"\r\n--B--\r\n"

    length = size + 200
    framing = len(
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n\r\n--B--\r\n"
    )
    length = size + framing
    response = await history.client.post(
        f"/v1/rooms/{room}/files",
        headers={
            **auth(token),
            "Content-Type": "multipart/form-data; boundary=B",
            "Content-Length": str(length),
        },
        content=body(),
        timeout=60,
    )
    assert response.status_code == 201, response.text
    assert response.json()["file"]["size"] == size
    assert response.json()["file"]["sha256"] == digest.hexdigest()
    growth_mib = (rss_kib() - before) / 1024
    # A 40 MiB file passes through in chunks: the peak grows by a few MiB, not 40.
    assert growth_mib < 16, f"peak RSS grew by {growth_mib:.1f} MiB for a 40 MiB upload"
    assert await blob_storage.stored() == (1, 0)

    # A file that grows past the limit while streaming (its declared length is within
    # the framing allowance): refused, and nothing of it stays in the store (for S3,
    # the multipart upload already holds parts and is aborted).
    over = b"\1" * (limit + 32 * 1024)
    framed = (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="b.bin"\r\n\r\n'
        + over
        + b"\r\n--B--\r\n"
    )
    refused = await history.client.post(
        f"/v1/rooms/{room}/files",
        headers={**auth(token), "Content-Type": "multipart/form-data; boundary=B"},
        content=framed,
        timeout=60,
    )
    assert refused.status_code == 413, refused.text
    assert refused.json()["error"]["code"] == "file_too_large"
    assert await blob_storage.stored() == (1, 0)


def test_names_are_sanitised() -> None:
    assert sanitise_name("C:\\Users\\me\\photo.png") == "photo.png"
    assert sanitise_name("a\u202eb\x00c\r\n.txt") == "abc.txt"
    assert sanitise_name("../..") == "file"
    assert len(sanitise_name("é" * 1000)) == 255


async def test_an_s3_store_that_refuses_the_upload_answers_503(
    start_history: Callable[..., Any],
    fake_rooms: FakeRooms,
    issue_token: Callable[..., str],
    kit: type[Kit],
    s3_server: S3Server,
) -> None:
    room, alice = kit.oid(), kit.oid()
    fake_rooms.add_member(room, alice)
    # The bucket is deleted after history started (ready needs it): the store answers
    # NoSuchBucket.
    bucket = await s3_server.new_bucket()
    history = await start_history(**s3_server.history_env(bucket))
    async with s3_server.client() as s3:
        await s3.delete_bucket(Bucket=bucket)
    response = await upload(
        history.client, room, issue_token(user_id=alice), b"x" * 1000, "a.txt", "text/plain"
    )
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "dependency_unavailable"
