"""Users in MongoDB (collection ``users``).

Uniqueness is enforced by the database, never by a read-then-write: ``username_lower``
(the canonical, lowercased username) has a unique index, so of two concurrent
registrations of "Alice" and "alice" exactly one insert succeeds. ``email_lower`` has a
unique index restricted to documents that have one (email is optional).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from roomcast.auth.errors import EmailTaken, UsernameTaken
from roomcast.common.accounts import PrivateUser, PublicUser
from roomcast.common.subjects import is_object_id

Document = dict[str, Any]


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: str
    username: str
    display_name: str
    avatar_url: str | None
    email: str | None
    created_at: datetime
    password_hash: str

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> UserRecord:
        return cls(
            id=str(doc["_id"]),
            username=doc["username"],
            display_name=doc["display_name"],
            avatar_url=doc.get("avatar_url"),
            email=doc.get("email"),
            created_at=doc["created_at"],
            password_hash=doc["password_hash"],
        )

    def public(self) -> PublicUser:
        return PublicUser(
            id=self.id,
            username=self.username,
            display_name=self.display_name,
            avatar_url=self.avatar_url,
            created_at=self.created_at,
        )

    def private(self) -> PrivateUser:
        return PrivateUser(**self.public().model_dump(), email=self.email)


def canonical_username(username: str) -> str:
    return username.lower()


class UserRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._users: AsyncCollection[Document] = db["users"]

    async def ensure_indexes(self) -> None:
        await self._users.create_index(
            [("username_lower", ASCENDING)], unique=True, name="username_lower_unique"
        )
        await self._users.create_index(
            [("email_lower", ASCENDING)],
            unique=True,
            name="email_lower_unique",
            partialFilterExpression={"email_lower": {"$type": "string"}},
        )

    async def create(
        self,
        *,
        username: str,
        display_name: str,
        email: str | None,
        password_hash: str,
        password_scheme: str,
        now: datetime,
    ) -> UserRecord:
        # BSON dates hold milliseconds: truncate now so the answer matches later reads.
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        doc: Document = {
            "_id": ObjectId(),
            "username": username,
            "username_lower": canonical_username(username),
            "display_name": display_name,
            "avatar_url": None,
            "password_hash": password_hash,
            "password_scheme": password_scheme,
            "created_at": now,
            "updated_at": now,
        }
        if email is not None:
            doc["email"] = email
            doc["email_lower"] = email.lower()
        try:
            await self._users.insert_one(doc)
        except DuplicateKeyError as exc:
            raise _conflict(exc) from exc
        return UserRecord.from_doc(doc)

    async def exists(self, username: str) -> bool:
        found = await self._users.find_one(
            {"username_lower": canonical_username(username)}, {"_id": 1}
        )
        return found is not None

    async def find_by_username(self, username: str) -> UserRecord | None:
        doc = await self._users.find_one({"username_lower": canonical_username(username)})
        return UserRecord.from_doc(doc) if doc else None

    async def get(self, user_id: str) -> UserRecord | None:
        if not is_object_id(user_id):
            return None
        doc = await self._users.find_one({"_id": ObjectId(user_id)})
        return UserRecord.from_doc(doc) if doc else None

    async def get_many(self, user_ids: list[str]) -> list[UserRecord]:
        """The users of ``user_ids`` that exist; ids that are not ObjectIds name nobody
        and never reach the query."""
        wanted = [ObjectId(uid) for uid in dict.fromkeys(user_ids) if is_object_id(uid)]
        if not wanted:
            return []
        cursor = self._users.find({"_id": {"$in": wanted}})
        return [UserRecord.from_doc(doc) async for doc in cursor]

    async def update_profile(
        self, user_id: str, changes: Mapping[str, str | None], *, now: datetime
    ) -> UserRecord | None:
        if not is_object_id(user_id):
            return None
        doc = await self._users.find_one_and_update(
            {"_id": ObjectId(user_id)},
            {"$set": {**changes, "updated_at": now}},
            return_document=ReturnDocument.AFTER,
        )
        return UserRecord.from_doc(doc) if doc else None

    async def replace_password_hash(self, user_id: str, old_hash: str, new_hash: str) -> None:
        """Upgrade a hash made with an old cost; a no-op if the password changed since."""
        await self._users.update_one(
            {"_id": ObjectId(user_id), "password_hash": old_hash},
            {"$set": {"password_hash": new_hash}},
        )


def _conflict(exc: DuplicateKeyError) -> UsernameTaken | EmailTaken:
    details = exc.details or {}
    pattern = details.get("keyPattern") or {}
    text = str(details.get("errmsg", "")) + str(exc)
    if "email_lower" in pattern or ("email_lower" in text and "username_lower" not in pattern):
        return EmailTaken()
    return UsernameTaken()
