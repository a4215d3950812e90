"""Access tokens: issued by auth, verified locally by every other service.

Tokens are EdDSA (Ed25519) JWTs. The algorithm is hard-coded on both sides: a token
whose header names any other algorithm (``none``, ``HS256`` with the public key as the
secret, ``RS256``...) is rejected before any key is looked at. Verification also checks
``iss``, ``aud``, ``typ`` and ``exp``, and requires the ``kid`` to be a known key.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from roomcast.common.errors import DependencyUnavailable, Unauthenticated

ALGORITHM = "EdDSA"
ACCESS_TYPE = "access"
# The role auth gives the accounts in ROOMCAST_AUTH_SERVICE_READER_USERNAMES.
SERVICE_READER_ROLE = "service-reader"
# Clock skew tolerated between the issuer and a verifier; NTP keeps hosts within
# milliseconds, 30 s covers a badly drifting container without extending tokens much.
# The one leeway of every verifier: REST (auth, gateway, history) and sockets accept a
# token until ``exp + LEEWAY_SECONDS`` (``AccessClaims.valid_until``), and a socket is
# closed at that same moment, so a token is never good on one and refused on the other.
LEEWAY_SECONDS = 30
# How long a fetched JWKS is trusted before it is fetched again, so a removed key stops
# verifying within this time.
JWKS_TTL_SECONDS = 300.0
# Minimum interval between refetches triggered by an unknown kid: a flood of tokens with
# random kids must not turn into a flood of requests to auth.
JWKS_REFETCH_MIN_INTERVAL_SECONDS = 10.0
# How long the last fetched keys keep verifying while every refetch fails (auth down or
# unreachable): an auth outage must not log out every client of every service, and a
# day covers any outage someone is still working on while bounding how long a key that
# auth meanwhile withdrew could stay trusted. Configurable per service.
JWKS_STALE_IF_ERROR_SECONDS = 24 * 3600.0
# After a failed fetch no other fetch is tried for this long (negative cache): thousands
# of verifications during an outage cost one request per interval, not one each.
JWKS_FAILURE_BACKOFF_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """The verified identity of a caller."""

    user_id: str
    username: str
    display_name: str
    avatar_url: str | None
    roles: tuple[str, ...]
    expires_at: float
    token_id: str
    # The refresh-token family this access token was issued under: logout or reuse
    # detection revokes the family, and gateways close the sockets that carry it.
    session_id: str | None = None
    raw: str = field(repr=False, default="")

    @property
    def valid_until(self) -> float:
        """The last moment (epoch seconds) any verifier accepts this token: its ``exp``
        plus the shared clock-skew leeway. Sockets close at this moment."""
        return self.expires_at + LEEWAY_SECONDS

    @property
    def is_global_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def is_service_reader(self) -> bool:
        """A service account that may read every room and its members, and change
        nothing (the notifier's): rooms refuses it every write."""
        return SERVICE_READER_ROLE in self.roles


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_jwk(public_key: Ed25519PublicKey, kid: str) -> dict[str, str]:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": _b64url(raw),
        "kid": kid,
        "alg": ALGORITHM,
        "use": "sig",
    }


def key_id(public_key: Ed25519PublicKey) -> str:
    """A stable key id derived from the public key, so rotation never reuses a kid."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _b64url(raw)[:16]


def load_private_key(pem: str | bytes) -> Ed25519PrivateKey:
    data = pem.encode() if isinstance(pem, str) else pem
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("signing key must be an Ed25519 private key in PEM (PKCS#8)")
    return key


def generate_private_key_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class TokenSigner:
    """Issues access tokens with the current key; publishes current and previous keys."""

    def __init__(
        self,
        private_key: Ed25519PrivateKey,
        *,
        issuer: str,
        audience: str,
        access_ttl_seconds: int,
        extra_public_keys: tuple[Ed25519PublicKey, ...] = (),
    ) -> None:
        self._key = private_key
        self.kid = key_id(private_key.public_key())
        self.issuer = issuer
        self.audience = audience
        self.access_ttl_seconds = access_ttl_seconds
        self._published = [private_key.public_key(), *extra_public_keys]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(k, key_id(k)) for k in self._published]}

    def issue_access(
        self,
        *,
        user_id: str,
        username: str,
        display_name: str,
        avatar_url: str | None = None,
        roles: tuple[str, ...] = (),
        session_id: str | None = None,
        now: float | None = None,
        ttl_seconds: int | None = None,
    ) -> tuple[str, int]:
        """Return ``(token, expires_in_seconds)``."""
        issued = int(now if now is not None else time.time())
        ttl = self.access_ttl_seconds if ttl_seconds is None else ttl_seconds
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": user_id,
            "typ": ACCESS_TYPE,
            "iat": issued,
            "exp": issued + ttl,
            "jti": uuid.uuid4().hex,
            "username": username,
            "name": display_name,
            "avatar_url": avatar_url,
            "roles": list(roles),
        }
        if session_id is not None:
            claims["sid"] = session_id
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.kid})
        return token, ttl


JwksFetcher = Callable[[], Awaitable[Mapping[str, Any]]]


class RevocationCheck(Protocol):
    """What the verifier asks about a token's session (roomcast.common.revocations)."""

    def check(self, session_id: str | None) -> None:
        """Raise :class:`Unauthenticated` (``session_revoked``) for a revoked session,
        :class:`DependencyUnavailable` while the revocation list is unknown."""


class TokenVerifier:
    """Verifies access tokens against a JWKS, refetched on TTL expiry or unknown kid.

    While refetches fail the last keys keep verifying for ``stale_if_error_seconds``
    (then every token is refused with 503), and a failure is not retried for
    ``failure_backoff_seconds``. With ``revocations`` set, a token whose session was
    revoked is refused (``session_revoked``), cached verifications included
    (:meth:`check_session`).
    """

    def __init__(
        self,
        fetch_jwks: JwksFetcher,
        *,
        issuer: str,
        audience: str,
        clock: Callable[[], float] = time.monotonic,
        stale_if_error_seconds: float = JWKS_STALE_IF_ERROR_SECONDS,
        failure_backoff_seconds: float = JWKS_FAILURE_BACKOFF_SECONDS,
        revocations: RevocationCheck | None = None,
    ) -> None:
        self._fetch = fetch_jwks
        self.issuer = issuer
        self.audience = audience
        self.revocations = revocations
        self._clock = clock
        self._stale_if_error = stale_if_error_seconds
        self._failure_backoff = failure_backoff_seconds
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._fetched_at: float | None = None
        self._last_refetch: float = float("-inf")
        self._failed_at: float | None = None
        self._lock = asyncio.Lock()
        self._close: Callable[[], Awaitable[None]] | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        issuer: str,
        audience: str,
        stale_if_error_seconds: float = JWKS_STALE_IF_ERROR_SECONDS,
        revocations: RevocationCheck | None = None,
    ) -> TokenVerifier:
        """A verifier over auth's JWKS endpoint (one shared :class:`HttpJwksFetcher`);
        ``verifier.close()`` closes its HTTP client."""
        from roomcast.common.jwks import HttpJwksFetcher

        fetcher = HttpJwksFetcher(url)
        verifier = cls(
            fetcher,
            issuer=issuer,
            audience=audience,
            stale_if_error_seconds=stale_if_error_seconds,
            revocations=revocations,
        )
        verifier._close = fetcher.close
        return verifier

    async def close(self) -> None:
        """Release the fetcher's resources (kept-alive HTTP connections)."""
        if self._close is not None:
            await self._close()

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any], *, issuer: str, audience: str) -> TokenVerifier:
        async def fetch() -> Mapping[str, Any]:
            return jwks

        return cls(fetch, issuer=issuer, audience=audience)

    async def prefetch(self) -> None:
        """Fetch the keys now, before the first token arrives: a service that becomes
        ready only after this answers a reconnect burst at once, instead of every socket
        of the burst waiting on (and timing out behind) the first fetch. Raises
        :class:`DependencyUnavailable` when auth cannot be reached."""
        await self._refresh(wanted_kid=None)
        if self._fetched_at is None:
            raise DependencyUnavailable("JWKS not fetched")

    async def _refresh(self, *, wanted_kid: str | None) -> None:
        """Fetch the JWKS once for everyone waiting: a waiter that queued behind a fetch
        re-checks under the lock and returns if that fetch already gave it what it needs."""
        async with self._lock:
            now = self._clock()
            fresh = self._fetched_at is not None and now - self._fetched_at <= JWKS_TTL_SECONDS
            if wanted_kid is None and fresh:
                return
            if wanted_kid is not None:
                if fresh and wanted_kid in self._keys:
                    return
                if now - self._last_refetch < JWKS_REFETCH_MIN_INTERVAL_SECONDS:
                    return
            if self._failed_at is not None and now - self._failed_at < self._failure_backoff:
                self._stale_or_fail(now)
                return
            try:
                jwks = await self._fetch()
            except DependencyUnavailable:
                self._failed_at = now
                self._stale_or_fail(now)
                return
            self._failed_at = None
            keys: dict[str, Ed25519PublicKey] = {}
            for jwk in jwks.get("keys", []):
                if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or "kid" not in jwk:
                    continue
                keys[str(jwk["kid"])] = Ed25519PublicKey.from_public_bytes(_b64url_decode(jwk["x"]))
            self._keys = keys
            self._fetched_at = now
            if wanted_kid is not None:
                self._last_refetch = now

    def _stale_or_fail(self, now: float) -> None:
        """After a failed (or negatively cached) fetch: keep the last keys while they are
        within the stale-if-error bound, else forget them and answer 503."""
        if self._fetched_at is not None and now - self._fetched_at <= (
            JWKS_TTL_SECONDS + self._stale_if_error
        ):
            return
        self._keys = {}
        self._fetched_at = None
        raise DependencyUnavailable("cannot fetch JWKS and no usable cached keys")

    async def _key_for(self, kid: str) -> Ed25519PublicKey:
        stale = self._fetched_at is None or self._clock() - self._fetched_at > JWKS_TTL_SECONDS
        # While one caller refetches (up to the fetch timeout when auth hangs), the
        # others verify with the keys they have instead of queueing behind it.
        refetching_with_key_at_hand = bool(self._keys) and kid in self._keys and self._lock.locked()
        if stale and not refetching_with_key_at_hand:
            await self._refresh(wanted_kid=None)
        key = self._keys.get(kid)
        if key is None:
            await self._refresh(wanted_kid=kid)
            key = self._keys.get(kid)
        if key is None:
            if self._failed_at is not None:
                # The key may be one auth rotated to while unreachable: a retryable 503,
                # not a 401 that would make the client throw its tokens away.
                raise DependencyUnavailable("unknown key id and JWKS unavailable")
            raise Unauthenticated("token signed with an unknown key", code="invalid_token")
        return key

    def check_session(self, claims: AccessClaims) -> None:
        """Refuse claims whose session was revoked (for callers caching verified
        claims); a no-op without a revocation list."""
        if self.revocations is not None:
            self.revocations.check(claims.session_id)

    async def verify(self, token: str) -> AccessClaims:
        """Verify an access token or raise :class:`Unauthenticated`."""
        if not isinstance(token, str) or not token or len(token) > 4096:
            raise Unauthenticated("missing or malformed token", code="invalid_token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("malformed token", code="invalid_token") from exc
        if header.get("alg") != ALGORITHM:
            raise Unauthenticated("token algorithm not accepted", code="invalid_token")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("token has no key id", code="invalid_token")
        key = await self._key_for(kid)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("token expired", code="token_expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {exc}", code="invalid_token") from exc
        if claims.get("typ") != ACCESS_TYPE:
            raise Unauthenticated("not an access token", code="invalid_token")
        roles = claims.get("roles") or []
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise Unauthenticated("malformed roles claim", code="invalid_token")
        sub, username = claims.get("sub"), claims.get("username")
        if not isinstance(sub, str) or not isinstance(username, str):
            raise Unauthenticated("malformed subject", code="invalid_token")
        name = claims.get("name")
        avatar = claims.get("avatar_url")
        sid = claims.get("sid")
        verified = AccessClaims(
            user_id=sub,
            username=username,
            display_name=name if isinstance(name, str) else username,
            avatar_url=avatar if isinstance(avatar, str) else None,
            roles=tuple(roles),
            expires_at=float(claims["exp"]),
            token_id=str(claims["jti"]),
            session_id=sid if isinstance(sid, str) else None,
            raw=token,
        )
        self.check_session(verified)
        return verified
