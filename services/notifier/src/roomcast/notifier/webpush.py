"""Web Push: validating browsers' subscriptions and sending encrypted, VAPID-signed pushes.

The standard protocol end to end: the payload is encrypted for the subscription's keys
with ``aes128gcm`` (RFC 8291, ECDH on P-256 plus the subscription's auth secret, by
http_ece), the request carries a VAPID JWT for the push service (RFC 8292, py-vapid),
and ``TTL``/``Urgency``/``Topic`` headers (RFC 8030). A ``Topic`` makes the push service
replace an undelivered push of this user's inbox with the newer one, so a device that
was off gets one push, not a pile.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import http_ece
import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from py_vapid import Vapid02

from roomcast.notifier.errors import InvalidSubscription

# Browsers' endpoints are ~150-500 characters; 2 KB is generous and bounded.
MAX_ENDPOINT_CHARS = 2048
# RFC 8291: the user agent's public key is an uncompressed P-256 point, the auth
# secret 16 bytes.
P256_POINT_BYTES = 65
AUTH_SECRET_BYTES = 16
# The push services' payload ceiling is 4096 bytes of ciphertext; aes128gcm adds 86
# bytes (header with the sender's key, padding delimiter, tag).
MAX_PAYLOAD_BYTES = 3800
# The VAPID JWT's lifetime (RFC 8292 allows up to 24 h): short-lived, signed per push.
VAPID_TOKEN_SECONDS = 12 * 3600
# One Topic for every push of a user's inbox (RFC 8030: at most 32 URL-safe characters).
INBOX_TOPIC = "roomcast-inbox"


def b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class PushSubscription:
    endpoint: str
    p256dh: bytes
    auth: bytes

    @property
    def id(self) -> str:
        return hashlib.sha256(self.endpoint.encode()).hexdigest()

    def to_doc(self, user: str, now: Any) -> dict[str, Any]:
        return {
            "_id": self.id,
            "user": user,
            "endpoint": self.endpoint,
            "p256dh": b64url(self.p256dh),
            "auth": b64url(self.auth),
            "created_at": now,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> PushSubscription:
        return cls(doc["endpoint"], b64url_decode(doc["p256dh"]), b64url_decode(doc["auth"]))


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    host = host.lower()
    for pattern in allowed:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def check_endpoint(endpoint: object, *, allowed_hosts: tuple[str, ...], allow_http: bool) -> str:
    if not isinstance(endpoint, str) or not 0 < len(endpoint) <= MAX_ENDPOINT_CHARS:
        raise InvalidSubscription(f"endpoint must be a URL of at most {MAX_ENDPOINT_CHARS} chars")
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError:
        raise InvalidSubscription("endpoint is not a URL") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes or not parts.hostname or parts.username or parts.password:
        raise InvalidSubscription("endpoint must be an https URL without credentials")
    if port is not None and not 0 < port < 65536:
        raise InvalidSubscription("endpoint has an invalid port")
    if not host_allowed(parts.hostname, allowed_hosts):
        raise InvalidSubscription("endpoint is not on a known push service")
    return endpoint


def _key(value: object, name: str, size: int) -> bytes:
    if not isinstance(value, str) or len(value) > 200:
        raise InvalidSubscription(f"keys.{name} must be base64url text")
    try:
        raw = b64url_decode(value)
    except (binascii.Error, ValueError):
        raise InvalidSubscription(f"keys.{name} must be base64url text") from None
    if len(raw) != size:
        raise InvalidSubscription(f"keys.{name} must decode to {size} bytes")
    return raw


def parse_subscription(
    body: dict[str, Any], *, allowed_hosts: tuple[str, ...], allow_http: bool
) -> PushSubscription:
    """A ``PushSubscription.toJSON()`` object: ``{endpoint, expirationTime?, keys:
    {p256dh, auth}}``; the key must be a point on P-256."""
    if set(body) - {"endpoint", "expirationTime", "keys"}:
        raise InvalidSubscription("unknown fields in the subscription")
    expiration = body.get("expirationTime")
    if expiration is not None and (type(expiration) not in (int, float) or expiration < 0):
        raise InvalidSubscription("expirationTime must be null or a number")
    endpoint = check_endpoint(
        body.get("endpoint"), allowed_hosts=allowed_hosts, allow_http=allow_http
    )
    keys = body.get("keys")
    if not isinstance(keys, dict) or set(keys) != {"p256dh", "auth"}:
        raise InvalidSubscription("keys must be {p256dh, auth}")
    p256dh = _key(keys["p256dh"], "p256dh", P256_POINT_BYTES)
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256dh)
    except ValueError:
        raise InvalidSubscription("keys.p256dh is not a P-256 public key") from None
    return PushSubscription(endpoint, p256dh, _key(keys["auth"], "auth", AUTH_SECRET_BYTES))


def load_vapid(private_key: str) -> Vapid02:
    """The VAPID key from a PEM or the raw 32-byte scalar in base64url."""
    text = private_key.strip()
    if text.startswith("-----BEGIN"):
        return Vapid02.from_pem(text.encode())
    return Vapid02.from_raw(text.encode())


def encrypt(payload: bytes, sub: PushSubscription) -> bytes:
    """``aes128gcm`` for the subscription's keys, with a fresh sender key and salt."""
    sender = ec.generate_private_key(ec.SECP256R1())
    body: bytes = http_ece.encrypt(
        payload,
        salt=os.urandom(16),
        private_key=sender,
        dh=sub.p256dh,
        auth_secret=sub.auth,
        version="aes128gcm",
    )
    return body


class WebPushSender:
    def __init__(
        self,
        *,
        vapid_private_key: str,
        subject: str,
        http: httpx.AsyncClient,
        ttl_seconds: int,
        timeout_seconds: float,
    ) -> None:
        self._vapid = load_vapid(vapid_private_key)
        self._subject = subject
        self._http = http
        self._ttl = ttl_seconds
        self._timeout = timeout_seconds

    @property
    def public_key(self) -> str:
        """The ``applicationServerKey`` browsers subscribe with (base64url)."""
        point = self._vapid.public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        return b64url(point)

    async def send(self, sub: PushSubscription, payload: bytes) -> int:
        """POST one push; the push service's status (network errors raise httpx's)."""
        parts = urlsplit(sub.endpoint)
        claims = {
            "aud": f"{parts.scheme}://{parts.netloc}",
            "sub": self._subject,
            "exp": int(time.time()) + VAPID_TOKEN_SECONDS,
        }
        headers: dict[str, str] = dict(self._vapid.sign(claims))
        headers |= {
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(self._ttl),
            "Urgency": "normal",
            "Topic": INBOX_TOPIC,
        }
        response = await self._http.post(
            sub.endpoint, content=encrypt(payload, sub), headers=headers, timeout=self._timeout
        )
        return response.status_code
