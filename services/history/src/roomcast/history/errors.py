"""history's errors; mapped to HTTP statuses by roomcast.common.httpapp."""

from __future__ import annotations

from roomcast.common.errors import (
    DependencyUnavailable,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthenticated,
)


class InvalidRoomId(InvalidInput):
    """The room id is not a 24-character lowercase hex id."""

    code = "invalid_room_id"


class InvalidPageParameter(InvalidInput):
    """A pagination parameter (limit, before) has an invalid value."""

    code = "invalid_request"


class InvalidBody(InvalidInput):
    """A request body that is not the expected JSON object."""

    code = "invalid_request"


class MissingToken(Unauthenticated):
    """No bearer token in the Authorization header."""

    code = "unauthenticated"


class NotAMember(Forbidden):
    """The caller is not a member of this room."""

    code = "not_a_member"


class RoomNotFound(NotFound):
    """The room does not exist or is not visible to the caller."""

    code = "room_not_found"


class MessageNotFound(NotFound):
    """No message with this seq in the room that the caller may see."""

    code = "message_not_found"


class ReadsRateLimited(RateLimited):
    """Too many history reads by this user."""


class RoomsUnavailable(DependencyUnavailable):
    """The rooms service cannot be reached."""


class StoreUnavailable(DependencyUnavailable):
    """MongoDB cannot be reached."""


class InvalidUpload(InvalidInput):
    """A file upload that is not a well-formed multipart form with a ``file`` part."""

    code = "invalid_upload"


class FileTooLarge(PayloadTooLarge):
    """The uploaded file is larger than the configured limit."""

    code = "file_too_large"


class FileNotFound(NotFound):
    """No such file, or not shared with the caller in a message they may see."""

    code = "file_not_found"


class BlobStoreUnavailable(DependencyUnavailable):
    """The file store (an S3-compatible bucket) failed or cannot be reached."""


class StreamMismatch(DependencyUnavailable):
    """``CHAT`` is not the stream history recorded (deleted and re-created): history
    refuses to consume it until an operator recovers (docs/operations.md)."""
