"""Sessions revoked while their access tokens are still valid: the gateway's view.

The list itself is shared by every service (roomcast.common.revocations: auth writes
each revoked session into a NATS KV bucket; a watcher loads it at start and follows
it), so a gateway started after a logout refuses that session's tokens too, on sockets
and REST alike. The gateway adds one thing: when a session is revoked, its open sockets
are closed (4001), whether the news came from the bucket or from auth's core-NATS
``session_revoked`` event (events.py), whichever arrives first.
"""

from __future__ import annotations

from collections.abc import Callable

from roomcast.common.revocations import RevocationWatcher
from roomcast.common.tokens import TokenVerifier

CloseSession = Callable[[str, str], object]


def revoked_sessions(verifier: TokenVerifier, close_session: CloseSession) -> RevocationWatcher:
    """The verifier's watcher (an unrequired one if it has none, for hubs built around a
    static verifier), closing the sockets of each newly revoked session through
    ``close_session(user_id, session_id)``."""
    watcher = verifier.revocations
    if not isinstance(watcher, RevocationWatcher):
        watcher = RevocationWatcher(required=False)

    def on_revoked(session_id: str, user_id: str | None) -> None:
        if user_id is not None:
            close_session(user_id, session_id)

    watcher.on_revoked(on_revoked)
    return watcher
