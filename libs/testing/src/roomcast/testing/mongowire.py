"""What a MongoDB client really sends: listeners on PyMongo's command monitoring, for
tests that assert on the wire (write concerns, query counts) against a real server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pymongo import monitoring

WRITE_COMMANDS = frozenset({"insert", "update", "delete", "findAndModify"})
READ_COMMANDS = frozenset({"find", "getMore", "aggregate", "count", "distinct"})
# What every write an acknowledgement depends on must carry (roomcast.common.mongo):
# journaled on the primary, acknowledged by a majority.
DURABLE = {"w": "majority", "j": True}


class WriteRecorder(monitoring.CommandListener):
    """Write commands sent to one database, as ``(command, collection, writeConcern)``,
    and any write-concern error in the replies."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.active = True
        self.writes: list[tuple[str, str, Any]] = []
        self.concern_errors: list[Any] = []
        self._ids: set[int] = set()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        ours = self.active and event.database_name == self.database
        if ours and event.command_name in WRITE_COMMANDS:
            collection = str(event.command.get(event.command_name))
            self.writes.append((event.command_name, collection, event.command.get("writeConcern")))
            self._ids.add(event.request_id)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.request_id in self._ids and "writeConcernError" in event.reply:
            self.concern_errors.append(event.reply["writeConcernError"])

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


class ReadCounter(monitoring.CommandListener):
    """Counts read commands (each a round trip), for one client's ``event_listeners``."""

    def __init__(self) -> None:
        self.reads = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in READ_COMMANDS:
            self.reads += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@contextmanager
def recording_writes(database: str) -> Iterator[WriteRecorder]:
    """A process-wide recorder of the writes to ``database``. PyMongo listeners cannot
    be removed once registered, so it goes quiet on exit instead."""
    recorder = WriteRecorder(database)
    monitoring.register(recorder)
    try:
        yield recorder
    finally:
        recorder.active = False
