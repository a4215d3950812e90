"""The database's time by namespace over the window: which caller costs it what.

The per-process CPU table (roomcast.load.proccpu) says how much the database costs per
acknowledged message, not for whom. Every namespace (``db.collection``) belongs to one
service (history's messages and read positions, the notifier's notifications, rooms'
memberships, auth's users), so the database's own per-namespace counters, read at both
ends of the window, split its bill by caller. They come from mongod's ``top`` admin
command, which SecantusDB implements with real counters: for each namespace, the
microseconds spent in and the number of commands of each kind (``insert``, ``update``,
``remove``, ``queries``, ``getmore``, ``commands``) and in ``total``.

``top`` times each command from dispatch to reply, so a namespace's time is wall time in
the server, close to its CPU for a server that runs one command at a time and an upper
bound otherwise (a command waiting on a lock or a journal flush counts).
A server that refuses ``top`` (a real mongod without the privilege) gives no table and
the report says why; the run does not fail for it.
"""

from __future__ import annotations

from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

# The op kinds ``top`` reports besides ``total`` and the lock sections.
OP_KINDS = ("insert", "update", "remove", "queries", "getmore", "commands")
# ``top`` is one small command; a server that does not answer within 5 s is overloaded
# or gone, and the report should not wait on it.
TOP_TIMEOUT_MS = 5000

# namespace -> section -> (microseconds, count)
TopReading = dict[str, dict[str, tuple[int, int]]]


def read_top(url: str) -> TopReading:
    """One reading of ``top`` from the server at ``url``; raises PyMongoError."""
    client: MongoClient[dict[str, Any]] = MongoClient(
        url, serverSelectionTimeoutMS=TOP_TIMEOUT_MS, socketTimeoutMS=TOP_TIMEOUT_MS
    )
    try:
        totals = client.admin.command("top")["totals"]
    finally:
        client.close()
    reading: TopReading = {}
    for ns, sections in totals.items():
        if not isinstance(sections, dict):  # the "note" entry
            continue
        reading[ns] = {
            name: (int(value.get("time", 0)), int(value.get("count", 0)))
            for name, value in sections.items()
            if isinstance(value, dict)
        }
    return reading


def try_read_top(url: str) -> TopReading | str:
    """A reading, or why there is none (the table then says so)."""
    try:
        return read_top(url)
    except (PyMongoError, KeyError, TypeError) as exc:
        return f"top unavailable: {exc}"


def top_table(before: TopReading | str, after: TopReading | str, *, acked: int) -> dict[str, Any]:
    """Rows by namespace of what changed between two readings, busiest first."""
    if isinstance(before, str) or isinstance(after, str):
        return {"error": before if isinstance(before, str) else after, "rows": []}
    rows: list[dict[str, Any]] = []
    for ns, sections in after.items():
        was = before.get(ns, {})

        micros, count = _delta(sections, was, "total")
        if count <= 0:
            continue
        kinds = {kind: _delta(sections, was, kind) for kind in OP_KINDS}
        busiest = max(kinds, key=lambda k: kinds[k][0])
        rows.append(
            {
                "namespace": ns,
                "commands": count,
                "time_ms": round(micros / 1000, 1),
                "ms_per_msg": round(micros / 1000 / acked, 3) if acked else None,
                "busiest": busiest,
                "busiest_commands": kinds[busiest][1],
                "busiest_time_ms": round(kinds[busiest][0] / 1000, 1),
            }
        )
    total_ms = sum(r["time_ms"] for r in rows)
    for r in rows:
        r["share_pct"] = round(100 * r["time_ms"] / total_ms, 1) if total_ms else 0.0
    rows.sort(key=lambda r: r["time_ms"], reverse=True)
    return {"acked": acked, "time_ms": round(total_ms, 1), "rows": rows}


def _delta(
    now: dict[str, tuple[int, int]], then: dict[str, tuple[int, int]], section: str
) -> tuple[int, int]:
    (t1, c1), (t0, c0) = now.get(section, (0, 0)), then.get(section, (0, 0))
    return t1 - t0, c1 - c0


def top_table_text(table: dict[str, Any]) -> str:
    """The table as Markdown, as the CPU table is printed."""
    if table.get("error"):
        return f"database time by namespace: {table['error']}"
    lines = [
        f"database time by namespace over the window ({table['time_ms']} ms in commands, "
        f"{table['acked']} acked messages)",
        "| namespace | commands | time ms | ms per acked message | share % | busiest kind "
        "(commands, ms) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in table["rows"]:
        lines.append(
            f"| {r['namespace']} | {r['commands']} | {r['time_ms']} | {r['ms_per_msg']} | "
            f"{r['share_pct']} | {r['busiest']} ({r['busiest_commands']}, "
            f"{r['busiest_time_ms']}) |"
        )
    return "\n".join(lines)
