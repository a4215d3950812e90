"""Helpers for the benchmarks in bench/ (fanout.py, memory_idle.py): the raw picows
baseline server, a one-gateway stack, process CPU and RSS from /proc, and summaries
of load-tool reports."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from roomcast.load.plan import Layout
from roomcast.load.proccpu import proc_cpu_seconds
from roomcast.load.provision import Rest, UserCred, provision_rooms, provision_users

REPO = Path(__file__).resolve().parents[5]
RAW_SERVER = REPO / "bench" / "raw_picows_server.py"
# Environment of a benchmark stack: auth's attempt limits raised (thousands of users
# from one address) and the gateway's per-socket frame rate raised, so a handful of
# sender sockets can offer more than the fan-out can deliver. Nothing else changes.
BENCH_STACK_ENV = {
    "ROOMCAST_AUTH_REGISTER_RATE_LIMIT": "100000",
    "ROOMCAST_AUTH_LOGIN_RATE_LIMIT": "100000",
    "ROOMCAST_GATEWAY_RATE_LIMIT_PER_SECOND": "100000",
    "ROOMCAST_GATEWAY_RATE_LIMIT_BURST": "100000",
}


def proc_runqueue_wait_seconds(pid: int) -> float:
    """Time the process was runnable but waiting for a CPU (Linux schedstat)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


def proc_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class CpuSampler:
    """Samples a process's CPU seconds (and its time waiting for a CPU) twice a second,
    to compute its CPU use over any window of a run afterwards."""

    PERIOD_SECONDS = 0.5

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(
                    (time.time(), proc_cpu_seconds(self.pid), proc_runqueue_wait_seconds(self.pid))
                )
            except (OSError, IndexError, ValueError):
                return
            self._stop.wait(self.PERIOD_SECONDS)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def percent(self, start: float, end: float, *, waiting: bool = False) -> float | None:
        """CPU use (% of one core) between two wall-clock times, from the samples
        nearest to them; with ``waiting``, the % of that time it was runnable but
        waiting for a CPU (other processes had it: the machine is oversubscribed)."""
        inside = [s for s in self.samples if start - 0.5 <= s[0] <= end + 0.5]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        first, last = inside[0], inside[-1]
        k = 2 if waiting else 1
        return round(100.0 * (last[k] - first[k]) / (last[0] - first[0]), 1)


class RawServer:
    """bench/raw_picows_server.py in a child process, on a free port."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> RawServer:
        self.proc = subprocess.Popen(
            [sys.executable, str(RAW_SERVER), "--port", "0", *self.args],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening on"):
            self.__exit__()
            raise RuntimeError(f"raw server did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[-1])}"
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __exit__(self, *_exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def one_gateway_stack(extra_env: dict[str, str] | None = None) -> Any:
    """A stack on free ports with gateway-b stopped: one gateway process serves every
    socket (and the second one's CPU is left to the benchmark)."""
    from roomcast.testing.stack import Stack, StackPorts

    stack = Stack(
        Path(tempfile.mkdtemp(prefix="roomcast-bench-")),
        StackPorts.free(),
        bcrypt_cost=4,
        extra_env=BENCH_STACK_ENV | (extra_env or {}),
    )
    stack.start()
    stack.services["gateway-b"].stop()
    return stack


def stop_stack(stack: Any) -> None:
    """Stop a stack from :func:`one_gateway_stack` and delete its data."""
    stack.stop()
    shutil.rmtree(stack.state_dir, ignore_errors=True)


def gateway_pid(stack: Any) -> int:
    return int(stack.services["gateway-a"].proc.pid)


async def provision(
    gateway: str, layout: Layout, users: list[UserCred] | None = None, *, label: str
) -> tuple[list[UserCred], list[str]]:
    rest = Rest([gateway])
    try:
        if users is None or len(users) < layout.users:
            users = await provision_users(rest, layout.users)
        room_ids = await provision_rooms(rest, layout, users, label=label)
        return users, room_ids
    finally:
        await rest.aclose()


def receivers_cpu(report: dict[str, Any]) -> dict[str, float]:
    """Mean CPU % (of one core) of each load worker over the seconds with deliveries."""
    rows = [r for r in report["timeline"] if r["deliveries_per_s"] > 0]
    out: dict[str, float] = {}
    for w in sorted({w for r in rows for w in r["worker_cpu_percent"]}):
        values = [r["worker_cpu_percent"][w] for r in rows if w in r["worker_cpu_percent"]]
        out[w] = round(sum(values) / len(values), 1) if values else 0.0
    return out


def delivery_window(report: dict[str, Any]) -> tuple[float, float]:
    """Wall-clock start and end of a run's sending-to-last-delivery window."""
    start = report["started_at_epoch"] + report["send_start_s"]
    return start, start + report["throughput"]["delivery_window_s"]


def run_summary(report: dict[str, Any]) -> dict[str, Any]:
    lat, acc = report["latency_ms"], report["accounting"]
    return {
        "deliveries": report["throughput"]["deliveries"],
        "deliveries_per_s": report["throughput"]["deliveries_per_s"],
        "acked_msgs_per_s": report["throughput"]["acked_msgs_per_s"],
        "offered_msgs_per_s": report["layout"]["offered_msgs_per_s"],
        "offered_deliveries_per_s": report["layout"]["offered_deliveries_per_s"],
        "latency_ms": lat,
        "ack_latency_ms": report["ack_latency_ms"],
        "lost": acc["lost"],
        "duplicated": acc["duplicated"],
        "unacked": acc["unacked"],
        "receivers_cpu_percent": receivers_cpu(report),
        "errors": report["errors"],
        "close_codes": report["close_codes"],
    }
