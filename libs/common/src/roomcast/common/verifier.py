"""The access-token verifier a service builds from its ``TokenSettings``.

Every service that accepts tokens (rooms, gateway, history, notifier) verifies them the
same way: auth's JWKS fetched with the shared fetcher (roomcast.common.jwks), kept
through an auth outage for ``jwks_stale_if_error_seconds``, and tokens of revoked
sessions refused through the shared watcher (roomcast.common.revocations). Building it
in one place keeps those settings meaning the same thing in every service.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from roomcast.common.settings import TokenSettings
from roomcast.common.tokens import RevocationCheck, TokenVerifier

log = logging.getLogger(__name__)


def build_verifier(
    settings: TokenSettings,
    revocations: RevocationCheck | None = None,
    *,
    jwks_file: str | None = None,
) -> TokenVerifier:
    """A verifier over ``settings.jwks_url``, refusing sessions ``revocations`` lists
    (attached to NATS by the caller once connected); ``verifier.close()`` releases its
    HTTP client. ``jwks_file`` (a static JWKS document, for dev and benchmarks only)
    replaces the URL when given."""
    if jwks_file:
        log.warning("verifying tokens with a static JWKS file (dev/bench only)")
        jwks = json.loads(Path(jwks_file).read_text())
        verifier = TokenVerifier.from_jwks(
            jwks, issuer=settings.jwt_issuer, audience=settings.jwt_audience
        )
        verifier.revocations = revocations
        return verifier
    return TokenVerifier.from_url(
        settings.jwks_url,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        stale_if_error_seconds=settings.jwks_stale_if_error_seconds,
        revocations=revocations,
    )
