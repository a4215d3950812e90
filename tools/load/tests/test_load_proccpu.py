"""Per-process CPU over a run's window (roomcast.load.proccpu) and the same-run bus
ceiling (roomcast.load.busceiling) against a real nats-server."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import nats
import pytest
from nats.js.errors import NotFoundError

from roomcast.load.busceiling import CEILING_STREAM, bus_ceiling
from roomcast.load.proccpu import (
    Reading,
    cpu_table,
    proc_cpu_seconds,
    proc_wait_seconds,
    read_all,
    table_text,
)

# A child that burns CPU until killed, and one that sleeps: the table must tell them apart.
BURN = "while True: pass"
SLEEP = "import time; time.sleep(60)"
# CPU the burning child must have used over the window to count as busy; the window
# lasts until it did (a shared machine may give it a fraction of a core).
BUSY_SECONDS = 0.2
WINDOW_DEADLINE_SECONDS = 30.0


def _child(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code])


def test_the_table_charges_cpu_to_the_process_that_used_it() -> None:
    burner, sleeper = _child(BURN), _child(SLEEP)
    try:
        pids: dict[str, int | None] = {"burner": burner.pid, "sleeper": sleeper.pid}
        before = read_all(pids)
        began = time.monotonic()
        deadline = began + WINDOW_DEADLINE_SECONDS
        while proc_cpu_seconds(burner.pid) - before["burner"].cpu_seconds < BUSY_SECONDS:
            assert time.monotonic() < deadline, "the burning child got no CPU"
            time.sleep(0.05)
        after = read_all(pids)
        table = cpu_table(before, after, acked=100, seconds=time.monotonic() - began)
    finally:
        for p in (burner, sleeper):
            p.kill()
            p.wait()
    rows = {r["process"]: r for r in table["rows"]}
    assert rows["burner"]["cpu_s"] >= BUSY_SECONDS
    assert rows["burner"]["ms_per_msg"] == pytest.approx(rows["burner"]["cpu_s"] * 10, abs=0.01)
    assert rows["sleeper"]["cpu_s"] < rows["burner"]["cpu_s"] / 2
    assert table["stack_total"]["cpu_s"] == pytest.approx(
        rows["burner"]["cpu_s"] + rows["sleeper"]["cpu_s"], abs=0.002
    )


def test_waiting_for_a_cpu_is_counted_over_every_thread() -> None:
    # Two threads of this process spin while a busy child competes for the CPUs: the
    # wait is the threads' sum, and it only grows.
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    burner = _child(BURN)
    threads = [threading.Thread(target=spin) for _ in range(2)]
    try:
        first = proc_wait_seconds(os.getpid())
        for t in threads:
            t.start()
        deadline = time.monotonic() + WINDOW_DEADLINE_SECONDS
        while proc_wait_seconds(os.getpid()) - first <= 0:
            assert time.monotonic() < deadline, "three busy threads on this machine never waited"
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join()
        burner.kill()
        burner.wait()


def test_a_gone_process_is_left_out_not_an_error() -> None:
    child = _child("pass")
    child.wait()
    readings = read_all({"gone": child.pid, "never started": None, "self": None})
    assert readings == {}


def test_restarted_process_has_no_figures_and_the_load_generator_is_apart() -> None:
    before = {
        "gateway-a": Reading(10, 1.0),
        "history": Reading(11, 2.0, wait_seconds=1.0),
        "load worker 0": Reading(12, 0.5),
    }
    after = {
        "gateway-a": Reading(20, 0.3),  # restarted: a new process, its CPU restarted at 0
        "history": Reading(11, 2.5, wait_seconds=3.0),
        "load worker 0": Reading(12, 1.5),
    }
    table = cpu_table(
        before, after, acked=250, seconds=10.0, load_generator=frozenset({"load worker 0"})
    )
    rows = {r["process"]: r for r in table["rows"]}
    assert rows["gateway-a"]["cpu_s"] is None
    assert rows["history"] == {
        "process": "history",
        "cpu_s": 0.5,
        "ms_per_msg": 2.0,
        "core_pct": 5.0,
        "wait_pct": 20.0,  # 2 s of the 10 s window runnable but without a CPU
    }
    assert table["stack_total"]["cpu_s"] == 0.5  # the load generator is not the stack
    assert table["load_generator_total"]["ms_per_msg"] == 4.0
    text = table_text(table)
    assert "| gateway-a | - | - | - | - |" in text
    assert "| history | 0.5 | 2.0 | 5.0 | 20.0 |" in text
    assert "| load generator | 1.0 | 4.0 | 10.0 | - |" in text


def test_a_wait_that_went_down_is_unknown_not_zero() -> None:
    # A thread that waited ended within the window: its wait left the sum.
    table = cpu_table(
        {"db": Reading(5, 1.0, wait_seconds=4.0)},
        {"db": Reading(5, 2.0, wait_seconds=3.5)},
        acked=10,
        seconds=5.0,
    )
    assert table["rows"][0]["cpu_s"] == 1.0
    assert table["rows"][0]["wait_pct"] is None


def test_no_acked_messages_gives_no_per_message_figure() -> None:
    table = cpu_table({"x": Reading(1, 1.0)}, {"x": Reading(1, 2.0)}, acked=0, seconds=1.0)
    assert table["rows"][0]["cpu_s"] == 1.0
    assert table["rows"][0]["ms_per_msg"] is None


async def test_bus_ceiling_publishes_to_a_scratch_stream_and_removes_it(nats_url: str) -> None:
    rate = await bus_ceiling(nats_url, 500, 16)
    assert rate > 0
    nc = await nats.connect(nats_url)
    try:
        with pytest.raises(NotFoundError):
            await nc.jetstream().stream_info(CEILING_STREAM)
        info = await nc.jetstream().account_info()
        assert info.streams == 0
    finally:
        await nc.close()
