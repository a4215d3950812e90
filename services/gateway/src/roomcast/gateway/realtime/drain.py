"""Drain bookkeeping: whether this gateway is draining, and the publishes in flight.

A drain (SIGTERM, server.py) first refuses new sends and subscriptions, then waits for
every publish already sent to JetStream to get its ack, so its client gets its ``ack``
frame before the socket closes. Sends and edits hold :meth:`Drain.publishing` around
their publish.
"""

from __future__ import annotations

import asyncio


class Drain:
    def __init__(self) -> None:
        self.draining = False
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self) -> None:
        self.draining = True

    def publishing(self) -> Drain:
        """``with drain.publishing():`` around a publish; the Drain is its own context
        manager (no generator per publish, as ``contextlib.contextmanager`` would make)."""
        return self

    def __enter__(self) -> None:
        self._inflight += 1
        self._idle.clear()

    def __exit__(self, *_: object) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()

    async def wait_publishes(self, within: float) -> bool:
        """Wait until no publish is awaiting its ack; False if ``within`` passed."""
        try:
            await asyncio.wait_for(self._idle.wait(), within)
        except TimeoutError:
            return False
        return True
