"""Markdown for docs/benchmarks.md from the JSON results of bench/fanout.py and
bench/memory_idle.py.

The section is written between two markers, so the rest of the page (written by hand
or by other benchmarks) is kept::

    <!-- roomcast-load:begin -->
    ...generated...
    <!-- roomcast-load:end -->

    python -m roomcast.load.benchdoc --fanout .bench/fanout.json \\
        --memory .bench/memory_idle.json --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BEGIN = "<!-- roomcast-load:begin -->"
END = "<!-- roomcast-load:end -->"


def _ms(lat: dict[str, Any], key: str) -> str:
    return f"{lat[key]:.1f}" if lat.get("count") else "-"


def _cpu(row: dict[str, Any]) -> str:
    cpu = row.get("receivers_cpu_percent") or {}
    return " / ".join(f"{v:.0f}" for v in cpu.values()) or "-"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def fanout_tables(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [
        f"**Fan-out, one room x {cfg['sockets']} sockets, "
        f"{cfg['workers']} receiver processes, 100-byte bodies.** "
        f"Blast: {cfg['blast_rate']:g} msg/s offered for {cfg['blast_seconds']:g} s "
        f"(more than can be delivered); steady: {cfg['rate']:g} msg/s for {cfg['seconds']:g} s. "
        "Server CPU is measured over the sending-to-last-delivery window; a server *waiting "
        "for a CPU* was runnable while other processes held both cores, which caps its "
        "deliveries/s but not its cost per delivery.",
        "",
        "| target | run | deliveries/s | p50 ms | p99 ms | lost | receivers CPU % | server CPU % "
        "| server waiting for a CPU % | server CPU µs/delivery "
        "| deliveries per server core-second |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for target, label in (("raw", "raw picows baseline"), ("gateway", "gateway (1 process)")):
        runs = result.get(target)
        if not runs:
            continue
        for run in ("blast", "steady"):
            r = runs[run]
            lines.append(
                f"| {label} | {run} | {_num(r['deliveries_per_s'])} | "
                f"{_ms(r['latency_ms'], 'p50')} | {_ms(r['latency_ms'], 'p99')} | {r['lost']} | "
                f"{_cpu(r)} | {_num(r.get('server_cpu_percent'))} | "
                f"{_num(r.get('server_waiting_percent'))} | "
                f"{r.get('server_cpu_us_per_delivery', '-')} | "
                f"{_num(r.get('deliveries_per_server_core_s'))} |"
            )
    target = result.get("target_ratio", 0.6)
    for key, what in (
        ("ratio", "deliveries/s"),
        ("ratio_per_core", "deliveries per server core-second (CPU-normalised)"),
    ):
        ratio = result.get(key)
        if ratio is not None:
            verdict = "meets" if ratio >= target else "misses"
            lines += ["", f"Gateway / raw blast, {what}: **{ratio:.2f}** "]
            lines[-1] += f"({verdict} the {target:.0%} target)."
    small = result.get("small_rooms")
    if small:
        lines += [
            "",
            f"**Many small rooms: {small['rooms']} rooms x {small['members']} sockets, "
            "one sender each.**",
            "",
            "| offered msg/s | acked msg/s | ack p50 ms | ack p99 ms | delivery p50 ms | "
            "delivery p99 ms | lost |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in small["runs"]:
            lines.append(
                f"| {_num(r['offered_msgs_per_s'])} | {_num(r['acked_msgs_per_s'])} | "
                f"{_ms(r['ack_latency_ms'], 'p50')} | {_ms(r['ack_latency_ms'], 'p99')} | "
                f"{_ms(r['latency_ms'], 'p50')} | {_ms(r['latency_ms'], 'p99')} | {r['lost']} |"
            )
    return "\n".join(lines)


def memory_tables(result: dict[str, Any]) -> str:
    lines = [
        f"**Idle authenticated connections: {result['config']['sockets']:,} sockets.** "
        "RSS growth of the server process divided by the sockets it gained.",
        "",
        "| target | sockets | RSS before MiB | RSS after MiB | KiB per socket |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, label in (
        ("raw_default", "raw picows server (picows defaults: 16 KiB read buffer)"),
        ("raw", "raw picows server (4 KiB read buffer, as the gateway)"),
        ("gateway", "gateway (1 process)"),
    ):
        m = result.get(key)
        if not m:
            continue
        g = m["gateways"][0]
        lines.append(
            f"| {label} | {m['sockets']:,} | {g.get('rss_before_mib', '-')} | "
            f"{g.get('rss_after_mib', '-')} | {m['kib_per_socket']} |"
        )
    ratio = result.get("ratio")
    if ratio is not None:
        target = result.get("target_ratio", 1.25)
        verdict = "meets" if ratio <= target else "misses"
        lines += [
            "",
            f"Gateway / raw (4 KiB read buffer) = **{ratio:.2f}x** "
            f"({verdict} the {target:.2f}x target).",
        ]
    return "\n".join(lines)


def render_section(
    fanout: dict[str, Any] | None,
    memory: dict[str, Any] | None,
    *,
    plots: Sequence[tuple[str, str]] = (),
) -> str:
    """The generated part of docs/benchmarks.md: machine and commit, tables, plots."""
    first = fanout or memory or {}
    machine = first.get("machine", {})
    parts = [
        BEGIN,
        "## Gateway fan-out and memory (generated by `make bench`)",
        "",
        f"Measured {first.get('started_at', '?')} on {machine.get('cpus', '?')} CPUs "
        f"({machine.get('cpu_model', 'unknown CPU')}), {machine.get('platform', '')}, "
        f"commit `{first.get('commit') or 'unknown'}`. The machine is shared: compare each "
        "figure with its same-run baseline, not across runs.",
        "",
    ]
    if fanout:
        parts += [fanout_tables(fanout), ""]
    if memory:
        parts += [memory_tables(memory), ""]
    for title, path in plots:
        parts += [f"![{title}]({path})", ""]
    parts += [
        "Commands: `python bench/fanout.py`, `python bench/memory_idle.py`; the load tool "
        "behind them is documented in [load.md](load.md).",
        END,
    ]
    return "\n".join(parts)


def update_file(path: Path, section: str) -> None:
    """Replace the generated section of ``path`` (or append it)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _load(path: Path | None) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path is not None and path.exists() else None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m roomcast.load.benchdoc", description=__doc__)
    p.add_argument("--fanout", type=Path, help="bench/fanout.py --json output")
    p.add_argument("--memory", type=Path, help="bench/memory_idle.py --json output")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = p.parse_args(argv)
    fanout, memory = _load(args.fanout), _load(args.memory)
    plots = []
    if fanout:
        for target in ("raw", "gateway"):
            for run in ("blast", "steady"):
                for png in (fanout.get(target) or {}).get(run, {}).get("plots", []):
                    if png.endswith("-throughput.png"):
                        rel = os.path.relpath(png, args.out.parent)
                        plots.append((f"{target} {run}", rel))
    update_file(args.out, render_section(fanout, memory, plots=plots))
    print(f"updated {args.out}")


if __name__ == "__main__":
    main()
