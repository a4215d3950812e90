"""Chat records as the gateways store them in JetStream, parsed and validated.

The record format and its rules are defined once, in ``roomcast.common.chatrecord``
(the gateways encode with it); history decodes with the same module, so whatever a
gateway acknowledged, history can store. This module keeps history's names for it.

Everything that ends up in MongoDB is checked there first: ids are ObjectId strings,
strings have length limits and no NUL, text bodies follow the text rule, and ``body``
holds only plain JSON whose keys cannot be read as MongoDB operators (``$...``) or
paths (``a.b``).
"""

from __future__ import annotations

from roomcast.common.chatrecord import (
    MAX_BODY_DEPTH,
    MAX_NAME_CHARS,
    MAX_RECORD_BYTES,
    MAX_TEXT_CHARS,
    MAX_TIMESTAMP_CHARS,
    MAX_URL_CHARS,
    Change,
    ChatMessage,
    DeleteRecord,
    EditRecord,
    InvalidRecord,
    ReactionRecord,
    Record,
    Sender,
    room_of_subject,
)
from roomcast.common.chatrecord import decode_record as parse_record

__all__ = [
    "MAX_BODY_DEPTH",
    "MAX_NAME_CHARS",
    "MAX_RECORD_BYTES",
    "MAX_TEXT_CHARS",
    "MAX_TIMESTAMP_CHARS",
    "MAX_URL_CHARS",
    "Change",
    "ChatMessage",
    "DeleteRecord",
    "EditRecord",
    "InvalidRecord",
    "ReactionRecord",
    "Record",
    "Sender",
    "parse_record",
    "room_of_subject",
]
