"""Token verification for the gateway, built like every service's.

The verifier fetches auth's JWKS with the shared fetcher (roomcast.common.jwks: one
request in flight for a burst of sockets authenticating at once, kept-alive), keeps the
keys through an auth outage (stale-while-error, ``JWKS_STALE_IF_ERROR_SECONDS``), and
refuses tokens of revoked sessions from the shared watcher (revocations.py), which the
hub attaches to the gateway's NATS connection.
"""

from __future__ import annotations

from roomcast.common.jwks import HttpJwksFetcher
from roomcast.common.revocations import RevocationWatcher
from roomcast.common.tokens import TokenVerifier
from roomcast.gateway.settings import Settings


def build_verifier(settings: Settings) -> tuple[TokenVerifier, HttpJwksFetcher]:
    fetcher = HttpJwksFetcher(settings.jwks_url)
    verifier = TokenVerifier(
        fetcher,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        stale_if_error_seconds=settings.jwks_stale_if_error_seconds,
        revocations=RevocationWatcher(),
    )
    return verifier, fetcher
