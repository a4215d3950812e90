"""CPU time of named processes over a window of a run, per acknowledged message.

Issue 15 asks where a chat workload's CPU goes: each stack process's CPU (user +
system, from ``/proc/<pid>/stat``) read when sending starts and again when the drain
ends, divided by the messages acknowledged in between. The load generator's own
processes are rows of the same table, so a reader sees whether the tool stayed far
below the stack it measures. Linux only (``/proc``); elsewhere every row is missing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process (fields 14 and 15 of /proc/<pid>/stat;
    the command name, field 2, may hold spaces, hence the split after its ``)``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def proc_wait_seconds(pid: int) -> float:
    """Seconds the process's threads were runnable but waiting for a CPU (the second
    field of each thread's /proc/<pid>/task/<tid>/schedstat, summed over the threads
    alive now: a thread that has exited is no longer counted, so across a window this
    is a lower bound for a process whose threads come and go). On a machine shared
    with other work this is the time a process lost to the others, which no code
    change of its own would recover."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the thread ended meanwhile
    return total / 1e9


@dataclass(frozen=True)
class Reading:
    """One process's CPU seconds (and time waiting for a CPU) at one moment; ``pid``
    tells a restarted process (a new pid) from the one read before."""

    pid: int
    cpu_seconds: float
    wait_seconds: float = 0.0


def read_all(pids: dict[str, int | None]) -> dict[str, Reading]:
    """CPU seconds of each named process; a process that is gone (or has no pid) is
    left out rather than failing the run."""
    out: dict[str, Reading] = {}
    for name, pid in pids.items():
        if not pid:
            continue
        try:
            out[name] = Reading(pid, proc_cpu_seconds(pid), proc_wait_seconds(pid))
        except (OSError, IndexError, ValueError):
            continue
    return out


def cpu_table(
    before: dict[str, Reading],
    after: dict[str, Reading],
    *,
    acked: int,
    seconds: float,
    load_generator: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Rows of (process, CPU s, ms per acked message, % of one core, % of the window
    waiting for a CPU) for every process
    read at both ends with the same pid, in ``before``'s order, then the stack's total
    (every row but the load generator's) and the load generator's. A process restarted
    or gone in between has a row without figures: its CPU over the window is unknown."""
    rows: list[dict[str, Any]] = []
    stack_total = 0.0
    generator_total = 0.0
    for name, first in before.items():
        last = after.get(name)
        if last is None or last.pid != first.pid:
            rows.append(
                {
                    "process": name,
                    "cpu_s": None,
                    "ms_per_msg": None,
                    "core_pct": None,
                    "wait_pct": None,
                }
            )
            continue
        used = max(0.0, last.cpu_seconds - first.cpu_seconds)
        # Threads that ended during the window take their wait with them: a sum that
        # went down is unknown, not zero (a lower bound otherwise).
        waited = last.wait_seconds - first.wait_seconds
        if name in load_generator:
            generator_total += used
        else:
            stack_total += used
        row = _row(name, used, acked, seconds)
        row["wait_pct"] = round(100 * waited / seconds, 1) if seconds > 0 and waited >= 0 else None
        rows.append(row)
    return {
        "acked": acked,
        "window_s": round(seconds, 3),
        "rows": rows,
        "stack_total": _row("stack total", stack_total, acked, seconds),
        "load_generator_total": _row("load generator", generator_total, acked, seconds),
    }


def _row(name: str, used: float, acked: int, seconds: float) -> dict[str, Any]:
    return {
        "process": name,
        "cpu_s": round(used, 3),
        "ms_per_msg": round(used * 1000 / acked, 3) if acked else None,
        "core_pct": round(100 * used / seconds, 1) if seconds > 0 else None,
    }


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def table_text(table: dict[str, Any]) -> str:
    """The table as markdown, the stack's total and the load generator's last."""
    lines = [
        f"CPU over the window ({table['window_s']} s, {table['acked']} acked messages)",
        "| process | CPU s | CPU ms per acked message | % of one core | % waiting for a CPU |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in [*table["rows"], table["stack_total"], table["load_generator_total"]]:
        lines.append(
            f"| {row['process']} | {_cell(row['cpu_s'])} | {_cell(row['ms_per_msg'])} "
            f"| {_cell(row['core_pct'])} | {_cell(row.get('wait_pct'))} |"
        )
    return "\n".join(lines)
