"""Per-second aggregation of the workers' stats: the progress line and the timeline
the report and plots are drawn from."""

from __future__ import annotations

from typing import Any

from roomcast.load.histogram import Histogram

_COUNTERS = ("deliveries", "scheduled", "sent", "resent", "acked", "reconnects")


def _sum_dict(dicts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def _diff(new: dict[str, int], old: dict[str, int]) -> dict[str, int]:
    return {k: v - old.get(k, 0) for k, v in new.items() if v - old.get(k, 0)}


class Timeline:
    def __init__(self, t_start: float) -> None:
        self.t_start = t_start
        self.latest: dict[int, dict[str, Any]] = {}
        self.rows: list[dict[str, Any]] = []
        self._lat = Histogram()
        self._ack = Histogram()
        self._prev: dict[str, Any] = {k: 0 for k in _COUNTERS} | {"errors": {}, "closes": {}}
        self._prev_t = t_start
        self._cpu_prev: dict[int, tuple[float, float]] = {}
        self._cpu: dict[int, float] = {}
        self.peak_live = 0

    def on_stats(self, snap: dict[str, Any]) -> None:
        w = int(snap["worker"])
        self.latest[w] = snap
        self._lat.merge_sparse(snap["lat"])
        self._ack.merge_sparse(snap["ack_lat"])
        prev = self._cpu_prev.get(w)
        if prev is not None and snap["t"] > prev[0]:
            self._cpu[w] = 100.0 * (snap["cpu"] - prev[1]) / (snap["t"] - prev[0])
        self._cpu_prev[w] = (snap["t"], snap["cpu"])

    def totals(self) -> dict[str, Any]:
        snaps = list(self.latest.values())
        out: dict[str, Any] = {k: sum(int(s[k]) for s in snaps) for k in _COUNTERS}
        out["connected"] = sum(int(s["connected"]) for s in snaps)
        out["live"] = sum(int(s["live"]) for s in snaps)
        out["errors"] = _sum_dict([s["errors"] for s in snaps])
        out["closes"] = _sum_dict([s["closes"] for s in snaps])
        return out

    def tick(self, now: float, phase: str) -> dict[str, Any]:
        cur = self.totals()
        dt = max(now - self._prev_t, 1e-6)
        prev = self._prev
        row: dict[str, Any] = {
            "t": round(now - self.t_start, 3),
            "phase": phase,
            "connected": cur["connected"],
            "live": cur["live"],
            "deliveries_per_s": round((cur["deliveries"] - prev["deliveries"]) / dt, 1),
            "sends_per_s": round(
                (cur["sent"] + cur["resent"] - prev["sent"] - prev["resent"]) / dt, 1
            ),
            "acks_per_s": round((cur["acked"] - prev["acked"]) / dt, 1),
            "reconnects": cur["reconnects"] - prev["reconnects"],
            "errors": _diff(cur["errors"], prev["errors"]),
            "closes": _diff(cur["closes"], prev["closes"]),
            "latency_ms": self._lat.summary() if self._lat.total else None,
            "ack_latency_ms": self._ack.summary() if self._ack.total else None,
            "worker_cpu_percent": {str(w): round(c, 1) for w, c in sorted(self._cpu.items())},
        }
        self.peak_live = max(self.peak_live, cur["live"])
        self.rows.append(row)
        self._prev = cur
        self._prev_t = now
        self._lat = Histogram()
        self._ack = Histogram()
        return row


def progress_line(row: dict[str, Any], sockets: int, p99_so_far: float | None) -> str:
    lat = row["latency_ms"]
    p99 = f"{lat['p99']:.1f}" if lat else "-"
    overall = f"{p99_so_far:.1f}" if p99_so_far is not None else "-"
    errors = sum(row["errors"].values())
    closes = sum(row["closes"].values())
    return (
        f"[{row['t']:6.0f}s {row['phase']:<7}] live {row['live']}/{sockets}"
        f"  sends/s {row['sends_per_s']:.0f}  acks/s {row['acks_per_s']:.0f}"
        f"  deliveries/s {row['deliveries_per_s']:.0f}"
        f"  p99 {p99} ms (run {overall} ms)"
        f"  errors {errors}  closes {closes}"
    )
