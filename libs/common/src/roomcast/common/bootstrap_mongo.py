"""The MongoDB side of the bootstrap: the replica set and its users.

Runs against one member, directly (``directConnection=true``), as the former
``rs-init.sh``/``mongo-init.js`` did with mongosh:

1. wait until the member answers;
2. initiate the set if ``hello`` says it has no set name yet (``rs0`` with the
   configured members, the first at priority 2 so it becomes primary). A server without
   ``replSetInitiate`` (SecantusDB answers as the primary of its own one-member set and
   has no such command) is reported and tolerated;
3. wait for this member to be the writable primary;
4. users, when an administrator is configured: the root user is created through the
   localhost exception while no user exists; each service's user is created, or updated
   when its password or roles differ (checked by logging in as it), so a second run
   changes nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

from roomcast.common.bootstrap_errors import BootstrapError, NotReachable
from roomcast.common.bootstrap_settings import BootstrapSettings

log = logging.getLogger(__name__)

# Codes of the server's answers that decide what to do next.
COMMAND_NOT_FOUND = 59
UNAUTHORIZED = 13
AUTHENTICATION_FAILED = 18
# Between polls while a member starts or an election runs.
POLL_SECONDS = 0.5
# One server selection; the loops around it own the overall deadlines.
SELECTION_TIMEOUT_MS = 2000
# The preferred primary: it must win the first election to use the localhost exception.
PRIMARY_PRIORITY = 2

Doc = dict[str, Any]
Client = MongoClient[Doc]


def _client(address: str, username: str = "", password: str = "") -> Client:
    credentials: dict[str, Any] = (
        {"username": username, "password": password, "authSource": "admin"} if username else {}
    )
    return MongoClient(
        f"mongodb://{address}/?directConnection=true",
        serverSelectionTimeoutMS=SELECTION_TIMEOUT_MS,
        **credentials,
    )


def _wait(condition: Callable[[], bool], deadline_seconds: float, failure: str) -> None:
    deadline = time.monotonic() + deadline_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise NotReachable(f"{failure} within {deadline_seconds:.0f} s")
        time.sleep(POLL_SECONDS)


def _hello(mongo: Client) -> Doc | None:
    try:
        return mongo.admin.command("hello")
    except PyMongoError:
        return None


def initiate(mongo: Client, settings: BootstrapSettings) -> list[str]:
    """Initiate the set unless the member already belongs to one."""
    hello = _hello(mongo) or {}
    if hello.get("setName"):
        if hello["setName"] != settings.mongo_set_name:
            log.warning(
                "member belongs to replica set %r, not %r: left as it is",
                hello["setName"],
                settings.mongo_set_name,
            )
        return []
    members = [
        {"_id": i, "host": host, "priority": PRIMARY_PRIORITY if i == 0 else 1}
        for i, host in enumerate(settings.members)
    ]
    try:
        mongo.admin.command("replSetInitiate", {"_id": settings.mongo_set_name, "members": members})
    except OperationFailure as error:
        if error.code == COMMAND_NOT_FOUND:
            log.warning("the server has no replSetInitiate: replica set not initiated, continuing")
            return []
        # Another bootstrap (a restarted pod) initiated it meanwhile.
        if error.code == 23:  # AlreadyInitialized
            return []
        raise BootstrapError(f"replSetInitiate failed: {error.details}") from error
    return [f"replica set {settings.mongo_set_name} initiated with {len(members)} members"]


def _can_login(address: str, user: str, password: str) -> bool:
    probe = _client(address, user, password)
    try:
        probe.admin.command("connectionStatus")
        return True
    except OperationFailure as error:
        if error.code == AUTHENTICATION_FAILED:
            return False
        raise
    finally:
        probe.close()


def ensure_users(mongo: Client, settings: BootstrapSettings) -> list[str]:
    """The administrator and the services' users, as the settings say."""
    address = settings.mongo_address
    name = settings.mongo_admin_username
    password = settings.mongo_admin_password.get_secret_value()
    changes = []
    if not _can_login(address, name, password):
        # Only possible while no user exists (the localhost exception, or a server
        # without access control); otherwise the administrator's password is wrong.
        try:
            mongo.admin.command(
                "createUser", name, pwd=password, roles=[{"role": "root", "db": "admin"}]
            )
        except OperationFailure as error:
            raise BootstrapError(
                f"cannot log in as {name!r} nor create it (wrong password in the Secret?): "
                f"{(error.details or {}).get('errmsg')}"
            ) from error
        changes.append(f"administrator {name} created")
    admin = _client(address, name, password)
    try:
        for user, pwd, database in settings.service_users():
            roles = [{"role": "readWrite", "db": database}]
            found = admin.admin.command("usersInfo", user)["users"]
            if not found:
                admin.admin.command("createUser", user, pwd=pwd, roles=roles)
                changes.append(f"user {user} created")
                continue
            have = [{"role": r["role"], "db": r["db"]} for r in found[0].get("roles", [])]
            if have != roles or not _can_login(address, user, pwd):
                admin.admin.command("updateUser", user, pwd=pwd, roles=roles)
                changes.append(f"user {user} updated")
    finally:
        admin.close()
    return changes


def bootstrap_mongo(settings: BootstrapSettings) -> list[str]:
    """The replica set initiated, a writable primary, the users; the changes made."""
    mongo = _client(settings.mongo_address)
    try:
        _wait(
            lambda: _hello(mongo) is not None,
            settings.connect_deadline_seconds,
            f"MongoDB at {settings.mongo_address} did not answer",
        )
        changes = initiate(mongo, settings)
        _wait(
            lambda: bool((_hello(mongo) or {}).get("isWritablePrimary")),
            settings.mongo_primary_deadline_seconds,
            f"{settings.mongo_address} did not become the writable primary",
        )
        if settings.mongo_admin_username:
            changes += ensure_users(mongo, settings)
        return changes
    finally:
        mongo.close()
