"""The service app skeleton: body limits, error envelope, health endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from fastapi import Request

from roomcast.common.errors import RateLimited
from roomcast.common.httpapp import create_service_app


def make_app() -> httpx.AsyncClient:
    app = create_service_app("commontest", max_body_bytes=100)

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    @app.get("/limited")
    async def limited() -> None:
        raise RateLimited("slow down", retry_after=2.2)

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_body_over_limit_is_413_with_or_without_content_length() -> None:
    async with make_app() as client:
        ok = await client.post("/echo", content=b"x" * 100)
        assert ok.json() == {"size": 100}
        declared = await client.post("/echo", content=b"x" * 101)
        assert declared.status_code == 413
        assert declared.json()["error"]["code"] == "payload_too_large"

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(5):
                yield b"y" * 40

        chunked = await client.post("/echo", content=chunks())
        assert chunked.status_code == 413
        assert chunked.json()["error"]["code"] == "payload_too_large"


async def test_rate_limited_has_retry_after_and_envelope() -> None:
    async with make_app() as client:
        response = await client.get("/limited")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.json() == {"error": {"code": "rate_limited", "message": "slow down"}}


async def test_unknown_route_uses_envelope_and_request_id_is_echoed() -> None:
    async with make_app() as client:
        response = await client.get("/nope", headers={"x-request-id": "abc123"})
        ready = await client.get("/readyz")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert response.headers["x-request-id"] == "abc123"
    assert ready.json() == {"status": "ready"}
