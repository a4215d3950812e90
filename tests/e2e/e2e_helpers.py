"""Helpers for the end-to-end tests: users through the public REST API, sockets through
the SDK, and a collector that records every message a socket receives."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from roomcast.client import Item, Message, RoomcastHttp, RoomcastSocket, connect

# Polling another process's state is the same in every suite: the e2e tests take it from here.
from roomcast.testing.polling import eventually as eventually

PASSWORD = "correct horse battery staple"
# Deadlines for conditions the tests wait on: generous for a loaded 2-core CI machine,
# never a fixed sleep.
DELIVERY_DEADLINE_SECONDS = 30.0


async def new_user(base_url: str, prefix: str = "u") -> RoomcastHttp:
    http = RoomcastHttp(base_url)
    username = f"{prefix}{uuid.uuid4().hex[:10]}"
    await http.register(username, PASSWORD)
    await http.login(username, PASSWORD)
    return http


@dataclass
class Collector:
    """Every Message a socket yields, in arrival order, per room."""

    messages: list[Message] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_item(self, item: Item) -> None:
        self.items.append(item)
        if isinstance(item, Message):
            self.messages.append(item)
        self.changed.set()

    def seqs(self, room: str) -> list[int]:
        return [m.seq for m in self.messages if m.room == room]

    async def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        async with asyncio.timeout(DELIVERY_DEADLINE_SECONDS):
            while not condition():
                self.changed.clear()
                if condition():
                    return
                try:
                    await asyncio.wait_for(self.changed.wait(), 1.0)
                except TimeoutError:
                    continue
        assert condition(), what


async def open_socket(
    urls: list[str], http: RoomcastHttp, **options: Any
) -> tuple[RoomcastSocket, Collector]:
    collector = Collector()
    sock = await connect(urls, http.access_token_provider, on_item=collector.on_item, **options)
    return sock, collector
