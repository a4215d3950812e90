"""Messages between the coordinator and its workers over a socketpair.

Each end reads in a daemon thread with blocking ``recv`` and hands messages to its
event loop; the descriptor stays blocking (an event loop's reader would make it
non-blocking, and multiprocessing's Connection cannot resume a half-read message).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

EOF_MESSAGE = ("eof",)


def start_reader(
    conn: Connection, loop: asyncio.AbstractEventLoop, deliver: Callable[[Any], None]
) -> threading.Thread:
    """Call ``deliver(message)`` on ``loop`` for every message; ``EOF_MESSAGE`` last."""

    def run() -> None:
        try:
            while True:
                msg = conn.recv()
                loop.call_soon_threadsafe(deliver, msg)
        except (EOFError, OSError):
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(deliver, EOF_MESSAGE)

    thread = threading.Thread(target=run, name="roomcast-load-pipe", daemon=True)
    thread.start()
    return thread
