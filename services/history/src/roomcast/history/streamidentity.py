"""The identity of the ``CHAT`` stream history stores, and refusing another one.

history stores each message under ``_id`` = its stream sequence, and clients page and
resume with ``since`` positions that are sequences. A ``CHAT`` deleted and created
again by an operator starts its sequences at 1 again: new messages would hit the old
ones' ids and be dropped as duplicates, silently, and every client's position would
point into another stream. So history records the stream's ``created`` timestamp (from
the stream's info) in ``meta`` as ``{_id: "stream", created}`` the first time it binds,
and before every bind (at start, after its consumer was re-created) compares it: on a
difference the consumer refuses to bind, readiness fails and
``roomcast_history_stream_mismatch`` is 1, until the operator recovers.

Recovery (docs/operations.md): restore the old stream, or move the old history aside
and forget the recorded identity with ``python -m roomcast.history.streamidentity
reset`` (same environment as the service), after which the running replicas take the
new stream within their retry backoff.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from typing import Any

from nats.js.api import StreamInfo
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from roomcast.history.errors import StreamMismatch
from roomcast.history.settings import Settings
from roomcast.history.store import META, WATERMARK_ID

Doc = dict[str, Any]

STREAM_ID = "stream"
# The collections whose documents are keyed or positioned by stream sequence: moved
# aside together by ``reset`` so the new stream's sequences collide with nothing.
SEQUENCE_KEYED = ("messages", "reactions", "rooms", "dead_letters")


def stream_identity(info: StreamInfo) -> str:
    """What tells one ``CHAT`` from a re-created one: its creation time."""
    if info.created is None:
        raise StreamMismatch("the stream's info has no creation time")
    return info.created.isoformat()


async def check_identity(meta: AsyncCollection[Doc], info: StreamInfo) -> bool:
    """Raise ``StreamMismatch`` if ``info`` is not the stream history recorded; True
    when there was none and this one was recorded just now."""
    found = stream_identity(info)
    recorded = await meta.find_one({"_id": STREAM_ID})
    if recorded is None:
        try:
            await meta.insert_one({"_id": STREAM_ID, "created": found})
            return True
        except DuplicateKeyError:
            # Another replica recorded it first: compare with what it recorded.
            recorded = await meta.find_one({"_id": STREAM_ID})
    if recorded is not None and recorded.get("created") != found:
        raise StreamMismatch(
            f"CHAT was created at {found}, history stores the stream created at "
            f"{recorded.get('created')}"
        )
    return False


async def reset(settings: Settings) -> list[str]:
    """Move the sequence-keyed collections aside (renamed ``<name>_before_<now>``) and
    forget the watermark and the recorded identity; the renamed collections listed."""
    client: AsyncMongoClient[Doc] = AsyncMongoClient(settings.mongo_url)
    try:
        db = client[settings.mongo_db]
        suffix = dt.datetime.now(dt.UTC).strftime("_before_%Y%m%dT%H%M%SZ")
        existing = set(await db.list_collection_names())
        moved = []
        for name in SEQUENCE_KEYED:
            if name in existing:
                await db[name].rename(name + suffix)
                moved.append(name + suffix)
        await db[META].delete_many({"_id": {"$in": [STREAM_ID, WATERMARK_ID]}})
        return moved
    finally:
        await client.close()


def main() -> None:
    if sys.argv[1:] != ["reset"]:
        sys.exit("usage: python -m roomcast.history.streamidentity reset")
    moved = asyncio.run(reset(Settings()))
    print("moved aside:", ", ".join(moved) or "nothing", "; stream identity reset")


if __name__ == "__main__":
    main()
