"""PNG plots of a report's timeline (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt


def _restart_marks(ax: Any, report: dict[str, Any]) -> None:
    for r in report.get("restarts", []):
        if "t" in r:
            ax.axvline(r["t"], color="tab:red", linestyle="--", linewidth=1)
            ax.annotate(
                f"restart {r['service']}",
                (r["t"], 1),
                xycoords=("data", "axes fraction"),
                rotation=90,
                va="top",
                fontsize=7,
                color="tab:red",
            )


def write_plots(report: dict[str, Any], out_dir: Path, prefix: str | None = None) -> list[Path]:
    """``<prefix>-throughput.png`` (sends, acks, deliveries per second and latency
    percentiles) and ``<prefix>-connections.png``. Returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = prefix or report["scenario"]
    rows = report["timeline"]
    t = [r["t"] for r in rows]
    title = f"{report['scenario']} ({report['target']}), {report['started_at']}"
    written = []

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    ax1.plot(t, [r["deliveries_per_s"] for r in rows], label="deliveries/s", color="tab:blue")
    ax1.set_ylabel("deliveries per second", color="tab:blue")
    ax1.set_ylim(bottom=0)
    rates = ax1.twinx()  # sends are ~1/room-size of deliveries: their own axis
    rates.plot(t, [r["sends_per_s"] for r in rows], label="sends/s", color="tab:orange")
    rates.plot(t, [r["acks_per_s"] for r in rows], label="acks/s", color="tab:green", linestyle=":")
    rates.set_ylabel("sends, acks per second")
    rates.set_ylim(bottom=0)
    handles = ax1.get_legend_handles_labels()[0] + rates.get_legend_handles_labels()[0]
    ax1.legend(handles=handles, loc="upper left", fontsize=8)
    ax1.grid(True, alpha=0.3)
    ax1.set_title(title, fontsize=9)
    _restart_marks(ax1, report)
    for key, label in (("p50", "p50"), ("p99", "p99"), ("p99_9", "p99.9"), ("max", "max")):
        xs = [r["t"] for r in rows if r["latency_ms"]]
        ys = [r["latency_ms"][key] for r in rows if r["latency_ms"]]
        ax2.plot(xs, ys, label=label, marker="." if len(xs) < 60 else None)
    ax2.set_ylabel("send→receive latency (ms)")
    ax2.set_yscale("log")
    ax2.set_xlabel("seconds since start")
    ax2.legend(loc="upper left", fontsize=8)
    ax2.grid(True, alpha=0.3, which="both")
    _restart_marks(ax2, report)
    fig.tight_layout()
    path = out_dir / f"{name}-throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(t, [r["live"] for r in rows], label="live (authenticated, subscribed)")
    ax.plot(t, [r["connected"] for r in rows], label="open sockets", linestyle=":")
    ax.set_ylabel("sockets")
    ax.set_xlabel("seconds since start")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(True, alpha=0.3)
    _restart_marks(ax, report)
    fig.tight_layout()
    path = out_dir / f"{name}-connections.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written
