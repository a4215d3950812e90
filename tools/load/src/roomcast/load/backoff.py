"""The SDKs' reconnect policy, for load clients that must behave like real ones when a
gateway restarts (bench/idle_50k.py measures whether that avoids a reconnect storm).

The TypeScript SDK (clients/typescript/src/socket.ts and backoff.ts) is the model:

* a socket that was ready and closed reconnects at once, after a uniform draw in
  ``[0, initial]`` (so a restarting gateway's clients do not all arrive in the same
  millisecond);
* each failed attempt (refused, timed out, closed before ``ready``) waits with
  exponential backoff and *full jitter*: a uniform draw in ``[0, min(max, initial *
  2^round)]``, ``round`` counting the failed rounds over the client's URLs from 0;
* a close with 4008 (rate limited) waits at least 2 s whatever the draw.

The Python SDK (roomcast.client.connector) has the same shape with a smaller first
delay (0.1 s) and a x0.5..1 jitter; the load tool uses the TypeScript constants, the
larger and fully jittered of the two, which is what browsers (most clients) run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# clients/typescript/src/socket.ts DEFAULT_BACKOFF_INITIAL_MS and DEFAULT_BACKOFF_MAX_MS:
# the cap of the first failed round, and the largest cap (a client of a gateway that is
# down for minutes tries every 10 s on average 5 s).
SDK_BACKOFF_INITIAL_SECONDS = 0.25
SDK_BACKOFF_MAX_SECONDS = 10.0
# clients/typescript/src/socket.ts RATE_LIMITED_DELAY_MS: after 4008 reconnecting at once
# would be limited again.
SDK_RATE_LIMITED_DELAY_SECONDS = 2.0
CLOSE_RATE_LIMITED = 4008
# Exponent ceiling (as backoff.ts): 2**30 * initial is far past any max.
_MAX_ROUND = 30


@dataclass(frozen=True)
class ReconnectPolicy:
    initial: float = SDK_BACKOFF_INITIAL_SECONDS
    maximum: float = SDK_BACKOFF_MAX_SECONDS
    rate_limited_delay: float = SDK_RATE_LIMITED_DELAY_SECONDS
    urls: int = 1  # URLs a client rotates through; a round tries each once

    def cap(self, round_: int) -> float:
        """The cap of the ``round_``-th failed round (0-based)."""
        return min(self.maximum, self.initial * 2.0 ** min(round_, _MAX_ROUND))

    def after_ready(self, code: int | None, rng: random.Random | None = None) -> float:
        """Delay before reconnecting when a ready connection closed with ``code``."""
        draw = (rng or random).random() * self.initial
        return self._floor(draw, code)

    def after_failure(
        self, failures: int, code: int | None = None, rng: random.Random | None = None
    ) -> float:
        """Delay after ``failures`` (>= 1) consecutive failed attempts: none while the
        round still has untried URLs, then full jitter under the round's cap."""
        if failures % self.urls != 0:
            return self._floor(0.0, code)
        draw = (rng or random).random() * self.cap(failures // self.urls - 1)
        return self._floor(draw, code)

    def _floor(self, delay: float, code: int | None) -> float:
        if code == CLOSE_RATE_LIMITED:
            return max(delay, self.rate_limited_delay)
        return delay
