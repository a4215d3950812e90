"""One-shot, idempotent bootstrap of the infrastructure Roomcast runs on, in Python, so
it runs from the Roomcast images themselves (no ``mongosh``, no ``nats`` CLI):

- ``nats`` (:mod:`roomcast.common.bootstrap_streams`): the JetStream stream ``CHAT`` and
  the KV bucket of revoked sessions, created when missing and raised to the wanted
  replica count;
- ``mongo`` (:mod:`roomcast.common.bootstrap_mongo`): the replica set initiated when it
  is not, a writable primary awaited, the administrator created through the localhost
  exception and one user per service created or brought to the current password.

Every step first reads the current state and changes only what differs, so running it
again (a Job retried, a pod restarted) reports no change. A state it must not repair on
its own (a ``CHAT`` stream with other subjects or storage) is a ``BootstrapConflict``
naming each difference. Settings: ``ROOMCAST_BOOTSTRAP_*``
(:mod:`roomcast.common.bootstrap_settings`); docs/deploy.md, "Bootstrap".

    python -m roomcast.common.bootstrap {nats,mongo} [--only-on POD] [--idle]

Prints each change it made (nothing on a run that found everything in place) and exits
0, or prints why it could not and exits 1. ``--idle`` keeps the process alive after
success until SIGTERM, for a sidecar container (the MongoDB pods run it that way);
``--only-on POD`` bootstraps only in the pod of that name (ROOMCAST_BOOTSTRAP_POD_NAME).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from types import FrameType

from pydantic import ValidationError

from roomcast.common.bootstrap_errors import BootstrapError
from roomcast.common.bootstrap_mongo import bootstrap_mongo
from roomcast.common.bootstrap_settings import BootstrapSettings
from roomcast.common.bootstrap_streams import bootstrap_nats
from roomcast.common.logging import configure_logging


def _idle() -> None:
    """Until SIGTERM or SIGINT; as PID 1, Python would ignore SIGTERM without a handler."""
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop.wait(3600):
        pass


def run(target: str, settings: BootstrapSettings) -> list[str]:
    if target == "nats":
        return asyncio.run(bootstrap_nats(settings))
    return bootstrap_mongo(settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m roomcast.common.bootstrap")
    parser.add_argument("target", choices=("nats", "mongo"))
    parser.add_argument("--only-on", metavar="POD", help="do nothing unless POD_NAME is POD")
    parser.add_argument("--idle", action="store_true", help="stay up after success (sidecar)")
    args = parser.parse_args(argv)
    configure_logging("bootstrap")
    try:
        settings = BootstrapSettings()
    except ValidationError as error:
        print(f"bootstrap: invalid ROOMCAST_BOOTSTRAP_* settings: {error}", file=sys.stderr)
        return 2
    if args.only_on and settings.pod_name != args.only_on:
        print(f"bootstrap {args.target}: nothing to do in {settings.pod_name or 'this pod'}")
    else:
        try:
            changes = run(args.target, settings)
        except BootstrapError as error:
            print(f"bootstrap {args.target}: {error}", file=sys.stderr)
            return 1
        for change in changes:
            print(f"bootstrap {args.target}: {change}")
        print(f"bootstrap {args.target}: done, {len(changes)} change(s)")
    sys.stdout.flush()
    if args.idle:
        _idle()
    return 0


if __name__ == "__main__":
    sys.exit(main())
