"""``CHAT`` deleted and created again by an operator while history runs, against a real
nats-server and a real SecantusDB: the new stream's sequences start at 1 again and
would collide with the stored ids. history refuses it (not ready, the
``roomcast_history_stream_mismatch`` gauge, an error naming the recovery) instead of
dropping the new messages as duplicates; after the documented reset it stores them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
from pymongo import AsyncMongoClient

from roomcast.common.chatstream import StreamSettings, ensure_chat_stream
from roomcast.common.subjects import STREAM_NAME
from roomcast.testing.processes import ServiceProcess

if TYPE_CHECKING:
    from conftest import Kit, Publisher

Mongo = AsyncMongoClient[dict[str, Any]]
# The consumer notices the deleted consumer within its 0.2 s info poll and a fetch
# timeout, then retries the bind with backoff (at most 5 s apart): generous on a
# loaded 2-core machine.
WITHIN_SECONDS = 30.0


async def _get(proc: ServiceProcess, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=3) as client:
        return await client.get(f"http://127.0.0.1:{proc.port}{path}")


async def _mismatch_gauge(proc: ServiceProcess) -> float | None:
    for line in (await _get(proc, "/metrics")).text.splitlines():
        if line.startswith("roomcast_history_stream_mismatch "):
            return float(line.split()[1])
    return None


async def test_a_recreated_stream_is_refused_until_the_documented_reset(
    history_proc: Callable[..., ServiceProcess],
    publisher: Publisher,
    nats_url: str,
    mongo_url: str,
    mongo_db_name: str,
    mongo: Mongo,
    kit: type[Kit],
) -> None:
    proc = history_proc(nats_url=nats_url, mongo_url=mongo_url, mongo_db=mongo_db_name)
    await asyncio.to_thread(proc.start)
    messages = mongo[mongo_db_name].messages
    room, user = kit.oid(), kit.oid()
    for i in range(3):
        await publisher.publish(room, kit.message(room, user, f"old {i}"))

    async def old_stored() -> bool:
        return await messages.count_documents({}) == 3

    await kit.eventually(old_stored, within=WITHIN_SECONDS, what="the first messages stored")
    assert await _mismatch_gauge(proc) == 0

    # The operator deletes CHAT and creates it again; new messages get sequences 1, 2.
    await publisher.js.delete_stream(STREAM_NAME)
    await ensure_chat_stream(publisher.js, StreamSettings(), update=False)
    new_seqs = [
        await publisher.publish(room, kit.message(room, user, f"new {i}")) for i in range(2)
    ]
    assert new_seqs == [1, 2]

    async def refused() -> bool:
        return (await _get(proc, "/readyz")).status_code == 503 and (
            await _mismatch_gauge(proc) == 1
        )

    await kit.eventually(refused, within=WITHIN_SECONDS, what="history not ready, gauge at 1")
    assert "roomcast.history.streamidentity reset" in proc.log_path.read_text(errors="replace")
    # Nothing of the new stream was written over or next to the old history.
    contents = sorted([d["body"]["content"] async for d in messages.find({})])
    assert contents == ["old 0", "old 1", "old 2"]

    # The documented recovery: move the old history aside, forget the identity.
    env = {
        **os.environ,
        "ROOMCAST_HISTORY_MONGO_URL": mongo_url,
        "ROOMCAST_HISTORY_MONGO_DB": mongo_db_name,
    }
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "roomcast.history.streamidentity", "reset"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "messages_before_" in result.stdout

    async def new_stored() -> bool:
        docs = [d async for d in messages.find({})]
        return sorted((d["_id"], d["body"]["content"]) for d in docs) == [
            (1, "new 0"),
            (2, "new 1"),
        ]

    await kit.eventually(new_stored, within=WITHIN_SECONDS, what="the new stream's messages")
    assert (await _get(proc, "/readyz")).status_code == 200
    assert await _mismatch_gauge(proc) == 0
    moved = [n for n in await mongo[mongo_db_name].list_collection_names() if "_before_" in n]
    assert any(n.startswith("messages_before_") for n in moved)
