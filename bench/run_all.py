"""Run every Roomcast benchmark script and record the figures in docs/benchmarks.md.

Each benchmark measures its subject against a baseline *in the same run* (these
machines are shared and noisy: compare ratios, not absolutes). Each section of
docs/benchmarks.md between ``<!-- bench:<name>:begin -->`` and ``<!-- bench:<name>:end -->``
is replaced with the command, the machine, the commit and the script's output; the rest
of the page is kept.

    python bench/run_all.py                 # everything (~20 minutes on 2 cores)
    python bench/run_all.py fanout history  # only some
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
OUT = ROOT / ".bench"

# name -> (argv after the interpreter, what it measures against what)
BENCHES: dict[str, tuple[list[str], str]] = {
    "auth": (
        ["bench/auth_logins.py"],
        "logins/s at bcrypt cost 12 vs the bcrypt bound (cores / one hash); "
        "GET /v1/users/me p99 under login load vs at rest",
    ),
    "rooms": (
        ["bench/rooms_check_membership.py"],
        "CheckMembership calls/s and p99 at 50 callers vs a bare MongoDB find_one",
    ),
    "history": (
        # A 100k-message room keeps `make bench` short; pass --page-room-size 1000000
        # by hand for the 1M figure (its load alone takes ~8 minutes here).
        ["bench/history_ingest.py", "--page-room-size", "100000"],
        "history backlog ingest vs a bare durable insert_many of the same documents "
        "(target >= 0.8x); page p99 vs a bare indexed query",
    ),
    "client": (
        ["bench/client_ws.py"],
        "client CPU per frame: picows vs websockets",
    ),
    "presence": (
        ["bench/presence.py"],
        "presence query latency and NATS messages per query/join vs a bare NATS request",
    ),
    "pipeline": (
        ["bench/pipeline_cost.py"],
        "CPU ms per acknowledged message in each process of the stack at 200 msg/s "
        "(100 rooms, sender on gateway A, receiver on gateway B) vs raw JetStream "
        "publishes/s and a bare durable insert_many, same run; database writes per stored "
        "message from SecantusDB's own counters (target <= 1.2); the gateways vs the bare "
        "I/O floor of their send and receive paths at the same rate (bench/io_floor.py)",
    ),
    "pipeline-1000": (
        ["bench/pipeline_cost.py", "--rate", "1000", "--duration", "10", "--floor-seconds", "5"],
        "the same at 1000 msg/s, where the gateways' wake-ups and writes coalesce: "
        "send side vs the goal (<= 0.25 ms) and both sides vs the bare I/O floor",
    ),
    "wake": (
        ["bench/wake_cost.py"],
        "CPU of one loopback send that wakes a sleeping peer vs the same send back to back, "
        "and of one wake-up from epoll_wait: the unit of a lone message's cost",
    ),
    "publisher": (
        ["bench/jetstream_publisher.py"],
        "CPU per JetStream publish and publishes/s: the coalescing publisher "
        "(roomcast.common.jspublisher) vs nats-py js.publish, paced and 1/16/256 in flight",
    ),
    "fanout": (
        ["bench/fanout.py", "--json", ".bench/fanout.json", "--plots", "docs/img/bench"],
        "gateway fan-out vs a raw picows broadcast, 1 room x 1000 sockets",
    ),
    "memory": (
        ["bench/memory_idle.py", "--json", ".bench/memory_idle.json"],
        "memory per idle authenticated socket at 10k sockets vs raw picows",
    ),
}
# The shipped roomcast-load scenarios, each against a two-gateway stack the tool starts.
for _scenario in (
    "fanout-1000",
    "many-small-rooms",
    "chat-mix",
    "connections-idle",
    "rolling-restart",
):
    BENCHES[f"load-{_scenario}"] = (
        [
            "-m",
            "roomcast.load",
            "--start-stack",
            "--quiet",
            "--scenario",
            _scenario,
            "--report",
            f".bench/load-{_scenario}.json",
            "--plots",
            f"docs/img/load/{_scenario}",
        ],
        f"roomcast-load scenario {_scenario}: deliveries, latency, loss and duplicates",
    )


# Their JSON results are rendered (tables and plots) by roomcast.load.benchdoc instead.
RENDERED_BY_BENCHDOC = frozenset({"fanout", "memory"})


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{mem_kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        mem = "?"
    return f"{os.cpu_count()} cores ({cpu}), {mem} RAM, {platform.system()} {platform.release()}"


def commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    return out.stdout.strip() or "unknown"


def replace_section(doc: str, name: str, body: str) -> str:
    begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in doc and end in doc:
        head, rest = doc.split(begin, 1)
        return head + block + rest.split(end, 1)[1]
    return doc.rstrip() + "\n\n" + block + "\n"


def run(name: str) -> str:
    argv, what = BENCHES[name]
    command = " ".join(["python", *argv])
    print(f"== {name}: {command}", flush=True)
    started = time.monotonic()
    result = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True)
    took = time.monotonic() - started
    output = result.stdout.strip()
    if result.returncode != 0:
        output += f"\n\n(exit {result.returncode})\n{result.stderr.strip()[-2000:]}"
    print(output, flush=True)
    return "\n".join(
        [
            f"### {name}: {what}",
            "",
            f"`{command}` on {machine()}, commit {commit()}, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {took:.0f} s.",
            "",
            output,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"some of: {', '.join(BENCHES)}")
    args = parser.parse_args()
    unknown = set(args.names) - set(BENCHES)
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    OUT.mkdir(exist_ok=True)
    doc = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    for name in args.names or list(BENCHES):
        section = run(name)
        if name not in RENDERED_BY_BENCHDOC:
            doc = replace_section(doc, name, section)
            DOC.write_text(doc)
    if not args.names or {"fanout", "memory"} & set(args.names):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "roomcast.load.benchdoc",
                "--fanout",
                ".bench/fanout.json",
                "--memory",
                ".bench/memory_idle.json",
                "--out",
                "docs/benchmarks.md",
            ],
            cwd=ROOT,
            check=False,
        )


if __name__ == "__main__":
    main()
