"""Write the JSON Schemas of the REST models the TypeScript SDK mirrors.

The server's pydantic models are the one source of truth for REST bodies; the SDK's
hand-written types in ``clients/typescript/src/types.ts`` are checked against these files
by a vitest test (``schema.test.ts``), and ``tests/browser/test_schemas_fresh.py`` checks
that the committed files match the models. Run it after changing a model:

    .venv/bin/python tools/export_schemas.py          # rewrite clients/typescript/schema/
    .venv/bin/python tools/export_schemas.py --check  # exit 1 when a file is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import BaseModel

from roomcast.common.accounts import LoginRequest, PrivateUser, PublicUser, RegisterRequest
from roomcast.common.accounts import TokenPair as AuthTokenPair
from roomcast.gateway.rest.auth import PublicUserEnvelope
from roomcast.gateway.rest.files import FileInfo, FileUploaded
from roomcast.gateway.rest.models import (
    CreateRoomBody,
    ErrorEnvelope,
    InviteCode,
    JoinResult,
    Member,
    MessagePage,
    Room,
    RoomEnvelope,
)
from roomcast.gateway.rest.rooms import ListedRoomPage
from roomcast.gateway.rest.users import ListedMemberPage

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "clients" / "typescript" / "schema"

# File name (the TypeScript type it describes) -> the server's model.
MODELS: dict[str, type[BaseModel]] = {
    "User": PublicUser,
    "PrivateUser": PrivateUser,
    "UserEnvelope": PublicUserEnvelope,
    "TokenPair": AuthTokenPair,
    "RegisterRequest": RegisterRequest,
    "LoginRequest": LoginRequest,
    "Room": Room,
    "RoomEnvelope": RoomEnvelope,
    "RoomPage": ListedRoomPage,
    "Member": Member,
    "MemberPage": ListedMemberPage,
    "JoinResult": JoinResult,
    "InviteCode": InviteCode,
    "MessagePage": MessagePage,
    "CreateRoomBody": CreateRoomBody,
    "ErrorEnvelope": ErrorEnvelope,
    "FileInfo": FileInfo,
    "FileUploaded": FileUploaded,
}


def render(model: type[BaseModel]) -> str:
    # Serialization mode: what the server sends (defaults are present, so required).
    schema = model.model_json_schema(mode="serialization")
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale files, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for name, model in MODELS.items():
        path = SCHEMA_DIR / f"{name}.json"
        text = render(model)
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(path.name)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if args.check and stale:
        print("stale schemas (run tools/export_schemas.py):", ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
