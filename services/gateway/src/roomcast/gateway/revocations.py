"""Sessions revoked while their access tokens are still valid.

Gateways verify access tokens locally (JWKS), so a token stays valid until its ``exp``
even after its session (refresh family) was revoked by a logout or a refresh-token
reuse. auth announces each revocation on NATS (``session_revoked``, events.py): the
gateway closes the session's sockets and remembers the session id here, so a client
reconnecting with a token of that session is refused too (4001) instead of slipping
back in. Entries live ``ttl`` seconds (at least auth's access-token lifetime, after
which every token of the session has expired anyway); the oldest are evicted past
``max_entries``. A gateway started after the announcement does not know it: that
window is bounded by the access-token lifetime.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class RevokedSessions:
    def __init__(
        self, *, ttl: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._until: OrderedDict[str, float] = OrderedDict()

    def add(self, session_id: str) -> None:
        self._until[session_id] = self._clock() + self.ttl
        self._until.move_to_end(session_id)
        now = self._clock()
        while self._until and (
            len(self._until) > self.max_entries or next(iter(self._until.values())) <= now
        ):
            self._until.popitem(last=False)

    def __contains__(self, session_id: object) -> bool:
        if not isinstance(session_id, str):
            return False
        until = self._until.get(session_id)
        return until is not None and until > self._clock()

    def __len__(self) -> int:
        return len(self._until)
