"""Fan-out benchmark: one gateway process against the raw picows baseline.

Measured in one session, with the same receivers (roomcast-load worker processes:
picows clients, orjson parse, exact seq/prev accounting, latency histogram):

1. **raw baseline**: bench/raw_picows_server.py relays each frame of one sender to
   every socket (one room of ``--sockets``). A *blast* (``--blast-rate`` messages/s for
   ``--blast-seconds``, far more than can be delivered) measures the most deliveries/s;
   a *steady* run at ``--rate`` messages/s measures p50/p99 send-to-receive latency.
2. **gateway**: the same two runs through one gateway process of a local stack (the
   second gateway stopped), ``--senders`` sockets sending into the same room shape.
3. **many small rooms**: ``--small-rooms`` rooms of 4 sockets, one sender each, at
   each rate of ``--small-rates`` (messages/s per sender): acknowledged messages/s and
   the ack and delivery latency at that rate.

Deliveries/s = deliveries / (last delivery - first scheduled send). The server's CPU
over that window gives its CPU cost per delivery and so the deliveries one core of it
could make: on a shared machine a process gets only a share of a core, which caps
deliveries/s without saying anything about the server, while the cost per delivery
stays comparable. Both ratios (gateway / raw) are reported. Receivers are not the
bottleneck when their CPU (reported per worker, % of one core) stays below 100 %.

    .venv/bin/python bench/fanout.py [--json .bench/fanout.json] [--plots DIR]

Prints a markdown table. The machine is shared and noisy: compare the ratio to the
same-run baseline, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

from roomcast.load.benchkit import (
    CpuSampler,
    RawServer,
    delivery_window,
    gateway_pid,
    one_gateway_stack,
    provision,
    run_summary,
    stop_stack,
)
from roomcast.load.plan import build_layout
from roomcast.load.report import git_commit, machine_info
from roomcast.load.run import RunConfig, run_scenario
from roomcast.load.scenario import Scenario, parse_scenario

# A blast is over when every member has every message, or after this long.
BLAST_DRAIN_SECONDS = 120.0
# Target of issue 4: the gateway delivers at least this share of the raw baseline.
TARGET_RATIO = 0.6


def fanout_scenario(
    name: str, sockets: int, senders: int, total_rate: float, seconds: float
) -> Scenario:
    return parse_scenario(
        {
            "name": name,
            "duration": seconds,
            "users": max(1, sockets // 4),
            "workers": 1,
            "connect_rate": 1000,
            "drain_timeout": BLAST_DRAIN_SECONDS,
            "rooms": [
                {"count": 1, "members": sockets, "senders": senders, "rate": total_rate / senders}
            ],
            "expect": {"lost": 0, "duplicated": 0},
        }
    )


def small_rooms_scenario(rooms: int, rate: float, seconds: float) -> Scenario:
    return parse_scenario(
        {
            "name": f"small-rooms-{rate:g}",
            "duration": seconds,
            "users": rooms,
            "workers": 1,
            "connect_rate": 1000,
            "drain_timeout": 30,
            "rooms": [{"count": rooms, "members": 4, "senders": 1, "rate": rate}],
        }
    )


async def measured(cfg: RunConfig, server_pid: int, plots: Path | None) -> dict[str, Any]:
    with CpuSampler(server_pid) as sampler:
        report = await run_scenario(cfg)
    out = run_summary(report)
    start, end = delivery_window(report)
    out["server_cpu_percent"] = cpu = sampler.percent(start, end)
    out["server_waiting_percent"] = sampler.percent(start, end, waiting=True)
    # CPU cost per delivery: unlike deliveries/s, it does not depend on the share of
    # the (shared, busy) machine the server got while it ran.
    receivers = sum(out["receivers_cpu_percent"].values())
    if receivers and out["deliveries"]:
        out["receivers_cpu_us_per_delivery"] = round(
            receivers / 100 * (end - start) / out["deliveries"] * 1e6, 2
        )
    if cpu and out["deliveries"]:
        us = cpu / 100 * (end - start) / out["deliveries"] * 1e6
        out["server_cpu_us_per_delivery"] = round(us, 2)
        out["deliveries_per_server_core_s"] = round(1e6 / us)
    if plots is not None:
        from roomcast.load.plots import write_plots

        prefix = f"fanout-{report['target'].split()[0]}-{cfg.scenario.name}"
        out["plots"] = [str(p) for p in write_plots(report, plots, prefix)]
    print(
        f"  {cfg.scenario.name:<18} {out['deliveries_per_s']:>10.0f} deliveries/s  "
        f"p50 {out['latency_ms']['p50']} ms  p99 {out['latency_ms']['p99']} ms  "
        f"lost {out['lost']}  receivers CPU {out['receivers_cpu_percent']} % "
        f"({out.get('receivers_cpu_us_per_delivery')} us/delivery)  "
        f"server CPU {out['server_cpu_percent']} % "
        f"({out.get('server_cpu_us_per_delivery')} us/delivery, "
        f"waiting for a CPU {out['server_waiting_percent']} %)",
        file=sys.stderr,
        flush=True,
    )
    return out


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "benchmark": "fanout",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
        "commit": git_commit(),
        "config": {k: v for k, v in vars(args).items() if k not in ("json", "plots")},
    }
    w, n = args.workers, args.sockets
    blast_raw = fanout_scenario("blast", n, 1, args.blast_rate, args.blast_seconds)
    steady_raw = fanout_scenario("steady", n, 1, args.rate, args.seconds)

    def cfg(sc: Scenario, gateway: str, **kw: Any) -> RunConfig:
        return RunConfig(scenario=sc, gateways=[gateway], workers=w, progress=False, **kw)

    print(f"raw picows baseline, 1 room x {n} sockets, {w} receiver workers", file=sys.stderr)
    with RawServer() as raw:
        result["raw"] = {
            "blast": await measured(cfg(blast_raw, raw.url, raw=True), raw.pid, args.plots),
            "steady": await measured(cfg(steady_raw, raw.url, raw=True), raw.pid, args.plots),
        }
    if args.skip_gateway:
        return result

    print("gateway (one process), same room shape and receivers", file=sys.stderr)
    stack = await asyncio.to_thread(one_gateway_stack)
    try:
        gw = stack.gateway_urls[0]
        pid = gateway_pid(stack)
        blast = fanout_scenario("blast", n, args.senders, args.blast_rate, args.blast_seconds)
        steady = fanout_scenario("steady", n, args.senders, args.rate, args.seconds)
        users, rooms = await provision(gw, build_layout(blast), label="bench fanout")
        result["gateway"] = {
            "blast": await measured(cfg(blast, gw, users=users, room_ids=rooms), pid, args.plots),
            "steady": await measured(cfg(steady, gw, users=users, room_ids=rooms), pid, args.plots),
        }
        small: list[dict[str, Any]] = []
        first = small_rooms_scenario(args.small_rooms, args.small_rates[0], args.seconds)
        users2, rooms2 = await provision(gw, build_layout(first), users, label="bench small")
        for rate in args.small_rates:
            sc = small_rooms_scenario(args.small_rooms, rate, args.seconds)
            row = await measured(cfg(sc, gw, users=users2, room_ids=rooms2), pid, None)
            row["rate_per_sender"] = rate
            small.append(row)
        result["small_rooms"] = {"rooms": args.small_rooms, "members": 4, "runs": small}
    finally:
        await asyncio.to_thread(stop_stack, stack)
    raw_blast, gw_blast = result["raw"]["blast"], result["gateway"]["blast"]
    raw_best = raw_blast["deliveries_per_s"]
    result["ratio"] = round(gw_blast["deliveries_per_s"] / raw_best, 3) if raw_best else None
    raw_core = raw_blast.get("deliveries_per_server_core_s")
    gw_core = gw_blast.get("deliveries_per_server_core_s")
    result["ratio_per_core"] = round(gw_core / raw_core, 3) if raw_core and gw_core else None
    result["target_ratio"] = TARGET_RATIO
    return result


def markdown(result: dict[str, Any]) -> str:
    from roomcast.load.benchdoc import fanout_tables

    return fanout_tables(result)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sockets", type=int, default=1000, help="receivers in the room")
    p.add_argument("--workers", type=int, default=2, help="receiver processes")
    p.add_argument("--senders", type=int, default=40, help="gateway sender sockets")
    p.add_argument("--blast-rate", type=float, default=400.0, help="messages/s offered in a blast")
    p.add_argument("--blast-seconds", type=float, default=2.0)
    p.add_argument("--rate", type=float, default=20.0, help="messages/s of the steady runs")
    p.add_argument("--seconds", type=float, default=8.0, help="duration of the steady runs")
    p.add_argument("--small-rooms", type=int, default=250)
    p.add_argument(
        "--small-rates",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[1.0, 2.0, 4.0],
        help="messages/s per sender in the small-rooms runs (comma-separated)",
    )
    p.add_argument("--skip-gateway", action="store_true", help="only the raw baseline")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--plots", type=Path, help="write PNG plots of each run here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    result = uvloop.run(bench(args))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
