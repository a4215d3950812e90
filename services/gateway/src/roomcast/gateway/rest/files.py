"""File uploads and downloads, relayed to history as they stream (docs/files.md).

The gateway keeps no file state: history owns room data, so it stores the bytes and
decides who may read them. Here the token is verified (401 without a hop), the upload's
declared size is checked against the same limit history applies (413 before a byte is
relayed), and the bodies pass through chunk by chunk in both directions, so a gateway
holds about one chunk of each transfer in memory.
"""

# No ``from __future__ import annotations``: FastAPI must see the real ``Auth`` alias.

import re
from collections.abc import AsyncIterator
from typing import Annotated

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from roomcast.common.errors import DependencyUnavailable, InvalidInput, PayloadTooLarge
from roomcast.gateway.rest.deps import Caller, RestDeps, caller_dependency
from roomcast.gateway.rest.docs import errors
from roomcast.gateway.rest.models import ErrorEnvelope
from roomcast.gateway.rest.rooms import room_id_of
from roomcast.gateway.rest.upstream import upstream_headers

# Multipart framing a Content-Length may exceed the file limit by: boundaries, part
# headers and a short caption field (history allows 64 KiB of fields before the file).
MULTIPART_OVERHEAD_BYTES = 80 * 1024
# How long a transfer may take end to end: 25 MiB at a slow 256 kbit/s is ~14 minutes;
# 15 minutes bounds a stalled client's hold on an upstream connection.
TRANSFER_SECONDS = 900.0
# Headers of history's download answer that the client needs (type, size, range,
# disposition and the safety headers that stop a browser running the file).
DOWNLOAD_HEADERS = (
    "content-type",
    "content-length",
    "content-range",
    "content-disposition",
    "content-security-policy",
    "x-content-type-options",
    "accept-ranges",
    "cache-control",
    "etag",
    "retry-after",
)
_UPLOAD_PATH = re.compile(r"^/v1/rooms/[^/]+/files$")
_FILE_ID = re.compile(r"^[0-9a-f]{24}$")


def is_upload_path(path: str) -> bool:
    """Uploads stream past the REST body limit; this module enforces the file limit."""
    return _UPLOAD_PATH.fullmatch(path) is not None


class InvalidFileId(InvalidInput):
    """The file id is not a 24-character lowercase hex id."""

    code = "invalid_file_id"


class UploadTooLarge(PayloadTooLarge):
    """The upload is larger than the file limit."""

    code = "file_too_large"


class FileInfo(BaseModel):
    id: str
    name: str
    size: int
    content_type: str
    sha256: str


class FileUploaded(BaseModel):
    file: FileInfo


# The upload's body in the OpenAPI document (the handler streams it, unparsed).
UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}},
            }
        }
    },
}


def create_files_router(deps: RestDeps) -> APIRouter:
    router = APIRouter(tags=["files"])
    Auth = Annotated[Caller, caller_dependency(deps.verifier)]

    @router.post(
        "/v1/rooms/{room_id}/files",
        status_code=201,
        response_model=FileUploaded,
        openapi_extra={"requestBody": UPLOAD_BODY},
        responses=errors(400, 401, 403, 404, 413, 503),
        summary="Upload a file into a room (multipart/form-data, field 'file')",
    )
    async def upload(room_id: str, request: Request, caller: Auth) -> Response:
        length = request.headers.get("content-length")
        if length is None or not length.isdigit() or len(length) > 19:
            raise InvalidInput("an upload needs a Content-Length")
        if int(length) > deps.files_max_bytes + MULTIPART_OVERHEAD_BYTES:
            raise UploadTooLarge(f"the file is larger than {deps.files_max_bytes} bytes")
        headers = upstream_headers(request, deps.trusted_proxies)
        headers["content-length"] = length
        url = f"{deps.history_url}/v1/rooms/{room_id_of(room_id)}/files"
        upstream = deps.http.build_request(
            "POST", url, headers=headers, content=request.stream(), timeout=TRANSFER_SECONDS
        )
        return await _relay(deps.http, upstream)

    @router.get(
        "/v1/files/{file_id}",
        responses={
            **errors(400, 401, 404, 503),
            200: {
                "description": "the file (Content-Disposition, nosniff, CSP sandbox)",
                "content": {"application/octet-stream": {"schema": {"type": "string"}}},
            },
            206: {"description": "the requested range (Content-Range)"},
            416: {
                "model": ErrorEnvelope,
                "description": "the range starts past the end (Content-Range: bytes */size)",
            },
        },
        summary="Download a file shared in a room the caller is in (Range supported)",
    )
    async def download(file_id: str, request: Request, caller: Auth) -> Response:
        if _FILE_ID.fullmatch(file_id) is None:
            raise InvalidFileId("file id must be 24 lowercase hex characters")
        headers = upstream_headers(request, deps.trusted_proxies)
        wanted = request.headers.get("range")
        if wanted is not None and wanted.isascii() and len(wanted) <= 100:
            headers["range"] = wanted
        upstream = deps.http.build_request(
            "GET",
            f"{deps.history_url}/v1/files/{file_id}",
            headers=headers,
            timeout=TRANSFER_SECONDS,
        )
        return await _relay(deps.http, upstream)

    return router


async def _relay(client: httpx.AsyncClient, upstream: httpx.Request) -> Response:
    """history's answer, streamed back as it arrives."""
    try:
        response = await client.send(upstream, stream=True)
    except httpx.TimeoutException as exc:
        raise DependencyUnavailable("the history service did not answer in time") from exc
    except httpx.HTTPError as exc:
        raise DependencyUnavailable("the history service is unavailable") from exc
    relayed = {name: value for name in DOWNLOAD_HEADERS if (value := response.headers.get(name))}

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        finally:
            await response.aclose()

    return StreamingResponse(body(), status_code=response.status_code, headers=relayed)
