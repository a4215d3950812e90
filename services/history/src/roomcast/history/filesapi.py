"""History's file routes: upload into a room, the sender's check before sharing, and
download by members of a room where the file is shared (docs/files.md).

``authorize`` and ``membership`` are the read API's own (app.py), so a file request is
charged and checked like any history read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import quote

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

from roomcast.common.errors import Forbidden, NotFound, error_body
from roomcast.common.httpinputs import json_response
from roomcast.common.subjects import is_object_id
from roomcast.common.tokens import AccessClaims
from roomcast.history.errors import FileNotFound, FileTooLarge, InvalidUpload
from roomcast.history.files import BlobStore, FileCatalog, FileMeta
from roomcast.history.filesupload import (
    MAX_PART_HEADER_BYTES,
    MAX_PREAMBLE_BYTES,
    boundary_of,
    file_part,
)
from roomcast.history.membership import MembershipChecker

Authorize = Callable[[Request, str | None], Awaitable[AccessClaims]]

# Shown in the browser (inline) only when plainly harmless; everything else, HTML and
# SVG above all (they run script in the file's origin), is served as an attachment.
INLINE_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain"}
)
# Multipart framing around the file: the boundaries, the part headers and a caption
# field; what a Content-Length may exceed the file limit by.
MULTIPART_OVERHEAD_BYTES = MAX_PREAMBLE_BYTES + MAX_PART_HEADER_BYTES + 1024
_RANGE = re.compile(r"^bytes=(\d{0,19})-(\d{0,19})$")


_UPLOAD_PATH = re.compile(r"^/v1/rooms/[^/]+/files$")


def is_upload_path(path: str) -> bool:
    """The upload route streams its body and enforces the file limit itself."""
    return _UPLOAD_PATH.fullmatch(path) is not None


class RangeNotSatisfiable(Exception):
    """A Range header that selects no byte of the file (416)."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end) inclusive of a single-range ``Range`` header, None for the whole
    file (no header, or a form this server does not serve partially, e.g. several
    ranges: RFC 9110 lets a server ignore Range)."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:  # the last N bytes
        count = int(last)
        if count == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - count), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if last and int(last) < start:
        return None  # invalid: ignored, whole file
    if start >= size:
        raise RangeNotSatisfiable
    return start, end


def disposition(meta: FileMeta) -> str:
    kind = "inline" if meta.content_type in INLINE_TYPES else "attachment"
    ascii_name = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in meta.name
    )
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(meta.name, safe='')}"


def add_file_routes(
    app: FastAPI,
    *,
    authorize: Authorize,
    membership: MembershipChecker,
    catalog: FileCatalog,
    blobs: BlobStore,
    max_bytes: int,
) -> None:
    @app.post("/v1/rooms/{room_id}/files")
    async def upload(room_id: str, request: Request) -> Response:
        """Store one file for a member of the room; 201 with its metadata."""
        claims = await authorize(request, room_id)
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            raise InvalidUpload("an upload needs a Content-Length")
        if int(length) > max_bytes + MULTIPART_OVERHEAD_BYTES:
            raise FileTooLarge(f"the file is larger than {max_bytes} bytes")
        boundary = boundary_of(request.headers.get("content-type"))
        await membership.require_member(claims, room_id)
        part = await file_part(request.stream(), boundary, max_bytes)
        digest = hashlib.sha256()
        size = 0

        async def counted() -> AsyncIterator[bytes]:
            nonlocal size
            async for chunk in part.chunks:
                digest.update(chunk)
                size += len(chunk)
                yield chunk

        file_id = secrets.token_hex(12)
        await blobs.put(file_id, counted())
        meta = FileMeta(
            id=file_id,
            room_id=room_id,
            uploader=claims.user_id,
            name=part.name,
            size=size,
            content_type=part.content_type,
            sha256=digest.hexdigest(),
            created_at=dt.datetime.now(dt.UTC),
        )
        await catalog.add(meta)
        return json_response({"file": meta.to_public()}, status_code=201)

    @app.get("/v1/rooms/{room_id}/files/{file_id}")
    async def own_file(room_id: str, file_id: str, request: Request) -> Response:
        """The metadata of a file the caller uploaded into this room (the gateway asks
        before a ``file`` send); 404 for any other file."""
        claims = await authorize(request, room_id)
        meta = await catalog.get(file_id) if is_object_id(file_id) else None
        if meta is None or meta.room_id != room_id or meta.uploader != claims.user_id:
            raise FileNotFound("no such file of yours in this room")
        return json_response({"file": meta.to_public()})

    @app.get("/v1/files/{file_id}")
    async def download(file_id: str, request: Request) -> Response:
        """The file's bytes (or one range of them) for a member of a room where a
        message the caller may see shares it; 404 otherwise, whatever the reason."""
        claims = await authorize(request, None)
        meta = await catalog.get(file_id) if is_object_id(file_id) else None
        if meta is None or not await catalog.shared_with(meta, claims.user_id):
            raise FileNotFound("no such file shared with you")
        try:
            await membership.require_member(claims, meta.room_id)
        except (Forbidden, NotFound) as exc:
            raise FileNotFound("no such file shared with you") from exc
        headers = {
            "Content-Disposition": disposition(meta),
            "X-Content-Type-Options": "nosniff",
            # Even opened directly, the file runs no script and reaches no origin.
            "Content-Security-Policy": "sandbox; default-src 'none'",
            "Accept-Ranges": "bytes",
            "Cache-Control": "private, no-store",
            "ETag": f'"{meta.sha256}"',
        }
        try:
            wanted = byte_range(request.headers.get("range"), meta.size)
        except RangeNotSatisfiable:
            headers["Content-Range"] = f"bytes */{meta.size}"
            return Response(
                orjson.dumps(
                    error_body("range_not_satisfiable", f"the file has {meta.size} bytes")
                ),
                status_code=416,
                media_type="application/json",
                headers=headers,
            )
        if wanted is None:
            start, end, status = 0, meta.size - 1, 200
        else:
            (start, end), status = wanted, 206
            headers["Content-Range"] = f"bytes {start}-{end}/{meta.size}"
        headers["Content-Length"] = str(end - start + 1)
        body = blobs.read(meta.id, start, end) if meta.size else _empty()
        return StreamingResponse(
            body, status_code=status, media_type=meta.content_type, headers=headers
        )


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""
