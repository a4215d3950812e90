"""The signing key and the extra published keys, from configuration."""

from __future__ import annotations

import re

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from roomcast.auth.errors import ConfigurationError
from roomcast.auth.settings import Settings
from roomcast.common.tokens import TokenSigner, key_id, load_private_key

_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.DOTALL)

MISSING_KEY_MESSAGE = (
    "no signing key: set ROOMCAST_AUTH_SIGNING_KEY (Ed25519 private key, PEM) or "
    "ROOMCAST_AUTH_SIGNING_KEY_FILE (path to it); generate one with "
    "`openssl genpkey -algorithm ed25519`"
)


def load_signing_key(settings: Settings) -> Ed25519PrivateKey:
    inline = settings.signing_key.get_secret_value().strip() if settings.signing_key else ""
    path = settings.signing_key_file
    if inline and path is not None:
        raise ConfigurationError(
            "set only one of ROOMCAST_AUTH_SIGNING_KEY and ROOMCAST_AUTH_SIGNING_KEY_FILE"
        )
    if path is not None:
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"cannot read ROOMCAST_AUTH_SIGNING_KEY_FILE: {exc}") from exc
        source = "ROOMCAST_AUTH_SIGNING_KEY_FILE"
    elif inline:
        pem = inline.encode()
        source = "ROOMCAST_AUTH_SIGNING_KEY"
    else:
        raise ConfigurationError(MISSING_KEY_MESSAGE)
    try:
        return load_private_key(pem)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"{source} is not an unencrypted Ed25519 private key in PEM (PKCS#8): {exc}"
        ) from exc


def parse_public_keys(text: str) -> tuple[Ed25519PublicKey, ...]:
    """Every ``PUBLIC KEY`` PEM block in ``text``; each must be Ed25519."""
    keys: list[Ed25519PublicKey] = []
    for match in _PEM_BLOCK.finditer(text):
        if match.group(1) != "PUBLIC KEY":
            raise ConfigurationError(f"unexpected PEM block {match.group(1)!r}; want PUBLIC KEY")
        try:
            key = serialization.load_pem_public_key(match.group(0).encode())
        except ValueError as exc:
            raise ConfigurationError(f"invalid public key: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigurationError("published keys must be Ed25519 public keys")
        keys.append(key)
    return tuple(keys)


def load_extra_public_keys(settings: Settings) -> tuple[Ed25519PublicKey, ...]:
    path = settings.previous_public_keys_file
    if path is None:
        return ()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read ROOMCAST_AUTH_PREVIOUS_PUBLIC_KEYS_FILE: {exc}"
        ) from exc
    keys = parse_public_keys(text)
    if not keys:
        raise ConfigurationError("ROOMCAST_AUTH_PREVIOUS_PUBLIC_KEYS_FILE has no PUBLIC KEY")
    return keys


def build_signer(settings: Settings) -> TokenSigner:
    """The token signer, or :class:`ConfigurationError` with a message for the operator."""
    private_key = load_signing_key(settings)
    current = key_id(private_key.public_key())
    extra = tuple(k for k in load_extra_public_keys(settings) if key_id(k) != current)
    return TokenSigner(
        private_key,
        issuer=settings.issuer,
        audience=settings.audience,
        access_ttl_seconds=settings.access_ttl_seconds,
        extra_public_keys=extra,
    )


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
