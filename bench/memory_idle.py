"""Memory per idle authenticated connection: one gateway process against a raw
picows server holding the same number of idle sockets, in the same run.

For each target the server's RSS is read, ``--sockets`` sockets are opened by the
load tool's workers (authenticated with the gateway; plain WebSockets on the raw
server), the RSS is read again after ``--settle`` seconds, and the growth is divided
by the sockets gained (the gateway's own ``roomcast_gateway_connections`` count). The
gateway's RSS comes from its /metrics (process_resident_memory_bytes), the raw
server's from /proc: the same number.

    .venv/bin/python bench/memory_idle.py [--sockets 10000] [--source-ips 127.0.0.1,127.0.0.2]
                                          [--json .bench/memory_idle.json]

The raw server runs twice: with picows' default 16 KiB initial read buffer, and with
the gateway's 4 KiB; the ratio is computed against the latter (like for like).
Target (issue 4): gateway <= 1.25x the raw server's bytes per socket.
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

from roomcast.load.benchdoc import memory_tables
from roomcast.load.benchkit import (
    RawServer,
    one_gateway_stack,
    proc_rss_bytes,
    provision,
    stop_stack,
)
from roomcast.load.plan import build_layout
from roomcast.load.report import git_commit, machine_info
from roomcast.load.run import RunConfig, run_scenario
from roomcast.load.scenario import Scenario, parse_scenario

TARGET_RATIO = 1.25


def idle_scenario(sockets: int, settle: float) -> Scenario:
    return parse_scenario(
        {
            "name": "memory-idle",
            "duration": 1,
            "users": max(1, sockets // 20),  # 20 devices per user: fewer logins
            "sockets": sockets,
            "connect_rate": 1500,
            "connect_timeout": 300,
            "memory": {"measure": True, "settle": settle},
        }
    )


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "benchmark": "memory_idle",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
        "commit": git_commit(),
        "config": {k: v for k, v in vars(args).items() if k != "json"},
    }
    sc = idle_scenario(args.sockets, args.settle)
    ips = [ip for ip in args.source_ips.split(",") if ip]

    def cfg(gateway: str, **kw: Any) -> RunConfig:
        return RunConfig(
            scenario=sc, gateways=[gateway], workers=args.workers, source_ips=ips, **kw
        )

    # The raw server twice: with picows' defaults, and with the gateway's 4 KiB initial
    # read buffer (roomcast.gateway.edge.multiplexer.WS_READ_BUFFER_BYTES), the like-for-like
    # baseline the ratio is computed against.
    for key, extra in (("raw_default", ()), ("raw", ("--read-buffer-bytes", "4096"))):
        with RawServer(*extra) as raw:

            async def probe(raw: RawServer = raw) -> list[dict[str, Any]]:
                return [{"url": raw.url, "rss_bytes": proc_rss_bytes(raw.pid), "connections": None}]

            report = await run_scenario(cfg(raw.url, raw=True, memory_probe=probe, progress=False))
            result[key] = report["memory"]
            print(f"{key}: {report['memory']}", file=sys.stderr, flush=True)

    stack = await asyncio.to_thread(one_gateway_stack)
    try:
        gw = stack.gateway_urls[0]
        users, _ = await provision(gw, build_layout(sc), label="bench memory")
        report = await run_scenario(cfg(gw, users=users, room_ids=[], progress=False))
        result["gateway"] = report["memory"]
        result["gateway_live"] = report["connections"]["live_after_connect"]
        print(f"gateway: {report['memory']}", file=sys.stderr, flush=True)
    finally:
        await asyncio.to_thread(stop_stack, stack)
    raw_b = (result["raw"] or {}).get("bytes_per_socket")
    gw_b = (result["gateway"] or {}).get("bytes_per_socket")
    result["ratio"] = round(gw_b / raw_b, 3) if raw_b and gw_b else None
    result["target_ratio"] = TARGET_RATIO
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sockets", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=2, help="client processes")
    p.add_argument("--source-ips", default="", help="comma-separated local addresses")
    p.add_argument("--settle", type=float, default=3.0, help="seconds before reading RSS")
    p.add_argument("--json", type=Path, help="write the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    result = uvloop.run(bench(args))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    print(memory_tables(result))
    return result


if __name__ == "__main__":
    main()
