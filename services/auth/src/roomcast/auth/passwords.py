"""Password hashing: bcrypt over a pre-hash, computed off the event loop.

bcrypt only reads the first 72 bytes of its input (bcrypt >= 5 refuses longer input
instead). So that every character of a long passphrase counts, the password is first
reduced to a fixed 44-byte string:

    prehash = base64(HMAC-SHA256(key=b"roomcast-password-v1", msg=NFKC(password) as UTF-8))
    stored  = bcrypt(prehash, cost)

The HMAC key is a fixed, public domain separator (not a secret pepper): it makes the
pre-hash differ from a bare SHA-256, so hashes leaked from other sites' unsalted SHA-256
databases cannot be fed straight into our bcrypt hashes ("password shucking"). base64
keeps NUL bytes (which bcrypt treats as the end of input) out of the bcrypt input.
NFKC makes the same password typed on different keyboards or systems hash the same.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import re
import threading
import time
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import bcrypt

from roomcast.auth import metrics
from roomcast.auth.errors import Overloaded

T = TypeVar("T")
log = logging.getLogger(__name__)

SCHEME = "bcrypt-hmac-sha256-b64-v1"
_PREHASH_KEY = b"roomcast-password-v1"
_COST_RE = re.compile(r"^\$2[abxy]?\$(\d\d)\$")
# A password the dummy hash is made of; nothing ever verifies against it.
_DUMMY_PASSWORD = "roomcast dummy password for unknown users"  # noqa: S105


def prehash(password: str) -> bytes:
    normalized = unicodedata.normalize("NFKC", password).encode("utf-8")
    digest = hmac.new(_PREHASH_KEY, normalized, hashlib.sha256).digest()
    return base64.b64encode(digest)


def cost_of(stored: str) -> int | None:
    match = _COST_RE.match(stored)
    return int(match.group(1)) if match else None


def _lower_thread_priority(niceness: int) -> None:
    """Executor initializer: make this worker thread yield the CPU to the event loop."""
    if niceness <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        # On Linux a thread is a schedulable task with its own id and nice value.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except OSError:
        log.debug("cannot lower the priority of the hashing threads", exc_info=True)


class PasswordHasher:
    """Hashes and checks passwords in ``concurrency`` dedicated worker threads.

    bcrypt releases the GIL, so the event loop keeps serving other requests while
    hashes run. The workers run at a lower CPU priority (``niceness``), so when logins
    saturate the cores the event loop still gets the CPU first and cheap requests keep
    their latency; hashing uses every cycle the loop leaves. At most ``max_pending``
    hashes may wait or run; beyond that :class:`Overloaded` is raised at once rather
    than queueing unbounded work. Call :meth:`close` when done.
    """

    def __init__(self, *, cost: int, concurrency: int, max_pending: int, niceness: int = 0) -> None:
        self.cost = cost
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(
            max_workers=concurrency,
            thread_name_prefix="bcrypt",
            initializer=_lower_thread_priority,
            initargs=(niceness,),
        )
        self._pending = 0
        self._running = 0
        self._running_lock = threading.Lock()
        self._dummy: bytes | None = None
        self._dummy_lock = asyncio.Lock()

    @property
    def pending(self) -> int:
        """Hashes waiting for a thread or running."""
        return self._pending

    @property
    def running(self) -> int:
        """Hashes executing in a worker thread right now."""
        return self._running

    def _timed(self, op: str, fn: Callable[..., T], *args: bytes) -> T:
        with self._running_lock:
            self._running += 1
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            metrics.BCRYPT_SECONDS.labels(op).observe(time.perf_counter() - start)
            with self._running_lock:
                self._running -= 1

    async def _run(self, op: str, fn: Callable[..., T], *args: bytes) -> T:
        if self._pending >= self.max_pending:
            raise Overloaded()
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._timed, op, fn, *args)
        finally:
            self._pending -= 1

    def close(self) -> None:
        """Stop the worker threads (queued hashes are cancelled)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def hash(self, password: str) -> str:
        salt = bcrypt.gensalt(self.cost)
        hashed: bytes = await self._run("hash", bcrypt.hashpw, prehash(password), salt)
        return hashed.decode("ascii")

    async def _dummy_hash(self) -> bytes:
        if self._dummy is None:
            async with self._dummy_lock:
                if self._dummy is None:
                    self._dummy = (await self.hash(_DUMMY_PASSWORD)).encode("ascii")
        return self._dummy

    async def warm_up(self) -> None:
        """Compute the dummy hash now rather than on the first unknown-user login."""
        await self._dummy_hash()

    async def verify(self, password: str, stored: str | None) -> bool:
        """Check ``password`` against ``stored``; with ``stored=None`` (unknown user) do
        the same work against a dummy hash of the current cost and return False."""
        if stored is None:
            target, known = await self._dummy_hash(), False
        else:
            target, known = stored.encode("ascii"), True
        ok: bool = await self._run("verify", bcrypt.checkpw, prehash(password), target)
        return bool(ok) and known

    def needs_rehash(self, stored: str) -> bool:
        """True when ``stored`` was made with another cost (the setting changed)."""
        return cost_of(stored) != self.cost
