"""The run's report: a JSON-able dict, its terminal summary and the pass/fail verdict."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from roomcast.load.accounting import Accounting
from roomcast.load.dbtop import top_table_text
from roomcast.load.histogram import Histogram
from roomcast.load.plan import Layout
from roomcast.load.proccpu import table_text
from roomcast.load.promtext import memory_per_socket
from roomcast.load.scenario import Scenario
from roomcast.load.timeline import Timeline

# The counters of the other kinds of traffic a worker reports, summed over workers:
# typing notices, read receipts, replies, mentions, reactions, inbox reads and file
# messages (uploads that failed leave their file send unsent).
SIGNALS = (
    "typing_sent",
    "typing_received",
    "reads_sent",
    "reads_received",
    "replies_sent",
    "mentions_sent",
    "reactions_sent",
    "reactions_acked",
    "reactions_received",
    "inbox_reads",
    "inbox_errors",
    "files_sent",
    "files_acked",
    "files_received",
    "file_upload_errors",
)
# Rooms listed individually in the report: the worst ones (most loss, then duplicates);
# the totals cover every room.
WORST_ROOMS = 20


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _merge(finals: list[dict[str, Any]], key: str) -> Histogram:
    h = Histogram()
    for f in finals:
        h.merge_sparse(f[key])
    return h


def _by_kind(finals: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Histogram] = {}
    for f in finals:
        for kind, sparse in f.get("ack_by_kind", {}).items():
            merged.setdefault(kind, Histogram()).merge_sparse(sparse)
    return {kind: h.summary() for kind, h in merged.items() if h.summary()["count"]}


def build_report(
    *,
    scenario: Scenario,
    layout: Layout,
    cfg_gateways: list[str],
    workers: int,
    source_ips: list[str],
    raw: bool,
    t_start: float,
    t_go: float,
    t0: float,
    connect_seconds: float,
    live_after_connect: int,
    finals: list[dict[str, Any]],
    accounting: Accounting,
    timeline: Timeline,
    memory_before: list[dict[str, Any]],
    memory_after: list[dict[str, Any]],
    restarts: list[dict[str, Any]],
    process_cpu: dict[str, Any] | None = None,
    load_average: list[tuple[float, float, float]] | None = None,
) -> dict[str, Any]:
    lat = _merge(finals, "lat")
    ack = _merge(finals, "ack_lat")
    totals = accounting.totals()
    deliveries = sum(int(f["deliveries"]) for f in finals)
    last_delivery = max((int(f["last_delivery_us"]) for f in finals), default=0) / 1e6
    send_window = max(scenario.duration, 1e-6)
    delivery_window = max(last_delivery - t0, 1e-6) if last_delivery else send_window
    sockets = len(layout.sockets)
    final_errors: dict[str, int] = {}
    final_closes: dict[str, int] = {}
    if timeline.latest:
        cur = timeline.totals()
        final_errors, final_closes = cur["errors"], cur["closes"]
    rooms = sorted(accounting.rooms.values(), key=lambda r: (-r.lost, -r.duplicated, r.room))
    report: dict[str, Any] = {
        "scenario": scenario.name,
        "description": scenario.description,
        "target": "raw picows baseline" if raw else "gateway",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
        "started_at_epoch": t_start,
        "machine": machine_info(),
        "commit": git_commit(),
        "gateways": cfg_gateways,
        "workers": workers,
        "source_ips": source_ips,
        "duration_s": scenario.duration,
        "layout": {
            "sockets": sockets,
            "users": layout.users,
            "rooms": len(layout.rooms),
            "largest_room": max((len(r.members) for r in layout.rooms), default=0),
            "senders": sum(r.senders for r in layout.rooms),
            "offered_msgs_per_s": round(layout.offered_rate(), 1),
            "offered_deliveries_per_s": round(layout.expected_deliveries_rate(), 1),
        },
        "connections": {
            "sockets": sockets,
            "live_after_connect": live_after_connect,
            "connect_seconds": round(connect_seconds, 2),
            "peak_live": timeline.peak_live,
            "live_at_end": sum(int(f["live"]) for f in finals),
            "abandoned": sum(int(f["abandoned"]) for f in finals),
        },
        "throughput": {
            "acked_msgs_per_s": round(totals["acked"] / send_window, 1),
            "deliveries": deliveries,
            "deliveries_per_s": round(deliveries / delivery_window, 1),
            "delivery_window_s": round(delivery_window, 3),
        },
        "latency_ms": lat.summary(),
        "ack_latency_ms": ack.summary(),
        # The same, by what each send went through (roomcast.load.client.SEND_KINDS);
        # kinds the run did not send are left out.
        "ack_latency_by_kind_ms": _by_kind(finals),
        "accounting": totals,
        "worst_rooms": [
            {
                "room": r.room,
                "members": r.members,
                "acked": r.acked,
                "expected": r.expected,
                "delivered": r.delivered,
                "lost": r.lost,
                "duplicated": r.duplicated,
                "out_of_order": r.out_of_order,
                "lost_examples": r.lost_examples,
            }
            for r in rooms[:WORST_ROOMS]
            if r.lost or r.duplicated or r.out_of_order
        ],
        "errors": final_errors,
        "error_examples": {k: v for f in finals for k, v in f.get("error_examples", {}).items()},
        "close_codes": final_closes,
        "unexpected_messages": sum(int(f["unexpected"]) for f in finals),
        # Typing notices and read receipts sent and received (no ack, no accounting: the
        # gateway coalesces them, so only their volume and cost matter).
        "signals": {
            key: sum(int(f.get("signals", {}).get(key, 0)) for f in finals) for key in SIGNALS
        },
        # Each process's CPU from sending to the end of the drain, per acked message
        # (roomcast.load.proccpu); the bus ceiling is added by --start-stack afterwards.
        "process_cpu": process_cpu,
        # The machine's 1/5/15-minute load average when the tool started and when the
        # drain ended: how busy the (shared) machine was around this run.
        "load_average": (
            {
                "before": [round(x, 2) for x in load_average[0]],
                "after": [round(x, 2) for x in load_average[1]],
            }
            if load_average
            else None
        ),
        "worker_cpu_seconds": {str(f["worker"]): round(float(f["cpu"]), 2) for f in finals},
        "memory": (
            memory_per_socket(memory_before, memory_after, live_after_connect)
            if memory_after
            else None
        ),
        "restarts": restarts,
        "timeline": timeline.rows,
        "go_at_s": round(t_go - t_start, 3),
        "send_start_s": round(t0 - t_start, 3),
    }
    report["expectations"] = check_expectations(scenario, report)
    report["passed"] = all(e["ok"] for e in report["expectations"])
    return report


def check_expectations(scenario: Scenario, report: dict[str, Any]) -> list[dict[str, Any]]:
    e = scenario.expect
    acc = report["accounting"]
    out: list[dict[str, Any]] = []

    def check(name: str, got: Any, want: Any, ok: bool) -> None:
        out.append({"name": name, "got": got, "want": want, "ok": bool(ok)})

    if e.lost is not None:
        check("lost", acc["lost"], f"<= {e.lost}", acc["lost"] <= e.lost)
    if e.duplicated is not None:
        check(
            "duplicated", acc["duplicated"], f"<= {e.duplicated}", acc["duplicated"] <= e.duplicated
        )
    if e.out_of_order is not None:
        check(
            "out_of_order",
            acc["out_of_order"],
            f"<= {e.out_of_order}",
            acc["out_of_order"] <= e.out_of_order,
        )
    if e.p99_ms is not None and report["latency_ms"]["count"]:
        p99 = report["latency_ms"]["p99"]
        check("p99_ms", p99, f"<= {e.p99_ms}", p99 <= e.p99_ms)
    if e.min_connected_fraction is not None:
        conns = report["connections"]
        frac = conns["live_after_connect"] / max(conns["sockets"], 1)
        check(
            "connected_fraction",
            round(frac, 4),
            f">= {e.min_connected_fraction}",
            frac >= e.min_connected_fraction,
        )
    if e.min_connected_fraction is not None:
        conns = report["connections"]
        frac = conns["live_at_end"] / max(conns["sockets"], 1)
        check(
            "live_at_end_fraction",
            round(frac, 4),
            f">= {e.min_connected_fraction}",
            frac >= e.min_connected_fraction,
        )
    abandoned = report["connections"]["abandoned"]
    check("abandoned_clients", abandoned, 0, abandoned == 0)
    if e.max_memory_per_socket_kib is not None and report.get("memory"):
        kib = report["memory"]["kib_per_socket"]
        check(
            "memory_per_socket_kib",
            kib,
            f"<= {e.max_memory_per_socket_kib}",
            kib is not None and kib <= e.max_memory_per_socket_kib,
        )
    for r in report["restarts"]:
        check(f"restart {r['service']}", r.get("error", "ok"), "ok", "error" not in r)
    check("dedupe_failures", acc["dedupe_failures"], 0, acc["dedupe_failures"] == 0)
    return out


def summary_text(report: dict[str, Any]) -> str:
    lay, conn, thr = report["layout"], report["connections"], report["throughput"]
    lat, ack, acc = report["latency_ms"], report["ack_latency_ms"], report["accounting"]
    lines = [
        f"== {report['scenario']} ({report['target']}) — {report['started_at']}",
        f"   {lay['sockets']} sockets, {lay['users']} users, {lay['rooms']} rooms "
        f"(largest {lay['largest_room']}), {lay['senders']} senders, "
        f"{report['workers']} workers, {len(report['gateways'])} gateway URL(s)",
        f"connections  live {conn['live_after_connect']}/{conn['sockets']} after "
        f"{conn['connect_seconds']}s, at end {conn['live_at_end']}, peak {conn['peak_live']}",
        f"sends        scheduled {acc['scheduled']}  sent {acc['sent']}  resent {acc['resent']}"
        f"  acked {acc['acked']} ({thr['acked_msgs_per_s']}/s)  unacked {acc['unacked']}"
        f"  unsent {acc['unsent']}"
        f"  duplicate acks {acc['duplicate_acks']}",
        f"deliveries   {thr['deliveries']} ({thr['deliveries_per_s']}/s over "
        f"{thr['delivery_window_s']}s)",
        f"latency ms   p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  "
        f"p99.9 {lat['p99_9']}  max {lat['max']}  (send->receive, from the scheduled time)",
        f"ack ms       p50 {ack['p50']}  p99 {ack['p99']}  max {ack['max']}",
        *(
            f"  {kind:<10} {k['count']} acked  p50 {k['p50']}  p99 {k['p99']}  max {k['max']}"
            for kind, k in report.get("ack_latency_by_kind_ms", {}).items()
        ),
        f"accounting   expected {acc['expected']}  delivered {acc['delivered']}  "
        f"LOST {acc['lost']}  DUPLICATED {acc['duplicated']}  out-of-order {acc['out_of_order']}"
        f"  unacked-delivered {acc['unacked_delivered']}",
        f"resumes      {acc['resumes']} ({acc['resumed_messages']} messages, largest "
        f"{acc['max_resume']}, truncated {acc['truncated_resumes']})",
    ]
    sig = report.get("signals", {})
    if sig.get("typing_sent") or sig.get("reads_sent"):
        lines.append(
            f"signals      typing sent {sig['typing_sent']} received {sig['typing_received']}"
            f"  reads sent {sig['reads_sent']} received {sig['reads_received']}"
        )
    if sig.get("replies_sent") or sig.get("reactions_sent") or sig.get("inbox_reads"):
        lines.append(
            f"threads      replies {sig['replies_sent']}  mentions {sig['mentions_sent']}"
            f"  reactions sent {sig['reactions_sent']} acked {sig['reactions_acked']}"
            f" received {sig['reactions_received']}"
            f"  inbox reads {sig['inbox_reads']} errors {sig['inbox_errors']}"
        )
    if sig.get("files_sent") or sig.get("file_upload_errors"):
        lines.append(
            f"files        sent {sig['files_sent']} acked {sig['files_acked']}"
            f" received {sig['files_received']}  upload errors {sig['file_upload_errors']}"
        )
    if report["errors"]:
        lines.append(f"errors       {report['errors']}")
        for kind, text in sorted(report.get("error_examples", {}).items()):
            lines.append(f"             {kind}: {text}")
    if report["close_codes"]:
        lines.append(f"close codes  {report['close_codes']}")
    mem = report.get("memory")
    if mem:
        lines.append(
            f"memory       {mem['kib_per_socket']} KiB per socket over {mem['sockets']} sockets"
        )
        for g in mem["gateways"]:
            lines.append(f"             {g}")
    for r in report["restarts"]:
        lines.append(f"restart      {r}")
    load = report.get("load_average")
    if load:
        lines.append(f"load average {load['before']} before, {load['after']} after")
    ceiling = report.get("bus_ceiling")
    if ceiling:
        lines.append(
            f"bus ceiling  raw JetStream publish {ceiling['publishes_per_s']}/s "
            f"({ceiling['messages']} publishes, {ceiling['in_flight']} in flight, after the "
            f"window); acked msg/s / ceiling = {ceiling['ratio']}"
        )
    if report.get("process_cpu"):
        lines.append(table_text(report["process_cpu"]))
    if report.get("database_top"):
        lines.append(top_table_text(report["database_top"]))
    verdict = "PASS" if report["passed"] else "FAIL"
    failed = [
        f"{e['name']}={e['got']} (want {e['want']})" for e in report["expectations"] if not e["ok"]
    ]
    lines.append(f"verdict      {verdict}" + (f": {'; '.join(failed)}" if failed else ""))
    return "\n".join(lines)
