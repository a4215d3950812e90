"""Benchmark: auth logins per second at saturation, against the bcrypt bound measured in
the same run, and how GET /v1/users/me latency holds up while logins saturate the CPU.

    .venv/bin/python bench/auth_logins.py [--concurrency 8] [--duration 15]

Starts SecantusDB, nats-server and ``python -m roomcast.auth`` (default bcrypt cost 12
unless --cost) on free ports, registers users, then:

1. bcrypt bound: the time of one cost-N hash, measured here, in this run; with C cores
   the best possible rate is C / t logins per second (a login is one bcrypt check).
   Also the throughput of C threads hashing in parallel, measured before and after the
   load (it shows what the shared machine actually delivered at the time).
2. /v1/users/me at rest: paced requests, p50 and p99.
3. saturation: N clients log in back to back for --duration seconds (after a warm-up)
   while the same paced /v1/users/me probe runs; logins/s and the probe's p99.

Prints a markdown table row (and its header). Rate limits are raised for the run: every
client comes from 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import bcrypt
import httpx

from roomcast.auth.passwords import prehash
from roomcast.common.tokens import generate_private_key_pem
from roomcast.testing.processes import (
    MongoServer,
    NatsServer,
    ServiceProcess,
    free_port,
)

PASSWORD = "bench password that is long enough"  # noqa: S105
# Interval between probe requests: 50/s is a realistic trickle of profile reads and
# keeps the probe itself from taking a noticeable share of the 2 cores.
PROBE_INTERVAL_SECONDS = 0.02
# Warm-up before counting: lets the hash queue fill and the rate settle.
WARMUP_SECONDS = 2.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def single_hash_seconds(cost: int, samples: int = 5) -> float:
    salt = bcrypt.gensalt(cost)
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        bcrypt.hashpw(prehash(PASSWORD), salt)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def parallel_hashes_per_second(cost: int, threads: int, per_thread: int = 3) -> float:
    """bcrypt throughput with one thread per core, in this process, right now: the bound
    as the machine delivers it (shared cores, SMT, other load), next to cores / t."""
    from concurrent.futures import ThreadPoolExecutor

    salt = bcrypt.gensalt(cost)

    def work() -> None:
        for _ in range(per_thread):
            bcrypt.hashpw(prehash(PASSWORD), salt)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(work) for _ in range(threads)]:
            future.result()
    return threads * per_thread / (time.perf_counter() - start)


async def probe(client: httpx.AsyncClient, token: str, stop: asyncio.Event) -> list[float]:
    latencies = []
    headers = {"Authorization": f"Bearer {token}"}
    while not stop.is_set():
        start = time.perf_counter()
        response = await client.get("/v1/users/me", headers=headers)
        latencies.append(time.perf_counter() - start)
        response.raise_for_status()
        await asyncio.sleep(PROBE_INTERVAL_SECONDS)
    return latencies


async def probe_for(client: httpx.AsyncClient, token: str, seconds: float) -> list[float]:
    stop = asyncio.Event()
    task = asyncio.create_task(probe(client, token, stop))
    await asyncio.sleep(seconds)
    stop.set()
    return await task


async def login_loop(
    client: httpx.AsyncClient, username: str, counting: asyncio.Event, stop: asyncio.Event
) -> int:
    done = 0
    while not stop.is_set():
        response = await client.post(
            "/v1/auth/login", json={"username": username, "password": PASSWORD}
        )
        response.raise_for_status()
        if counting.is_set() and not stop.is_set():
            done += 1
    return done


async def run_bench(base: str, args: argparse.Namespace, cost: int) -> None:
    limits = httpx.Limits(max_connections=args.concurrency + 4)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        users = [f"bench{i}" for i in range(args.concurrency)]
        for name in users:
            response = await client.post(
                "/v1/auth/register", json={"username": name, "password": PASSWORD}
            )
            response.raise_for_status()
        token = (
            await client.post("/v1/auth/login", json={"username": users[0], "password": PASSWORD})
        ).json()["access_token"]

        hash_seconds = single_hash_seconds(cost)
        cores = os.cpu_count() or 1
        bound = cores / hash_seconds
        parallel_before = parallel_hashes_per_second(cost, cores)

        rest = await probe_for(client, token, args.rest_seconds)

        counting, stop = asyncio.Event(), asyncio.Event()
        loggers = [asyncio.create_task(login_loop(client, u, counting, stop)) for u in users]
        await asyncio.sleep(WARMUP_SECONDS)
        counting.set()
        started = time.perf_counter()
        loaded = await probe_for(client, token, args.duration)
        elapsed = time.perf_counter() - started
        stop.set()
        logins = sum(await asyncio.gather(*loggers))
        rate = logins / elapsed
        # Measured again after the load: the machine is shared, so the reference is the
        # mean of the throughput bcrypt got just before and just after the load window.
        parallel = (parallel_before + parallel_hashes_per_second(cost, cores)) / 2

    rest_p50, rest_p99 = percentile(rest, 50) * 1000, percentile(rest, 99) * 1000
    load_p50, load_p99 = percentile(loaded, 50) * 1000, percentile(loaded, 99) * 1000
    print()
    print(
        "| cost | cores | 1 hash (ms) | bound cores/t (logins/s) | measured parallel "
        "bcrypt (hashes/s) | clients | logins/s | of bound | of parallel | /me p50 rest (ms) "
        "| /me p99 rest (ms) | /me p50 load (ms) | /me p99 load (ms) | p99 load/rest |"
    )
    print("|---" * 14 + "|")
    print(
        f"| {cost} | {cores} | {hash_seconds * 1000:.0f} | {bound:.1f} | {parallel:.1f} "
        f"| {args.concurrency} | {rate:.1f} | {rate / bound:.0%} | {rate / parallel:.0%} "
        f"| {rest_p50:.1f} | {rest_p99:.1f} "
        f"| {load_p50:.1f} | {load_p99:.1f} | {load_p99 / rest_p99:.1f}x |"
    )
    print(f"\n({len(rest)} probes at rest, {len(loaded)} under load, {logins} logins counted)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent login clients")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds under load")
    parser.add_argument("--rest-seconds", type=float, default=6.0, help="probe at rest")
    parser.add_argument("--cost", type=int, default=None, help="bcrypt cost (default: 12)")
    parser.add_argument(
        "--niceness", type=int, default=None, help="hashing thread nice value (default: 10)"
    )
    args = parser.parse_args()
    cost = args.cost if args.cost is not None else 12

    mongo, nats = MongoServer(), NatsServer()
    auth: ServiceProcess | None = None
    try:
        mongo.start()
        nats.start()
        port = free_port()
        env = {
            "ROOMCAST_AUTH_PORT": str(port),
            "ROOMCAST_AUTH_MONGO_URL": mongo.url,
            "ROOMCAST_AUTH_NATS_URL": nats.url,
            "ROOMCAST_AUTH_SIGNING_KEY": generate_private_key_pem().decode(),
            "ROOMCAST_AUTH_LOG_LEVEL": "WARNING",
            # Every bench client is 127.0.0.1: lift the per-IP/username limits.
            "ROOMCAST_AUTH_LOGIN_RATE_LIMIT": "100000",
            "ROOMCAST_AUTH_REGISTER_RATE_LIMIT": "100000",
        }
        if args.cost is not None:
            env["ROOMCAST_AUTH_BCRYPT_COST"] = str(args.cost)
        if args.niceness is not None:
            env["ROOMCAST_AUTH_HASH_THREAD_NICENESS"] = str(args.niceness)
        base = f"http://127.0.0.1:{port}"
        auth = ServiceProcess("auth", env, ready_url=f"{base}/readyz")
        auth.start()
        niceness = args.niceness if args.niceness is not None else 10
        print(
            f"auth at {base}, bcrypt cost {cost}, hashing niceness {niceness}, "
            f"{args.concurrency} clients",
            flush=True,
        )
        asyncio.run(run_bench(base, args, cost))
    finally:
        if auth is not None:
            auth.stop()
        nats.cleanup()
        mongo.cleanup()


if __name__ == "__main__":
    main()
