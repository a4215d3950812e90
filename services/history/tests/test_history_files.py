"""Files in a real history process over real MongoDB (GridFS): upload limits and
streaming, who may download, ranges, and the collection of unshared files."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from pymongo import AsyncMongoClient

from roomcast.history.files import FileCatalog, GridFSBlobStore
from roomcast.history.filesgc import FileCollector
from roomcast.history.filesupload import sanitise_name
from roomcast.testing.fakes import FakeRooms

if TYPE_CHECKING:
    from conftest import Kit, Publisher


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
) -> None:
    room, alice, bob, eve = kit.oid(), kit.oid(), kit.oid(), kit.oid()
    fake_rooms.add_member(room, alice)
    fake_rooms.add_member(room, bob)
    history = await start_history()
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
    tmp_path: Path,
) -> None:
    room, alice = kit.oid(), kit.oid()
    fake_rooms.add_member(room, alice)
    limit = 48 * 1024 * 1024
    history = await start_history(files_max_bytes=str(limit))
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


async def test_unshared_files_are_collected_after_the_grace_period(
    mongo: AsyncMongoClient[dict[str, Any]],
    mongo_db_name: str,
    kit: type[Kit],
) -> None:
    catalog = FileCatalog(mongo, mongo_db_name)
    await catalog.ensure_indexes()
    blobs = GridFSBlobStore(mongo, mongo_db_name)
    from roomcast.history.files import FileMeta

    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    room = kit.oid()
    ids = []
    for i in range(5):
        file_id = kit.oid()
        ids.append(file_id)

        async def chunks() -> AsyncIterator[bytes]:
            yield b"x" * 1000

        await blobs.put(file_id, chunks())
        await catalog.add(FileMeta(file_id, room, "u", f"f{i}", 1000, "text/plain", "0", old))
    # ids[0] is shared by a live message, ids[1] only by a deleted one.
    await catalog.messages.insert_many(
        [
            {"_id": 1, "room_id": room, "body": {"type": "file", "file": {"id": ids[0]}}},
            {
                "_id": 2,
                "room_id": room,
                "deleted": True,
                "body": {"type": "file", "file": {"id": ids[1]}},
            },
        ]
    )
    collector = FileCollector(catalog, blobs, grace_seconds=3600, batch=2, interval_seconds=60)
    assert await collector.collect_once() == 1  # bounded: 2 examined, one of them shared
    total = 1
    while (removed := await collector.collect_once()) > 0:
        total += removed
    assert total == 4
    left = [d["_id"] async for d in catalog.files.find({}, {"_id": 1})]
    assert left == [ids[0]]
    assert [b async for b in blobs.read(ids[0], 0, 999)] == [b"x" * 1000]
    assert await mongo[mongo_db_name]["blobs.files"].count_documents({}) == 1

    fresh = FileCollector(catalog, blobs, grace_seconds=3 * 3600, batch=10, interval_seconds=60)
    await catalog.messages.delete_many({})
    assert await fresh.collect_once() == 0  # within its grace period: kept


def test_names_are_sanitised() -> None:
    assert sanitise_name("C:\\Users\\me\\photo.png") == "photo.png"
    assert sanitise_name("a\u202eb\x00c\r\n.txt") == "abc.txt"
    assert sanitise_name("../..") == "file"
    assert len(sanitise_name("é" * 1000)) == 255
