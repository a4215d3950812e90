"""Reading one file out of a ``multipart/form-data`` upload as the bytes arrive.

Only the first part that has a filename is kept (the form field ``file``); its bytes
are yielded in the order they arrive, so the caller can hash them and hand them to the
blob store without the whole file ever being in memory. Everything about the upload is
bounded: the header block of a part, the parts before the file, the file's size.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass

from roomcast.history.errors import FileTooLarge, InvalidUpload

# A part's header block (Content-Disposition, Content-Type): a few hundred bytes in
# practice; 8 KiB is what web servers allow for a whole request's headers.
MAX_PART_HEADER_BYTES = 8 * 1024
# Bytes of form parts before the file part (a browser may send a caption field first).
MAX_PREAMBLE_BYTES = 64 * 1024
# A stored file name in code points: longer than any real name, short enough to show.
MAX_NAME_CHARS = 255
_BOUNDARY = re.compile(r'boundary="?([0-9A-Za-z\'()+_,./:=? -]{1,70})"?')
_FILENAME = re.compile(r'filename="((?:[^"\\]|\\.)*)"')
_NAME = re.compile(r'\bname="([^"]*)"')
# What a content type may be: type/subtype with plain characters, no parameters kept.
_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$")
DEFAULT_CONTENT_TYPE = "application/octet-stream"


@dataclass(slots=True)
class UploadPart:
    name: str
    content_type: str
    chunks: AsyncIterator[bytes]


def boundary_of(content_type: str | None) -> bytes:
    if not content_type or not content_type.lower().startswith("multipart/form-data"):
        raise InvalidUpload("the upload must be multipart/form-data")
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise InvalidUpload("the multipart boundary is missing")
    return match.group(1).strip().encode("ascii")


def sanitise_name(raw: str) -> str:
    """The last path segment of a client's file name, without control or format
    characters, trimmed; ``file`` if nothing is left."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C")
    name = name.strip().strip(".")[:MAX_NAME_CHARS].strip()
    return name or "file"


def content_type_of(raw: str | None) -> str:
    if raw is None:
        return DEFAULT_CONTENT_TYPE
    value = raw.split(";", 1)[0].strip().lower()
    if not _CONTENT_TYPE.fullmatch(value):
        raise InvalidUpload("the file part's content type is not a valid media type")
    return value


class _Reader:
    """Buffered reads over the request's body stream."""

    def __init__(self, stream: AsyncIterator[bytes]) -> None:
        self._stream = stream
        self.buffer = b""
        self.done = False

    async def more(self) -> bool:
        if self.done:
            return False
        try:
            chunk = await anext(self._stream)
        except StopAsyncIteration:
            self.done = True
            return False
        self.buffer += chunk
        return True

    async def until(self, marker: bytes, limit: int) -> bytes:
        """Bytes up to ``marker`` (consumed), at most ``limit`` of them."""
        while (at := self.buffer.find(marker)) < 0:
            if len(self.buffer) > limit + len(marker):
                raise InvalidUpload("a multipart section is too long")
            if not await self.more():
                raise InvalidUpload("the upload ended early")
        if at > limit:
            raise InvalidUpload("a multipart section is too long")
        head, self.buffer = self.buffer[:at], self.buffer[at + len(marker) :]
        return head


async def file_part(body: AsyncIterator[bytes], boundary: bytes, max_bytes: int) -> UploadPart:
    """The upload's file part; its ``chunks`` raise FileTooLarge past ``max_bytes``."""
    reader = _Reader(body)
    delimiter = b"--" + boundary
    await reader.until(delimiter, MAX_PREAMBLE_BYTES)
    seen = 0
    while True:
        headers = (await reader.until(b"\r\n\r\n", MAX_PART_HEADER_BYTES)).decode(
            "utf-8", "replace"
        )
        disposition = ""
        part_type: str | None = None
        for line in headers.split("\r\n"):
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-disposition":
                disposition = value
            elif key.strip().lower() == "content-type":
                part_type = value
        filename = _FILENAME.search(disposition)
        field = _NAME.search(disposition)
        if filename is not None and field is not None and field.group(1) == "file":
            return UploadPart(
                sanitise_name(filename.group(1).replace('\\"', '"')),
                content_type_of(part_type),
                _part_bytes(reader, b"\r\n" + delimiter, max_bytes),
            )
        # Another field: skip it, within the preamble bound.
        skipped = await reader.until(b"\r\n" + delimiter, MAX_PREAMBLE_BYTES - seen)
        seen += len(skipped) + len(headers)
        while len(reader.buffer) < 2 and await reader.more():
            pass
        if reader.buffer.startswith(b"--"):
            raise InvalidUpload('the upload has no "file" part')


async def _part_bytes(reader: _Reader, end: bytes, max_bytes: int) -> AsyncIterator[bytes]:
    total = 0
    keep = len(end) - 1  # a tail that may be the start of the delimiter
    while True:
        at = reader.buffer.find(end)
        if at >= 0:
            data, reader.buffer = reader.buffer[:at], b""
            total += len(data)
            if total > max_bytes:
                raise FileTooLarge(f"the file is larger than {max_bytes} bytes")
            if data:
                yield data
            return
        if len(reader.buffer) > keep:
            data = reader.buffer[:-keep]
            reader.buffer = reader.buffer[-keep:]
            total += len(data)
            if total > max_bytes:
                raise FileTooLarge(f"the file is larger than {max_bytes} bytes")
            yield data
        if not await reader.more():
            raise InvalidUpload("the upload ended before the file part did")
