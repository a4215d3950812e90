"""The report built from a run's pieces, its summary and verdict, and the PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from roomcast.load.accounting import MemberLog, RoomLog, SendLog, reconcile
from roomcast.load.histogram import Histogram
from roomcast.load.plan import build_layout
from roomcast.load.plots import write_plots
from roomcast.load.proccpu import Reading, cpu_table
from roomcast.load.report import build_report, summary_text
from roomcast.load.scenario import parse_scenario
from roomcast.load.timeline import Timeline, progress_line

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _snapshot(t: float, n: int, live: int) -> dict[str, Any]:
    lat = Histogram.of([1000 + 10 * i for i in range(100)])
    return {
        "worker": 0,
        "t": t,
        "connected": live,
        "live": live,
        "sockets": 4,
        "deliveries": 400 * n,
        "scheduled": 100 * n,
        "sent": 100 * n,
        "resent": 0,
        "acked": 100 * n,
        "reconnects": 0,
        "errors": {},
        "closes": {"1012": 1} if n >= 3 else {},  # cumulative, like a worker's
        "lat": lat.to_sparse(),
        "ack_lat": lat.to_sparse(),
        "cpu": 0.1 * n,
    }


def _report(lost: bool) -> dict[str, Any]:
    sc = parse_scenario(
        {
            "name": "unit",
            "duration": 5,
            "rooms": [{"count": 1, "members": 4, "senders": 1, "rate": 2}],
        }
    )
    layout = build_layout(sc)
    sends = SendLog()
    for seq in (1, 2, 3):
        sends.on_schedule()
        sends.on_sent()
        sends.on_ack("room", f"c{seq}", seq)
    log = RoomLog("room")
    members = [MemberLog(log, f"m{i}") for i in range(4)]
    for i, m in enumerate(members):
        m.subscribed(0)
        for seq in (1, 2, 3):
            if not (lost and i == 2 and seq == 2):
                m.deliver(seq, seq - 1)
    accounting = reconcile([sends.export()], [(list(log.seqs), [m.export() for m in members])])
    t0 = 1_000_000.0
    timeline = Timeline(t0)
    for n in range(1, 8):
        timeline.on_stats(_snapshot(t0 + n, n, 4))
        timeline.tick(t0 + n + 0.3, "send" if n < 6 else "drain")
    final = {
        "worker": 0,
        "sends": sends.export(),
        "rooms": [],
        "lat": Histogram.of([1000, 2000, 3000]).to_sparse(),
        "ack_lat": Histogram.of([500]).to_sparse(),
        "deliveries": 12,
        "unexpected": 0,
        "last_delivery_us": int((t0 + 3) * 1e6),
        "live": 4,
        "abandoned": 0,
        "cpu": 0.5,
    }
    return build_report(
        scenario=sc,
        layout=layout,
        cfg_gateways=["http://127.0.0.1:8080"],
        workers=1,
        source_ips=[],
        raw=False,
        t_start=t0,
        t_go=t0 + 1,
        t0=t0 + 1,
        connect_seconds=0.5,
        live_after_connect=4,
        finals=[final],
        accounting=accounting,
        timeline=timeline,
        memory_before=[],
        memory_after=[],
        restarts=[{"service": "gateway-a", "at": 2.0, "t": 3.0, "ready_after_s": 1.5}],
    )


def test_report_summary_and_plots(tmp_path: Path) -> None:
    report = _report(lost=False)
    assert report["passed"]
    assert report["accounting"]["lost"] == 0
    assert report["accounting"]["expected"] == 12
    assert report["throughput"]["deliveries"] == 12
    assert report["throughput"]["deliveries_per_s"] == 6.0  # 12 over the 2 s to the last
    assert report["latency_ms"]["p50"] == pytest.approx(2.0, rel=0.01)
    assert len(report["timeline"]) == 7
    assert report["timeline"][2]["deliveries_per_s"] > 0
    assert report["close_codes"] == {"1012": 1}
    json.dumps(report)  # JSON-able as is
    text = summary_text(report)
    assert "LOST 0" in text
    assert "verdict      PASS" in text
    assert "restart" in text
    paths = write_plots(report, tmp_path / "plots")
    assert [p.name for p in paths] == ["unit-throughput.png", "unit-connections.png"]
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert len(data) > 10_000  # a real figure, not an empty canvas


def test_loss_fails_the_verdict() -> None:
    report = _report(lost=True)
    assert not report["passed"]
    assert report["accounting"]["lost"] == 1
    failed = [e for e in report["expectations"] if not e["ok"]]
    assert [e["name"] for e in failed] == ["lost"]
    assert report["worst_rooms"][0]["lost_examples"] == {"m2": [2]}
    assert "verdict      FAIL: lost=1" in summary_text(report)


def test_progress_line() -> None:
    row = {
        "t": 12.3,
        "phase": "send",
        "live": 990,
        "sends_per_s": 20.0,
        "acks_per_s": 19.0,
        "deliveries_per_s": 19_500.0,
        "latency_ms": {"p99": 12.25},
        "errors": {"x": 2},
        "closes": {},
    }
    line = progress_line(row, 1000, 9.5)
    assert "live 990/1000" in line
    assert "deliveries/s 19500" in line
    assert "p99 12.2 ms (run 9.5 ms)" in line
    assert "errors 2" in line


def test_summary_shows_load_average_bus_ceiling_and_process_cpu() -> None:
    report = _report(lost=False)
    assert report["process_cpu"] is None
    assert report["load_average"] is None
    report["process_cpu"] = cpu_table(
        {"history": Reading(7, 1.0)}, {"history": Reading(7, 1.3)}, acked=3, seconds=2.0
    )
    report["load_average"] = {"before": [1.0, 2.0, 3.0], "after": [4.0, 5.0, 6.0]}
    report["bus_ceiling"] = {
        "publishes_per_s": 6000.0,
        "messages": 20000,
        "in_flight": 256,
        "ratio": 0.0001,
    }
    text = summary_text(report)
    assert "load average [1.0, 2.0, 3.0] before, [4.0, 5.0, 6.0] after" in text
    assert "raw JetStream publish 6000.0/s" in text
    assert "acked msg/s / ceiling = 0.0001" in text
    assert "| history | 0.3 | 100.0 | 15.0 | 0.0 |" in text
