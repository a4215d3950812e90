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
from collections import OrderedDict
from collections.abc import Callable

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
        self._entries: OrderedDict[str, tuple[AccessClaims, float]] = OrderedDict()

    async def verify(self, token: str) -> AccessClaims:
        now = self._clock()
        entry = self._entries.get(token)
        if entry is not None:
            claims, valid_until = entry
            if now < valid_until:
                self._entries.move_to_end(token)
                # A session revoked after the token was cached is refused at once.
                self.verifier.check_session(claims)
                return claims
            del self._entries[token]
        claims = await self.verifier.verify(token)
        # exp without the verifier's clock-skew leeway: the cache never extends a token.
        valid_until = min(claims.expires_at, now + self.max_age_seconds)
        if valid_until > now:
            self._entries[token] = (claims, valid_until)
            if len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return claims
