"""Keep the parts of a local stack running, as an orchestrator would.

A part (nats-server, SecantusDB, a service) that exits without being asked to is
started again on the same ports and data, after a delay that doubles with each restart
that did not last (capped), and every exit and restart is reported. The other parts keep
running: Roomcast's services reconnect to whatever came back by themselves, which is
exactly what ``make up`` lets a developer watch, and what the chaos suite measures.

:meth:`Supervisor.poll` does one pass and is cheap when nothing died; ``make up`` calls it
from its main thread (so restarted children get the die-with-parent signal), the chaos
suite from a thread of its own (:meth:`Supervisor.start_thread`).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from roomcast.testing.processes import OWNS_CHILDREN

# The first restart waits half a second: long enough that a part crashing at start does
# not spin the CPU, short enough that one crash is invisible to a developer.
RESTART_FIRST_DELAY_SECONDS = 0.5
# Each restart that did not last doubles the delay (Kubernetes' CrashLoopBackOff does).
RESTART_BACKOFF_FACTOR = 2.0
# Capped so that a part broken by something the developer then fixes (a port taken, a
# bad setting) is retried at least twice a minute.
RESTART_MAX_DELAY_SECONDS = 30.0
# A part that stayed up this long is healthy again: its next crash starts from the first
# delay. Longer than any start (START_TIMEOUT_SECONDS) so a part that dies during its
# warm-up keeps backing off.
RESTART_STABLE_SECONDS = 60.0
# How often ``run`` looks at the parts: a dead part is noticed within this time.
POLL_INTERVAL_SECONDS = 0.2


class Part(Protocol):
    """What the supervisor needs of a process (``processes.ManagedProcess`` has it)."""

    name: str

    @property
    def running(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self, timeout: float = ...) -> int | None: ...

    def exit_code(self) -> int | None: ...


EventKind = Literal["exited", "restarted", "restart_failed"]


@dataclass(frozen=True)
class PartEvent:
    part: str
    kind: EventKind
    at: float  # time.monotonic()
    detail: str = ""


@dataclass
class _State:
    failures: int = 0  # restarts in a row that did not last RESTART_STABLE_SECONDS
    down_since: float | None = None  # when its exit was noticed
    due: float = 0.0  # when the next start attempt may run
    up_since: float = 0.0


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class Supervisor:
    """Restarts the parts that ``parts()`` returns when they exit."""

    parts: Callable[[], Mapping[str, Part]]
    report: Callable[[str], None] = _stderr
    first_delay: float = RESTART_FIRST_DELAY_SECONDS
    max_delay: float = RESTART_MAX_DELAY_SECONDS
    stable_after: float = RESTART_STABLE_SECONDS
    clock: Callable[[], float] = time.monotonic
    events: list[PartEvent] = field(default_factory=list)
    _states: dict[str, _State] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def delay_for(self, failures: int) -> float:
        """The wait before restart number ``failures + 1`` of a crash loop."""
        return float(min(self.max_delay, self.first_delay * RESTART_BACKOFF_FACTOR**failures))

    def _record(self, part: str, kind: EventKind, detail: str) -> None:
        with self._lock:
            self.events.append(PartEvent(part, kind, self.clock(), detail))

    def events_of(self, part: str, kind: EventKind, after: float = 0.0) -> list[PartEvent]:
        with self._lock:
            return [e for e in self.events if e.part == part and e.kind == kind and e.at >= after]

    def poll(self) -> None:
        """One pass: notice exits, start the parts whose delay has passed."""
        now = self.clock()
        for name, part in self.parts().items():
            if self._stopping.is_set():
                return
            state = self._states.setdefault(name, _State(up_since=now))
            if part.running:
                if state.down_since is None and now - state.up_since >= self.stable_after:
                    state.failures = 0
                continue
            if state.down_since is None:
                if now - state.up_since >= self.stable_after:
                    state.failures = 0
                state.down_since = now
                state.due = now + self.delay_for(state.failures)
                detail = f"exit code {part.exit_code()}"
                self._record(name, "exited", detail)
                self.report(
                    f"[supervisor] {name} exited ({detail}); restarting in {state.due - now:.1f}s"
                )
            if now < state.due:
                continue
            self._restart(name, part, state)
            now = self.clock()

    def _restart(self, name: str, part: Part, state: _State) -> None:
        try:
            part.start()
        except Exception as exc:  # a failed start is retried later, with a longer delay
            part.stop(5.0)  # a part that never became ready must not hold its port
            state.failures += 1
            now = self.clock()
            state.due = now + self.delay_for(state.failures)
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._record(name, "restart_failed", first_line)
            self.report(
                f"[supervisor] {name} did not start ({first_line}); "
                f"next try in {state.due - now:.1f}s"
            )
            return
        now = self.clock()
        down_for = now - (state.down_since or now)
        state.failures += 1
        state.down_since = None
        state.up_since = now
        self._record(name, "restarted", f"down {down_for:.1f}s")
        self.report(f"[supervisor] {name} is back (down {down_for:.1f}s)")

    def run(self, stopping: threading.Event, interval: float = POLL_INTERVAL_SECONDS) -> None:
        """Poll until ``stopping`` is set."""
        while not stopping.wait(interval):
            self.poll()

    def start_thread(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self.run, args=(self._stopping,), name="roomcast-supervisor", daemon=True
        )
        # The parts it restarts die with this thread (or the process): stop_thread just
        # before stopping the parts, as the stack does.
        setattr(self._thread, OWNS_CHILDREN, True)
        self._thread.start()

    def stop_thread(self) -> None:
        """Stop supervising (before stopping the parts, so none is restarted)."""
        self._stopping.set()
        if self._thread is not None:
            # A restart in progress finishes first (at most a start's timeout).
            self._thread.join()
            self._thread = None
