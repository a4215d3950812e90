"""Calls from the REST edge to the services behind it, and the one mapping of their
failures to the public error envelope.

- HTTP (auth, history): :func:`forward` relays a request (method, path, query, body,
  content-type, authorization, X-Forwarded-For, X-Request-Id) and returns the
  upstream's status, body and the headers a client needs. Unreachable or too slow →
  503 ``dependency_unavailable``.
- gRPC (rooms): :func:`call_rooms` sends the caller's token in metadata and turns a
  gRPC status into a ``RoomcastError`` (:func:`error_from_grpc`, the only place).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any, TypeVar

import grpc
import httpx
import orjson
from fastapi import Request
from fastapi.responses import Response

from roomcast.common.errors import (
    Conflict,
    DependencyUnavailable,
    Forbidden,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    RateLimited,
    RoomcastError,
    Unauthenticated,
)
from roomcast.common.grpcmeta import bearer_metadata
from roomcast.common.logging import request_id_var
from roomcast.common.proxies import IpNetwork, forwarded_hops, is_trusted

log = logging.getLogger(__name__)

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

# Request headers relayed to auth/history as-is (the rest are the client's business).
FORWARDED_REQUEST_HEADERS = ("content-type", "authorization", "accept")
# Response headers relayed back: the body's type, rate-limit advice, caching of the
# JWKS, and the auth challenge. Hop-by-hop and length headers are recomputed.
FORWARDED_RESPONSE_HEADERS = ("content-type", "retry-after", "cache-control", "www-authenticate")
# Largest upstream response relayed: a page of 100 messages is ~50 KB, every auth
# response is a few KB; 4 MiB means something is wrong upstream, not a big page.
MAX_UPSTREAM_BODY_BYTES = 4 * 1024 * 1024
# Hops kept from a trusted proxy's X-Forwarded-For chain: real chains have 1-3; a
# longer one is junk that would only grow auth's logs.
MAX_FORWARDED_HOPS = 10
# rooms does not say how long to wait on RESOURCE_EXHAUSTED (its room-creation bucket
# refills one room every 2 s at the default 30/min), unless it sends a "retry-after"
# trailer; 2 s is then the advice.
DEFAULT_RETRY_AFTER_SECONDS = 2.0
# "<code>: <message>" details, as rooms formats them (see roomcast.rooms.errors).
_DETAILS = re.compile(r"^([a-z][a-z0-9_]{0,63}): (.*)$", re.DOTALL)
# Longest upstream error message relayed to a client.
MAX_ERROR_MESSAGE_CHARS = 300


# ---------------------------------------------------------------------------- HTTP


def forwarded_for(request: Request, trusted: Sequence[IpNetwork]) -> str:
    """The X-Forwarded-For to send upstream: the peer appended to the incoming chain
    when the peer is a trusted proxy, else the peer alone (a client's own chain is
    not believed)."""
    peer = request.client.host if request.client is not None else "unknown"
    if trusted and is_trusted(peer, trusted):
        hops = forwarded_hops(request.headers.getlist("x-forwarded-for"))
        return ", ".join([*hops[-MAX_FORWARDED_HOPS:], peer])
    return peer


def upstream_headers(request: Request, trusted: Sequence[IpNetwork]) -> dict[str, str]:
    # Values are stripped: surrounding whitespace is not part of a header value, and
    # HTTP/1.1 clients (h11) refuse to send it.
    headers = {
        name: value.strip()
        for name in FORWARDED_REQUEST_HEADERS
        if (value := request.headers.get(name)) is not None and value.strip()
    }
    for name, value in headers.items():
        # HTTP clients send ASCII header values only; a client's Latin-1 bytes are
        # refused here rather than failing the upstream request.
        if not value.isascii():
            if name == "authorization":
                raise Unauthenticated("malformed access token", code="invalid_token")
            raise InvalidInput(f"the {name} header must be ASCII")
    headers["x-forwarded-for"] = forwarded_for(request, trusted)
    request_id = request_id_var.get()
    if request_id:
        headers["x-request-id"] = request_id
    return headers


async def send(
    client: httpx.AsyncClient,
    service: str,
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    content: bytes | None = None,
    params: Any = None,
    time_limit: float,
) -> tuple[int, bytes, httpx.Headers]:
    """One upstream request, its body bounded; 503 when the service cannot answer."""
    request = client.build_request(
        method,
        url,
        headers=headers,
        content=content,
        params=params,
        timeout=httpx.Timeout(time_limit, connect=client.timeout.connect, pool=client.timeout.pool),
    )
    try:
        response = await client.send(request, stream=True)
        try:
            body = bytearray()
            # Decoded bytes: Content-Encoding is not relayed (the body is sent as-is).
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_UPSTREAM_BODY_BYTES:
                    log.warning("oversized response from %s", service)
                    raise DependencyUnavailable(f"{service} sent an oversized response")
        finally:
            await response.aclose()
    except httpx.LocalProtocolError as exc:
        # What the client sent cannot be relayed as HTTP (a header value h11 refuses).
        raise InvalidInput("the request cannot be forwarded as sent") from exc
    except httpx.TimeoutException as exc:
        log.warning("%s timed out: %r", service, exc)
        raise DependencyUnavailable(f"the {service} service did not answer in time") from exc
    except httpx.HTTPError as exc:
        log.warning("%s unreachable: %r", service, exc)
        raise DependencyUnavailable(f"the {service} service is unavailable") from exc
    return response.status_code, bytes(body), response.headers


async def forward(
    request: Request,
    client: httpx.AsyncClient,
    service: str,
    url: str,
    *,
    time_limit: float,
    trusted: Sequence[IpNetwork],
    params: dict[str, str] | None = None,
) -> Response:
    """Relay ``request`` (method, body, headers above) to ``url`` and return the
    upstream's answer. The query is ``params`` if given, else the request's raw query.
    ``url`` is built by the caller from validated parts, never from the raw path."""
    body = await request.body()
    if params is None and request.url.query:
        url += "?" + request.url.query
    status, content, headers = await send(
        client,
        service,
        request.method,
        url,
        headers=upstream_headers(request, trusted),
        content=body or None,
        params=params,
        time_limit=time_limit,
    )
    relayed = {name: value for name in FORWARDED_RESPONSE_HEADERS if (value := headers.get(name))}
    if status == 204 or status == 304:
        return Response(status_code=status, headers=relayed)
    return Response(content=content, status_code=status, headers=relayed)


async def history_summaries(
    client: httpx.AsyncClient,
    history_url: str,
    token: str,
    room_ids: list[str],
    *,
    time_limit: float,
) -> dict[str, Any] | None:
    """history's ``POST /v1/summaries`` for the caller's rooms: ``{room_id: {last_seq,
    unread, last_message}}``, or None when history cannot answer (the caller degrades)."""
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    request_id = request_id_var.get()
    if request_id:
        headers["x-request-id"] = request_id
    try:
        status, body, _ = await send(
            client,
            "history",
            "POST",
            f"{history_url}/v1/summaries",
            headers=headers,
            content=orjson.dumps({"room_ids": room_ids}),
            time_limit=time_limit,
        )
        result = orjson.loads(body) if status == 200 else None
    except (RoomcastError, orjson.JSONDecodeError) as exc:
        log.warning("room summaries unavailable: %r", exc)
        return None
    if not isinstance(result, dict):
        log.warning("room summaries unavailable: history answered %d", status)
        return None
    return result


# ---------------------------------------------------------------------------- gRPC


def _split_details(details: str | None, default_code: str) -> tuple[str, str]:
    text = (details or "").strip()[:MAX_ERROR_MESSAGE_CHARS]
    match = _DETAILS.match(text)
    if match:
        return match.group(1), match.group(2) or default_code
    return default_code, text or default_code


def _retry_after(exc: grpc.aio.AioRpcError) -> float:
    for key, value in exc.trailing_metadata() or ():
        if key == "retry-after":
            try:
                return max(1.0, float(value))
            except (TypeError, ValueError):
                break
    return DEFAULT_RETRY_AFTER_SECONDS


def error_from_grpc(exc: grpc.aio.AioRpcError, service: str = "rooms") -> RoomcastError:
    """The public error for a failed rooms call (status → HTTP happens once, here).

    INVALID_ARGUMENT 400, UNAUTHENTICATED 401, PERMISSION_DENIED 403, NOT_FOUND 404,
    ALREADY_EXISTS / FAILED_PRECONDITION / ABORTED 409, RESOURCE_EXHAUSTED 429,
    anything else (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, INTERNAL...) 503.
    """
    code = exc.code()
    status_map: dict[grpc.StatusCode, tuple[type[RoomcastError], str]] = {
        grpc.StatusCode.INVALID_ARGUMENT: (InvalidInput, "invalid_request"),
        grpc.StatusCode.UNAUTHENTICATED: (Unauthenticated, "unauthenticated"),
        grpc.StatusCode.PERMISSION_DENIED: (Forbidden, "forbidden"),
        grpc.StatusCode.NOT_FOUND: (NotFound, "not_found"),
        grpc.StatusCode.ALREADY_EXISTS: (Conflict, "conflict"),
        grpc.StatusCode.FAILED_PRECONDITION: (PreconditionFailed, "precondition_failed"),
        grpc.StatusCode.ABORTED: (PreconditionFailed, "concurrent_change"),
    }
    mapped = status_map.get(code)
    if mapped is not None:
        cls, default = mapped
        error_code, message = _split_details(exc.details(), default)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            # One code for every validation failure, whoever found it (rooms says
            # invalid_argument); the message tells which field.
            error_code = "invalid_request"
        return cls(message, code=error_code)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        error_code, message = _split_details(exc.details(), "rate_limited")
        return RateLimited(message, code=error_code, retry_after=_retry_after(exc))
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        log.warning("%s timed out", service)
        return DependencyUnavailable(f"the {service} service did not answer in time")
    log.warning("%s failed: %s %s", service, code.name, exc.details())
    return DependencyUnavailable(f"the {service} service is unavailable")


async def call_rooms(
    method: grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp],
    request: _Req,
    token: str,
    *,
    time_limit: float,
) -> _Resp:
    """Call one rooms RPC as the user who owns ``token``."""
    metadata: tuple[tuple[str, str], ...] = bearer_metadata(token)
    request_id = request_id_var.get()
    if request_id:
        metadata += (("x-request-id", request_id),)
    try:
        return await method(request, metadata=metadata, timeout=time_limit)
    except grpc.aio.AioRpcError as exc:
        raise error_from_grpc(exc) from exc
