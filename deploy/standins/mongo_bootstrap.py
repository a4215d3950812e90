"""The health check of the SecantusDB stand-in image (which has pymongo, not mongosh):
exit 0 only when the server answers as a writable primary, what the official image's
`mongosh ... db.hello().isWritablePrimary` check tells.

The bootstrap itself (replica set, users) is roomcast.common.bootstrap, run from the
Roomcast images against the stand-in as against MongoDB.

    python mongo_bootstrap.py check [HOST:PORT]
"""

import sys

from pymongo import MongoClient
from pymongo.errors import PyMongoError

# One health check attempt; the caller (compose, the kube harness) retries.
SELECTION_TIMEOUT_MS = 2000


def writable_primary(address: str) -> bool:
    mongo: MongoClient = MongoClient(  # type: ignore[type-arg]
        f"mongodb://{address}/?directConnection=true",
        serverSelectionTimeoutMS=SELECTION_TIMEOUT_MS,
    )
    try:
        return bool(mongo.admin.command("hello").get("isWritablePrimary"))
    except PyMongoError:
        return False
    finally:
        mongo.close()


def main(argv: list[str]) -> int:
    if argv[:1] == ["check"]:
        address = argv[1] if len(argv) > 1 else "127.0.0.1:27017"
        return 0 if writable_primary(address) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
