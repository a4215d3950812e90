"""The generated benchmarks section of docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from roomcast.load.benchdoc import BEGIN, END, main, render_section, update_file


def _run(dps: float, p50: float, p99: float) -> dict[str, Any]:
    lat = {"count": 100, "p50": p50, "p99": p99}
    return {
        "deliveries_per_s": dps,
        "acked_msgs_per_s": dps / 1000,
        "offered_msgs_per_s": 20.0,
        "latency_ms": lat,
        "ack_latency_ms": lat,
        "lost": 0,
        "receivers_cpu_percent": {"0": 55.0, "1": 60.0},
        "server_cpu_percent": 98.0,
        "server_waiting_percent": 3.0,
        "server_cpu_us_per_delivery": 6.5,
        "deliveries_per_server_core_s": 153_846,
    }


FANOUT = {
    "started_at": "2026-01-01T00:00:00Z",
    "machine": {"cpus": 2, "cpu_model": "Test CPU", "platform": "Linux"},
    "commit": "abc1234",
    "config": {
        "sockets": 1000,
        "workers": 2,
        "blast_rate": 400,
        "blast_seconds": 2,
        "rate": 20,
        "seconds": 8,
    },
    "raw": {"blast": _run(150_000, 900, 1800), "steady": _run(20_000, 2.0, 5.0)},
    "gateway": {"blast": _run(100_000, 1200, 2500), "steady": _run(20_000, 3.0, 8.0)},
    "small_rooms": {"rooms": 250, "members": 4, "runs": [_run(4000, 3.0, 9.0)]},
    "ratio": 0.667,
    "ratio_per_core": 0.5,
    "target_ratio": 0.6,
}
MEMORY = {
    "config": {"sockets": 10_000},
    "raw": {
        "sockets": 10_000,
        "kib_per_socket": 20.0,
        "gateways": [{"rss_before_mib": 20.0, "rss_after_mib": 215.3}],
    },
    "gateway": {
        "sockets": 10_000,
        "kib_per_socket": 24.0,
        "gateways": [{"rss_before_mib": 80.0, "rss_after_mib": 314.4}],
    },
    "ratio": 1.2,
    "target_ratio": 1.25,
}


def test_section_has_tables_machine_commit_and_verdicts() -> None:
    text = render_section(FANOUT, MEMORY, plots=[("gateway blast", "img/g.png")])
    assert text.startswith(BEGIN)
    assert text.endswith(END)
    assert "2 CPUs (Test CPU)" in text
    assert "`abc1234`" in text
    row = "| raw picows baseline | blast | 150,000 | 900.0 | 1800.0 | 0 | 55 / 60 | 98 |"
    assert row + " 3 | 6.5 | 153,846 |" in text
    assert "deliveries/s: **0.67** (meets the 60% target)" in text
    assert "(CPU-normalised): **0.50** (misses the 60% target)" in text
    assert "| 20 | 4 | 3.0 | 9.0 | 3.0 | 9.0 | 0 |" in text
    assert "| gateway (1 process) | 10,000 | 80.0 | 314.4 | 24.0 |" in text
    assert "= **1.20x** (meets the 1.25x target)" in text
    assert "![gateway blast](img/g.png)" in text


def test_update_keeps_the_rest_of_the_page(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\nHand-written intro.\n")
    update_file(page, render_section(FANOUT, None))
    update_file(page, render_section(None, MEMORY))  # replaces, never duplicates
    text = page.read_text()
    assert text.startswith("# Benchmarks\n\nHand-written intro.\n")
    assert text.count(BEGIN) == 1
    assert "Idle authenticated connections" in text
    assert "Fan-out, one room" not in text


def test_cli_reads_the_json_results(tmp_path: Path) -> None:
    import json

    (tmp_path / "f.json").write_text(json.dumps(FANOUT))
    out = tmp_path / "docs" / "benchmarks.md"
    main(["--fanout", str(tmp_path / "f.json"), "--out", str(out)])
    assert "Gateway / raw blast, deliveries/s" in out.read_text()
