"""The MongoDB bootstrap of the compose stack and the dev overlay, for the SecantusDB
stand-in image, which has pymongo but no mongosh.

It does what deploy/compose/mongo-init.js does: initiate the one-member replica set if
(and only if) the server says it is not initiated yet, then wait until this member is
the writable primary. `check` is the container health check: exit 0 only on a writable
primary.

    python mongo_bootstrap.py init HOST:PORT SET_NAME
    python mongo_bootstrap.py check [HOST:PORT]
"""

import sys
import time

from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

# The code of NotYetInitialized: the only error that means "initiate me".
NOT_YET_INITIALIZED = 94
# Far above a one-member election; a broken setup still fails in reasonable time.
PRIMARY_DEADLINE_SECONDS = 60
# Until the server accepts connections at all (it may still be starting).
CONNECT_DEADLINE_SECONDS = 60
POLL_SECONDS = 0.5


def client(address: str) -> MongoClient:  # type: ignore[type-arg]
    return MongoClient(f"mongodb://{address}/?directConnection=true", serverSelectionTimeoutMS=2000)


def writable_primary(mongo: MongoClient) -> bool:  # type: ignore[type-arg]
    try:
        return bool(mongo.admin.command("hello").get("isWritablePrimary"))
    except PyMongoError:
        return False


def wait(condition: object, deadline_seconds: float, what: str) -> None:
    deadline = time.monotonic() + deadline_seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            sys.exit(f"{what} after {deadline_seconds:.0f} s")
        time.sleep(POLL_SECONDS)


def init(address: str, set_name: str) -> None:
    mongo = client(address)

    def answers() -> bool:
        try:
            mongo.admin.command("ping")
            return True
        except PyMongoError:
            return False

    wait(answers, CONNECT_DEADLINE_SECONDS, f"{address} does not answer")
    try:
        status = mongo.admin.command("replSetGetStatus")
        print(f"replica set {status['set']} is already initiated")
    except OperationFailure as error:
        if error.code != NOT_YET_INITIALIZED:
            raise
        config = {"_id": set_name, "members": [{"_id": 0, "host": address}]}
        mongo.admin.command("replSetInitiate", config)
        print(f"replica set {set_name} initiated")
    wait(lambda: writable_primary(mongo), PRIMARY_DEADLINE_SECONDS, "no writable primary")
    print("primary is ready")


def main(argv: list[str]) -> int:
    if argv[:1] == ["init"] and len(argv) == 3:
        init(argv[1], argv[2])
        return 0
    if argv[:1] == ["check"]:
        address = argv[1] if len(argv) > 1 else "127.0.0.1:27017"
        return 0 if writable_primary(client(address)) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
