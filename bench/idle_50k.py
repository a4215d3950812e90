"""50k idle authenticated sockets on one machine: memory per socket on each of several
gateway processes, and the time for one gateway's sockets to come back after it
restarts, with the clients reconnecting like the SDKs (exponential backoff, full
jitter: roomcast.load.backoff), without a reconnect storm.

    .venv/bin/python bench/idle_50k.py [--sockets 50000] [--gateways 4] [--workers 4]
        [--source-ips 127.0.0.2,...,127.0.0.9] [--json .bench/idle_50k.json]

1. Limits: RLIMIT_NOFILE raised to the hard limit in this process (the gateways and the
   raw server inherit it) and in every client worker; each gateway holds sockets/gateways
   descriptors, each client worker sockets/workers. The ephemeral port range bounds the
   sockets per source address (each client socket binds one 127.0.0.x address).
2. Baseline, same run: bench/raw_picows_server.py (4 KiB read buffer, the gateway's)
   holding as many plain idle WebSockets as one gateway will; RSS growth per socket.
3. The stack on free ports with ``--gateways`` gateway processes; users provisioned
   (``--devices-per-user`` sockets share a user's token); the fleet
   (roomcast.load.fleet) opens every socket, each authenticated (``ready``), pinned to
   one gateway, from the source addresses in turn; RSS growth per socket on each gateway
   (its /metrics) after ``--settle`` s.
4. Gateway 0 gets SIGTERM (it drains: 1012 to every socket), exits, and a new process
   starts on the same port; the time until every one of its sockets is ready again, and
   the clients' connection attempts per second over that window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvloop

from roomcast.load import wire
from roomcast.load.backoff import (
    SDK_BACKOFF_INITIAL_SECONDS,
    SDK_BACKOFF_MAX_SECONDS,
    ReconnectPolicy,
)
from roomcast.load.benchkit import BENCH_STACK_ENV, RawServer, proc_rss_bytes
from roomcast.load.fleet import Fleet, per_second, spread
from roomcast.load.idlefleet import TICK_SECONDS, raise_fd_limit
from roomcast.load.promtext import memory_per_socket, scrape_gateway
from roomcast.load.provision import Rest, provision_users
from roomcast.load.report import git_commit, machine_info
from roomcast.testing.processes import ServiceProcess, free_port
from roomcast.testing.stack import Stack, StackPorts

DEFAULT_SOURCE_IPS = ",".join(f"127.0.0.{i}" for i in range(2, 10))
# Descriptors a gateway needs beside its sockets (NATS, gRPC, HTTP clients, logs).
GATEWAY_FD_RESERVE = 500
# Connecting 50k sockets at --connect-rate takes sockets/rate s; on top of that, slack for
# gateways that authenticate slower than offered (two cores for everything).
CONNECT_SLACK_SECONDS = 180.0
# A restarted gateway's sockets: its drain (up to shutdown_grace_seconds, 10 s), its
# start (~3 s), then backoff rounds capped at 10 s each.
RECONNECT_WITHIN_SECONDS = 180.0
# The progress line while waiting for sockets: often enough to see a stall.
PROGRESS_SECONDS = 10.0


def machine_limits() -> dict[str, Any]:
    soft, hard = raise_fd_limit()
    lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    mem = {
        line.split(":")[0]: int(line.split()[1]) * 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith(("MemTotal", "MemAvailable"))
    }
    return {
        "nofile_soft": soft,
        "nofile_hard": hard,
        "ephemeral_ports": hi - lo + 1,
        "somaxconn": int(Path("/proc/sys/net/core/somaxconn").read_text()),
        "mem_total_gib": round(mem["MemTotal"] / 2**30, 1),
        "mem_available_gib": round(mem["MemAvailable"] / 2**30, 1),
    }


def listen_overflows() -> int:
    """The kernel's count of connections dropped because an accept queue was full
    (TcpExt ListenOverflows; machine-wide: other processes' too)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            row = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return int(row.get("ListenOverflows", 0))
    return 0


def check_limits(args: argparse.Namespace, limits: dict[str, Any]) -> None:
    per_gateway = -(-args.sockets // args.gateways)
    if per_gateway + GATEWAY_FD_RESERVE > limits["nofile_hard"]:
        raise SystemExit(
            f"{per_gateway} sockets per gateway: above RLIMIT_NOFILE {limits['nofile_hard']} "
            f"(hard) less {GATEWAY_FD_RESERVE}; use more --gateways"
        )


class Gateways:
    """The stack's gateways (one or two) plus more processes of the same service on free
    ports; gateway 0 (the stack's gateway-a) is the one restarted."""

    def __init__(self, stack: Stack, count: int) -> None:
        self.stack = stack
        self.count = count
        self.extra = [(free_port(), f"gateway-{k}") for k in range(2, count)]
        self.procs: list[ServiceProcess] = []

    def start(self) -> None:
        if self.count < 2:
            self.stack.services["gateway-b"].stop()
        for port, name in self.extra:
            env = self.stack.service_env("gateway-a") | {
                "ROOMCAST_GATEWAY_PORT": str(port),
                "ROOMCAST_GATEWAY_INSTANCE_NAME": name,
            }
            svc = ServiceProcess(
                "gateway", env, ready_url=f"http://127.0.0.1:{port}/readyz", name=name
            )
            self.procs.append(svc)
            svc.start()

    @property
    def urls(self) -> list[str]:
        own = self.stack.gateway_urls[: min(2, self.count)]
        return own + [f"http://127.0.0.1:{port}" for port, _ in self.extra]

    def stop_first(self) -> None:
        self.stack.services["gateway-a"].stop()

    def start_first(self) -> None:
        self.stack.restart("gateway-a")

    def stop(self) -> None:
        for svc in self.procs:
            svc.stop()


async def scrape(urls: list[str]) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        return [await scrape_gateway(client, u) for u in urls]


async def raw_baseline(args: argparse.Namespace, ips: list[str]) -> dict[str, Any]:
    n = -(-args.sockets // args.gateways)
    with RawServer("--read-buffer-bytes", "4096") as raw:
        before = proc_rss_bytes(raw.pid)
        fleet = Fleet(
            [wire.ws_url(raw.url, raw=True)],
            spread(n, 1, ips, 1),
            [""],
            workers=args.workers,
            connect_rate=args.connect_rate,
            raw=True,
        )
        fleet.start()
        try:
            took = await fleet.wait(lambda f: f.live()[0] >= n, n / args.connect_rate + 120)
            live = fleet.live()[0]
            await asyncio.sleep(args.settle)  # RSS settles: allocator, read buffers
            after = proc_rss_bytes(raw.pid)
        finally:
            await fleet.stop()
    return {
        "sockets": live,
        "connect_s": None if took is None else round(took, 1),
        "rss_before_mib": round(before / 2**20, 1),
        "rss_after_mib": round(after / 2**20, 1),
        "bytes_per_socket": round((after - before) / live) if live else None,
    }


def attempt_profile(fleet: Fleet, start: float, end: float) -> dict[str, Any]:
    lags = [v for t, v in fleet.lag_max.items() if start <= t <= end + 1]
    attempts = per_second(fleet.attempts, start, end)
    readies = per_second(fleet.readies, start, end)
    inside = [n for t, n in fleet.attempts.items() if start <= t * TICK_SECONDS <= end]
    return {
        "attempts_per_s": attempts,
        "readies_per_s": readies,
        "attempts": sum(attempts),
        "peak_attempts_per_s": max(attempts),
        "peak_attempts_per_100ms": max(inside, default=0),
        "client_loop_lag_max_s": round(max(lags, default=0.0), 2),
    }


async def restart_and_reconnect(gws: Gateways, fleet: Fleet) -> dict[str, Any]:
    n = fleet.expected[0]
    others = fleet.expected[1:]
    low_others = list(others)
    overflows = listen_overflows()
    t_term = time.time()
    await asyncio.to_thread(gws.stop_first)  # SIGTERM, then wait for the exit
    t_exit = time.time()
    await asyncio.to_thread(gws.start_first)  # a new process on the same port, ready
    t_ready = time.time()

    def back(f: Fleet) -> bool:
        live = f.live()
        for i, v in enumerate(live[1:]):
            low_others[i] = min(low_others[i], v)
        return live[0] >= n

    took = await fleet.wait(reporting(back), RECONNECT_WITHIN_SECONDS)
    t_back = time.time()
    await asyncio.sleep(2 * TICK_SECONDS + 1.0)  # the last second's snapshot arrives
    profile = attempt_profile(fleet, t_term - 1, t_back + 1)
    # What the new process itself sees: attempts once it is ready (before that they are
    # refused by the kernel, or answered by the draining process).
    after_ready = per_second(fleet.attempts, t_ready, t_back + 1)
    return {
        "sockets": n,
        "back": fleet.live()[0],
        "drain_s": round(t_exit - t_term, 2),
        "start_s": round(t_ready - t_exit, 2),
        "all_back_after_sigterm_s": None if took is None else round(t_back - t_term, 2),
        "all_back_after_ready_s": None if took is None else round(t_back - t_ready, 2),
        "other_gateways_lowest_live": low_others,
        "other_gateways_expected": others,
        "attempts_per_socket": round(profile["attempts"] / n, 2) if n else None,
        "listen_overflows": listen_overflows() - overflows,
        "peak_attempts_per_s_after_ready": max(after_ready),
        **profile,
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    limits = machine_limits()
    check_limits(args, limits)
    ips = [ip for ip in args.source_ips.split(",") if ip]
    result: dict[str, Any] = {
        "benchmark": "idle_50k",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info() | limits,
        "commit": git_commit(),
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "policy": vars(policy_of(args)),
    }
    result["raw"] = await raw_baseline(args, ips)
    log(f"raw: {result['raw']}")
    stack = Stack(
        Path(tempfile.mkdtemp(prefix="roomcast-bench-")),
        StackPorts.free(),
        bcrypt_cost=4,
        extra_env=BENCH_STACK_ENV,
    )
    await asyncio.to_thread(stack.start)
    gws = Gateways(stack, args.gateways)
    fleet: Fleet | None = None
    try:
        await asyncio.to_thread(gws.start)
        urls = gws.urls
        rest = Rest(urls)
        try:
            users = await provision_users(rest, max(1, args.sockets // args.devices_per_user))
        finally:
            await rest.aclose()
        before = await scrape(urls)
        fleet = Fleet(
            [wire.ws_url(u) for u in urls],
            spread(args.sockets, len(urls), ips, len(users)),
            [u.token for u in users],
            workers=args.workers,
            connect_rate=args.connect_rate,
            policy=policy_of(args),
        )
        t0 = time.time()
        overflows = listen_overflows()
        fleet.start()
        took = await fleet.wait(
            reporting(lambda f: sum(f.live()) >= f.total),
            args.sockets / args.connect_rate + CONNECT_SLACK_SECONDS,
        )
        result["connect"] = {
            "sockets": fleet.total,
            "live": fleet.live(),
            "expected": fleet.expected,
            "all_live_s": None if took is None else round(took, 1),
            "workers": fleet.n_workers,
            "source_ips": ips,
            "listen_overflows": listen_overflows() - overflows,
            **attempt_profile(fleet, t0, time.time()),
        }
        log(f"connect: {sum(fleet.live())}/{fleet.total} live in {took}")
        await asyncio.sleep(args.settle)
        after = await scrape(urls)
        result["gateway"] = memory_per_socket(before, after)
        log(f"gateway memory: {result['gateway']}")
        if took is not None:
            result["restart"] = await restart_and_reconnect(gws, fleet)
            log(f"restart: {result['restart']}")
        result["errors"] = fleet.errors
        result["error_examples"] = fleet.examples
        result["closes"] = {str(k): v for k, v in fleet.closes.items()}
    finally:
        if fleet is not None:
            await fleet.stop()
        await asyncio.to_thread(gws.stop)
        await asyncio.to_thread(stack.stop)
        shutil.rmtree(stack.state_dir, ignore_errors=True)
    raw_b = result["raw"]["bytes_per_socket"]
    gw_b = (result.get("gateway") or {}).get("bytes_per_socket")
    result["ratio"] = round(gw_b / raw_b, 3) if raw_b and gw_b else None
    return result


def reporting(condition: Callable[[Fleet], bool]) -> Callable[[Fleet], bool]:
    """``condition``, logging the fleet's state every PROGRESS_SECONDS while it waits."""
    last = [time.monotonic()]

    def check(f: Fleet) -> bool:
        if time.monotonic() - last[0] >= PROGRESS_SECONDS:
            last[0] = time.monotonic()
            recent = sum(per_second(f.attempts, time.time() - PROGRESS_SECONDS, time.time()))
            log(
                f"  live {f.live()} of {f.expected}; {recent} attempts in the last "
                f"{PROGRESS_SECONDS:.0f} s; closes {f.closes}; errors {f.errors}"
            )
        return condition(f)

    return check


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def tables(r: dict[str, Any]) -> str:
    m, raw, c = r["machine"], r["raw"], r.get("connect", {})
    lines = [
        f"machine: {m['cpus']} cores, {m['mem_total_gib']} GiB; RLIMIT_NOFILE "
        f"{m['nofile_soft']}/{m['nofile_hard']} (raised to the hard limit); "
        f"{m['ephemeral_ports']} ephemeral ports per source address",
        f"sockets: {sum(c.get('live', []))}/{c.get('sockets')} live in {c.get('all_live_s')} s "
        f"over {len(c.get('expected', []))} gateways, {c.get('workers')} client processes, "
        f"{len(c.get('source_ips', []))} source addresses; {c.get('attempts')} attempts, "
        f"{c.get('listen_overflows')} accept-queue overflows",
        "",
        "| process | sockets | RSS before → after (MiB) | KiB per socket |",
        "|---|---|---|---|",
    ]
    gw = r.get("gateway") or {"gateways": []}
    for i, row in enumerate(gw["gateways"]):
        kib = row.get("bytes_per_socket")
        lines.append(
            f"| gateway {i} | {row.get('connections_gained')} | {row.get('rss_before_mib')} → "
            f"{row.get('rss_after_mib')} | {None if kib is None else round(kib / 1024, 1)} |"
        )
    raw_b = raw["bytes_per_socket"]
    lines.append(
        f"| raw picows (4 KiB buffer) | {raw['sockets']} | {raw['rss_before_mib']} → "
        f"{raw['rss_after_mib']} | {None if raw_b is None else round(raw_b / 1024, 1)} |"
    )
    lines.append(f"\nall gateways: {gw.get('kib_per_socket')} KiB per socket, {r['ratio']}x raw")
    rs = r.get("restart")
    if rs:
        lines += [
            "",
            f"restart of gateway 0 ({rs['sockets']} sockets): drain {rs['drain_s']} s, "
            f"start {rs['start_s']} s; all back {rs['all_back_after_sigterm_s']} s after "
            f"SIGTERM ({rs['all_back_after_ready_s']} s after ready); "
            f"{rs['attempts']} attempts ({rs['attempts_per_socket']} per socket), peak "
            f"{rs['peak_attempts_per_s']}/s ({rs['peak_attempts_per_100ms']} in 100 ms), "
            f"{rs['peak_attempts_per_s_after_ready']}/s once the new process was ready; "
            f"{rs['listen_overflows']} accept-queue overflows; client loop lag up to "
            f"{rs['client_loop_lag_max_s']} s; "
            f"other gateways' lowest live {rs['other_gateways_lowest_live']} of "
            f"{rs['other_gateways_expected']}",
            "attempts per second from 1 s before SIGTERM: "
            + " ".join(str(n) for n in rs["attempts_per_s"]),
            "readies per second: " + " ".join(str(n) for n in rs["readies_per_s"]),
        ]
    lines.append(f"client errors {r.get('errors')}; closes {r.get('closes')}")
    return "\n".join(lines)


def policy_of(args: argparse.Namespace) -> ReconnectPolicy:
    return ReconnectPolicy(initial=args.backoff_initial, maximum=args.backoff_max)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sockets", type=int, default=50_000)
    p.add_argument("--gateways", type=int, default=4, help="gateway processes")
    p.add_argument("--workers", type=int, default=4, help="client processes")
    p.add_argument("--source-ips", default=DEFAULT_SOURCE_IPS, help="comma-separated")
    p.add_argument("--devices-per-user", type=int, default=20, help="sockets per token")
    # 300/s: what 4 gateways on 2 shared cores authenticate within their 5 s deadline
    # (at 1000/s under load, sockets timed out and the connect phase did not converge).
    p.add_argument("--connect-rate", type=float, default=300.0, help="first connects/s")
    p.add_argument("--settle", type=float, default=5.0, help="seconds before reading RSS")
    p.add_argument(
        "--backoff-initial",
        type=float,
        default=SDK_BACKOFF_INITIAL_SECONDS,
        help="the clients' first backoff cap, s (default: the SDKs')",
    )
    p.add_argument(
        "--backoff-max",
        type=float,
        default=SDK_BACKOFF_MAX_SECONDS,
        help="the clients' largest backoff cap, s (default: the SDKs')",
    )
    p.add_argument("--json", type=Path, help="write the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    result = uvloop.run(bench(args))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    print(tables(result))
    return result


if __name__ == "__main__":
    main()
