"""Webhook endpoints are checked when the notifier starts: an http(s) URL without
credentials, and no private address unless the operator says so (SSRF)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from roomcast.notifier.settings import Settings

SECRET = "s" * 32
VAPID = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE"


def settings(url: str, **extra: Any) -> Settings:
    hooks = [{"name": "hook", "url": url, "secret": SECRET}]
    return Settings(
        service_password="p" * 16,
        vapid_private_key=VAPID,
        webhooks=orjson.dumps(hooks).decode(),
        **extra,
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000/hook",
        "https://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/hook",
        "http://[fd00::1]/hook",
        "http://0.0.0.0/hook",
        "http://localhost:8080/hook",
        "http://LOCALHOST./hook",
    ],
)
def test_a_private_webhook_address_is_refused_unless_allowed(url: str) -> None:
    with pytest.raises(ValidationError, match="private address"):
        settings(url)
    assert settings(url, webhook_allow_private_hosts=True).webhooks[0].url == url


@pytest.mark.parametrize(
    "url",
    ["ftp://hooks.example.com/x", "https://user:pw@hooks.example.com/x", "https://:80/x"],
)
def test_a_webhook_url_must_be_plain_http(url: str) -> None:
    with pytest.raises(ValidationError):
        settings(url, webhook_allow_private_hosts=True)


def test_a_public_webhook_is_accepted() -> None:
    assert settings("https://hooks.example.com/roomcast").webhooks[0].name == "hook"
