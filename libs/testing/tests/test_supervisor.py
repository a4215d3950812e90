"""``make up`` supervises its parts: a part that dies comes back (with backoff) and
serves again, the others keep running, Ctrl-C still stops everything."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from roomcast.testing.processes import port_accepts
from roomcast.testing.stack import StackPorts
from roomcast.testing.supervisor import Supervisor

# A whole stack starting on a loaded 2-core machine: seven processes, ~30 s at worst.
STACK_START_SECONDS = 120.0
# A killed gateway is noticed within the poll interval, restarted after the first
# backoff delay and ready after its start (~3 s, more under load).
RESTART_SECONDS = 60.0


@dataclass
class FakePart:
    """A process that crashes whenever the test says so, and may fail to start."""

    name: str
    running: bool = True
    starts: list[float] = field(default_factory=list)
    fail_starts: int = 0
    clock: list[float] = field(default_factory=lambda: [0.0])

    def start(self) -> None:
        self.starts.append(self.clock[0])
        if self.fail_starts:
            self.fail_starts -= 1
            raise RuntimeError("port taken\nmore detail")
        self.running = True

    def stop(self, timeout: float = 15.0) -> int | None:
        self.running = False
        return 0

    def exit_code(self) -> int | None:
        return None if self.running else -9


# Clock steps and delays are exact binary fractions, so the schedule compares exactly.
STEP = 0.5


def test_restarts_back_off_exponentially_capped_and_reset_after_a_stable_run() -> None:
    now = [0.0]
    crashing = FakePart("history", clock=now)
    steady = FakePart("rooms", clock=now)
    lines: list[str] = []
    sup = Supervisor(
        lambda: {"history": crashing, "rooms": steady},
        report=lines.append,
        first_delay=1.0,
        max_delay=8.0,
        stable_after=60.0,
        clock=lambda: now[0],
    )

    def crash_and_wait_restart() -> float:
        crashing.running = False
        now[0] += STEP
        sup.poll()  # notices the exit
        crashed_at = now[0]
        while not crashing.running:
            now[0] += STEP
            sup.poll()
        return crashing.starts[-1] - crashed_at

    sup.poll()
    # Crashes 20 s after every restart: waits 1, 2, 4, 8, 8 (capped).
    delays = []
    for _ in range(5):
        delays.append(crash_and_wait_restart())
        now[0] += 20
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert steady.starts == []  # the other part was left alone
    # After a stable minute, the next crash starts from the first delay again.
    now[0] += 60
    sup.poll()
    assert crash_and_wait_restart() == 1.0
    assert any("history exited (exit code -9); restarting in 1.0s" in line for line in lines)
    assert any("history is back" in line for line in lines)


def test_a_failed_start_is_retried_later_and_reported() -> None:
    now = [0.0]
    part = FakePart("nats", running=False, fail_starts=2, clock=now)
    lines: list[str] = []
    sup = Supervisor(
        lambda: {"nats": part}, report=lines.append, first_delay=1.0, clock=lambda: now[0]
    )
    while now[0] < 20 and not part.running:
        now[0] += STEP
        sup.poll()
    assert part.running
    assert part.starts == [1.5, 3.5, 7.5]  # noticed at 0.5; then waits 1, 2 and 4
    assert sum("nats did not start (port taken); next try in" in line for line in lines) == 2
    kinds = [e.kind for e in sup.events]
    assert kinds == ["exited", "restart_failed", "restart_failed", "restarted"]


class Launcher:
    """``python -m roomcast.testing.stack`` (what ``make up`` runs) with its output lines."""

    def __init__(self, state_dir: Path, ports: StackPorts) -> None:
        env = dict(os.environ)
        for name, port in vars(ports).items():
            env[f"ROOMCAST_UP_{name.upper()}_PORT"] = str(port)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "roomcast.testing.stack", "--state-dir", str(state_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for_line(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no line matching {pattern!r}; seen:\n" + "\n".join(self.seen))
            try:
                line = self.lines.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise AssertionError("launcher exited:\n" + "\n".join(self.seen)) from None
                continue
            self.seen.append(line)
            if re.search(pattern, line):
                return line


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is dead too.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[-1][:1] != "Z"


@pytest.mark.slow
def test_make_up_restarts_a_killed_gateway_which_serves_again(tmp_path: Path) -> None:
    ports = StackPorts.free()
    launcher = Launcher(tmp_path / "state", ports)
    try:
        launcher.wait_for_line("Press Ctrl-C", STACK_START_SECONDS)
        pids = {
            m.group(1): int(m.group(2))
            for line in launcher.seen
            if (m := re.match(r"\s+(\S+)\s+pid (\d+)\s", line))
        }
        assert set(pids) >= {"nats", "secantusdb", "auth", "rooms", "history", "gateway-a"}

        os.kill(pids["gateway-a"], signal.SIGKILL)
        launcher.wait_for_line(r"\[supervisor\] gateway-a exited \(exit code -9\)", RESTART_SECONDS)
        launcher.wait_for_line(r"\[supervisor\] gateway-a is back", RESTART_SECONDS)

        # It serves again: a new user registers and logs in through the restarted gateway.
        base = f"http://127.0.0.1:{ports.gateway_a}"
        username = f"s{uuid.uuid4().hex[:10]}"
        password = "correct horse battery staple"
        with httpx.Client(base_url=base, timeout=30) as http:
            reg = http.post("/v1/auth/register", json={"username": username, "password": password})
            assert reg.status_code == 201, reg.text
            login = http.post("/v1/auth/login", json={"username": username, "password": password})
            assert login.status_code == 200, login.text
        # The others kept running: same processes as before the kill.
        assert all(alive(pid) for name, pid in pids.items() if name != "gateway-a")
    finally:
        launcher.proc.send_signal(signal.SIGINT)
        code = launcher.proc.wait(60)
    assert code == 0, "\n".join(launcher.seen)
    # Nothing left behind: every original process is gone and no port still answers
    # (the restarted gateway included).
    assert not [name for name, pid in pids.items() if alive(pid)]
    assert not [port for port in vars(ports).values() if port_accepts("127.0.0.1", port)]
