"""Settings and key loading: environment parsing, defaults, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from roomcast.auth.errors import ConfigurationError
from roomcast.auth.keys import build_signer, parse_public_keys, public_pem
from roomcast.auth.settings import Settings
from roomcast.common.tokens import generate_private_key_pem, key_id, load_private_key


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("ROOMCAST_AUTH_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = Settings()
    assert settings.port == 8081
    assert settings.mongo_db == "roomcast_auth"
    assert settings.issuer == "roomcast-auth"
    assert settings.audience == "roomcast"
    assert settings.bcrypt_cost == 12
    assert settings.access_ttl_seconds == 900
    assert settings.refresh_ttl_seconds == 30 * 86400
    assert (settings.login_rate_limit, settings.login_rate_window_seconds) == (10, 30.0)
    assert (settings.register_rate_limit, settings.register_rate_window_seconds) == (10, 30.0)
    assert settings.admin_usernames == frozenset()
    assert settings.trusted_proxies == ()
    assert settings.signing_key is None
    assert settings.max_body_bytes == 16 * 1024


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROOMCAST_AUTH_PORT", "9999")
    monkeypatch.setenv("ROOMCAST_AUTH_MONGO_URL", "mongodb://db:27017")
    monkeypatch.setenv("ROOMCAST_AUTH_NATS_URL", "nats://n1:4222,nats://n2:4222")
    monkeypatch.setenv("ROOMCAST_AUTH_ADMIN_USERNAMES", " Root ,ops,, ")
    monkeypatch.setenv("ROOMCAST_AUTH_TRUSTED_PROXIES", "10.0.0.1, 192.168.0.0/16")
    monkeypatch.setenv("ROOMCAST_AUTH_BCRYPT_COST", "10")
    settings = Settings()
    assert settings.port == 9999
    assert settings.mongo_url == "mongodb://db:27017"
    assert settings.nats_url == "nats://n1:4222,nats://n2:4222"
    assert settings.admin_usernames == frozenset({"root", "ops"})
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.1/32", "192.168.0.0/16"]
    assert settings.bcrypt_cost == 10


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ROOMCAST_AUTH_BCRYPT_COST", "3"),
        ("ROOMCAST_AUTH_BCRYPT_COST", "32"),
        ("ROOMCAST_AUTH_TRUSTED_PROXIES", "not-an-ip"),
        ("ROOMCAST_AUTH_ACCESS_TTL_SECONDS", "0"),
        ("ROOMCAST_AUTH_LOGIN_RATE_LIMIT", "0"),
    ],
)
def test_invalid_environment(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_signing_key_is_required() -> None:
    with pytest.raises(ConfigurationError, match="ROOMCAST_AUTH_SIGNING_KEY"):
        build_signer(Settings())


def test_signing_key_inline_or_file_but_not_both(tmp_path: Path) -> None:
    pem = generate_private_key_pem()
    path = tmp_path / "key.pem"
    path.write_bytes(pem)
    expected = key_id(load_private_key(pem).public_key())
    assert build_signer(Settings(signing_key=pem.decode())).kid == expected
    assert build_signer(Settings(signing_key_file=path)).kid == expected
    with pytest.raises(ConfigurationError, match="only one"):
        build_signer(Settings(signing_key=pem.decode(), signing_key_file=path))


def test_previous_public_keys_are_published(tmp_path: Path) -> None:
    current = generate_private_key_pem()
    old1, old2 = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    path = tmp_path / "previous.pem"
    # The current key listed too is not published twice.
    current_public = public_pem(load_private_key(current))
    path.write_text(public_pem(old1) + "\n" + public_pem(old2) + current_public)
    signer = build_signer(Settings(signing_key=current.decode(), previous_public_keys_file=path))
    kids = [k["kid"] for k in signer.jwks()["keys"]]
    assert kids == [
        key_id(load_private_key(current).public_key()),
        key_id(old1.public_key()),
        key_id(old2.public_key()),
    ]


def test_bad_previous_keys_are_refused(tmp_path: Path) -> None:
    current = generate_private_key_pem().decode()
    empty = tmp_path / "empty.pem"
    empty.write_text("nothing here")
    with pytest.raises(ConfigurationError, match="no PUBLIC KEY"):
        build_signer(Settings(signing_key=current, previous_public_keys_file=empty))
    private = tmp_path / "private.pem"
    private.write_text(current)
    with pytest.raises(ConfigurationError, match="want PUBLIC KEY"):
        build_signer(Settings(signing_key=current, previous_public_keys_file=private))
    with pytest.raises(ConfigurationError, match="cannot read"):
        build_signer(
            Settings(signing_key=current, previous_public_keys_file=tmp_path / "missing.pem")
        )
    assert parse_public_keys("") == ()
