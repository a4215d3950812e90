"""A bounded cache of verified access tokens.

Gateways forward the same user token on every CheckMembership; verifying it (JWT
parsing plus an Ed25519 signature check) costs a few hundred microseconds of Python,
more than the MongoDB read behind the RPC. A token that verified once is accepted from
the cache until the earlier of its own expiry and ``max_age_seconds``; failures are
never cached. The key is the whole token string, so a cached entry can only ever be
returned for byte-identical input whose signature was checked.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cachetools import TLRUCache

from roomcast.common.tokens import AccessClaims, TokenVerifier

# Entries: one per distinct token seen recently; a token is ~600 bytes plus claims,
# so 10 000 entries stay under ~10 MB while covering every active user of a replica.
DEFAULT_MAX_ENTRIES = 10_000
# Upper bound on how long a verified token is trusted without re-checking its
# signature: a signing key removed from auth's JWKS (refetched every 300 s) stops
# working here at most this much later than in an uncached verifier.
DEFAULT_MAX_AGE_SECONDS = 60.0


class CachingVerifier:
    def __init__(
        self,
        verifier: TokenVerifier,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.verifier = verifier
        self.max_entries = max_entries
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        # token -> (claims, valid until): each entry expires at its own time; past
        # max_entries the expired go first, then the least recently used.
        self._entries: TLRUCache[str, tuple[AccessClaims, float]] = TLRUCache(
            max_entries, ttu=lambda _token, entry, _now: entry[1], timer=clock
        )

    async def verify(self, token: str) -> AccessClaims:
        now = self._clock()
        entry = self._entries.get(token)  # None once expired
        if entry is not None:
            claims = entry[0]
            # A session revoked after the token was cached is refused at once.
            self.verifier.check_session(claims)
            return claims
        claims = await self.verifier.verify(token)
        # exp without the verifier's clock-skew leeway: the cache never extends a token.
        # An entry already expired is not stored.
        self._entries[token] = (claims, min(claims.expires_at, now + self.max_age_seconds))
        return claims
