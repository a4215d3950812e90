"""``roomcast-load``: run a load scenario against Roomcast gateways (docs/load.md).

Exit status: 0 when every expectation of the scenario held, 1 when one failed (loss,
duplicates, latency, connections...), 2 when the run could not be set up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

from roomcast.load.busceiling import bus_ceiling
from roomcast.load.provision import ProvisionError, UserCred
from roomcast.load.report import summary_text
from roomcast.load.run import Coordinator, RunConfig, RunError
from roomcast.load.scenario import Scenario, ScenarioError, builtin_names, load_scenario

# What --start-stack changes in the services it starts: auth's per-address attempt
# limits (10 per 30 s) would make creating thousands of users from one address take
# hours; everything else keeps its production default.
START_STACK_ENV = {
    "ROOMCAST_AUTH_REGISTER_RATE_LIMIT": "100000",
    "ROOMCAST_AUTH_LOGIN_RATE_LIMIT": "100000",
}


# The same-run bus ceiling after a --start-stack run (roomcast.load.busceiling), as
# bench/pipeline_cost.py measures it: 20,000 publishes take a few seconds at the
# ceilings seen on 2 shared cores (2-19k/s) and smooth out a stall of the machine;
# 256 in flight keeps nats-server busy without one client's window as the limit.
BUS_CEILING_MESSAGES = 20_000
BUS_CEILING_IN_FLIGHT = 256


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="roomcast-load",
        description="Load-test Roomcast gateways: open-loop senders, exact delivery accounting.",
    )
    p.add_argument("--scenario", help="a scenario name (see --list) or a .toml/.json file")
    p.add_argument(
        "--gateway",
        action="append",
        default=[],
        metavar="URL",
        help="gateway base URL (http://host:port); repeat for several; sockets are spread "
        "over them and reconnect to the next one",
    )
    p.add_argument("--workers", type=int, help="load-generator processes (default: scenario's)")
    p.add_argument(
        "--source-ips",
        default="",
        help="comma-separated local addresses to bind client sockets to "
        "(e.g. 127.0.0.1,127.0.0.2: more than one address's ephemeral ports)",
    )
    p.add_argument("--duration", type=float, help="seconds of sending (default: scenario's)")
    p.add_argument(
        "--scale",
        type=float,
        action="append",
        default=[],
        help="multiply every traffic rate of the scenario (messages, typing, read "
        "receipts, reactions, inbox reads) by this factor; repeat for a rate ladder: one "
        "run per factor, in order, on the same users and rooms (provisioned once)",
    )
    p.add_argument(
        "--bus-ceiling-messages",
        type=int,
        default=BUS_CEILING_MESSAGES,
        help="with --start-stack: raw JetStream publishes to the stack's nats-server after "
        "the window, the same-run bus ceiling (0: skip it)",
    )
    p.add_argument("--report", type=Path, help="write the JSON report here")
    p.add_argument("--plots", type=Path, help="write PNG plots into this directory")
    p.add_argument(
        "--users-file",
        type=Path,
        help="reuse users from this JSON file (created on first use, extended as needed)",
    )
    p.add_argument(
        "--start-stack",
        action="store_true",
        help="start a local stack on free ports for the run (needed for rolling restarts)",
    )
    p.add_argument("--state-dir", type=Path, help="state directory for --start-stack")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--list", action="store_true", help="list the shipped scenarios and exit")
    return p.parse_args(argv)


def _start_stack(scenario: Scenario, state_dir: Path | None) -> Any:
    from roomcast.testing.stack import Stack, StackPorts

    directory = state_dir or Path(tempfile.mkdtemp(prefix="roomcast-load-stack-"))
    stack = Stack(
        directory,
        StackPorts.free(),
        bcrypt_cost=4,
        extra_env=START_STACK_ENV | scenario.stack_env,
    )
    print(f"starting a local stack in {directory} ...", file=sys.stderr, flush=True)
    stack.start()
    return stack


def add_bus_ceiling(report: dict[str, Any], nats_url: str, messages: int) -> None:
    """Measure the bus ceiling against the run's nats-server (the window is over, the
    stack idle) and add it, with the run's acked msg/s as a ratio of it, to the report."""
    print("measuring the bus ceiling (raw JetStream publish) ...", file=sys.stderr, flush=True)
    rate = asyncio.run(bus_ceiling(nats_url, messages, BUS_CEILING_IN_FLIGHT))
    acked = float(report["throughput"]["acked_msgs_per_s"])
    report["bus_ceiling"] = {
        "publishes_per_s": round(rate, 1),
        "messages": messages,
        "in_flight": BUS_CEILING_IN_FLIGHT,
        "ratio": round(acked / rate, 4) if rate > 0 else None,
    }


def run(args: argparse.Namespace) -> int:
    if args.list:
        for name in builtin_names():
            sc = load_scenario(name)
            print(f"{name:24} {sc.description}")
        return 0
    if not args.scenario:
        print("roomcast-load: --scenario is required (see --list)", file=sys.stderr)
        return 2
    try:
        base = load_scenario(args.scenario)
        steps = [
            base.with_overrides(duration=args.duration, workers=args.workers, scale=f)
            for f in (args.scale or [None])
        ]
    except ScenarioError as exc:
        print(f"roomcast-load: {exc}", file=sys.stderr)
        return 2
    scenario = steps[0]
    if args.start_stack and args.gateway:
        print("roomcast-load: --start-stack and --gateway exclude each other", file=sys.stderr)
        return 2
    if scenario.requires_stack and not args.start_stack:
        print(f"roomcast-load: scenario {scenario.name} needs --start-stack", file=sys.stderr)
        return 2
    if not args.start_stack and not args.gateway:
        print("roomcast-load: give --gateway URL (or --start-stack)", file=sys.stderr)
        return 2
    stack = None
    reports: list[dict[str, Any]] = []
    try:
        if args.start_stack:
            stack = _start_stack(scenario, args.state_dir)
        users: list[UserCred] | None = None
        room_ids: list[str] | None = None
        for i, step in enumerate(steps):
            cfg = RunConfig(
                scenario=step,
                gateways=list(stack.gateway_urls) if stack is not None else list(args.gateway),
                workers=step.workers,
                source_ips=[ip.strip() for ip in args.source_ips.split(",") if ip.strip()],
                users_file=args.users_file,
                progress=not args.quiet,
                stack=stack,
                users=users,
                room_ids=room_ids,
                stack_pids=_stack_pids(stack),
                mongo_url=stack.mongo.url if stack is not None and stack.mongo else None,
            )
            coordinator = Coordinator(cfg)
            report = uvloop.run(coordinator.run())
            users, room_ids = coordinator.users, coordinator.room_ids
            report["scale"] = args.scale[i] if args.scale else None
            if stack is not None and args.bus_ceiling_messages > 0:
                add_bus_ceiling(report, stack.nats_url, args.bus_ceiling_messages)
            _output(report, args, len(steps) > 1)
            reports.append(report)
    except (RunError, ProvisionError, ScenarioError, OSError, TimeoutError) as exc:
        print(f"\nroomcast-load: {exc}", file=sys.stderr)
        return 1 if reports else 2  # a ladder's higher step may overload the stack
    except KeyboardInterrupt:
        print("\nroomcast-load: interrupted", file=sys.stderr)
        return 130
    finally:
        if stack is not None:
            stack.stop()
            if args.state_dir is None:  # a temporary directory of ours
                shutil.rmtree(stack.state_dir, ignore_errors=True)
    return 0 if all(r["passed"] for r in reports) else 1


def _stack_pids(stack: Any) -> Callable[[], dict[str, int | None]] | None:
    """The started stack's processes by name, read at each end of the window (a
    restarted service has a new pid)."""
    if stack is None:
        return None
    return lambda: {name: proc.pid for name, proc in stack.parts().items()}


def _output(report: dict[str, Any], args: argparse.Namespace, ladder: bool) -> None:
    """Print one run's summary and write its report and plots; a ladder's step files
    are named after their factor (``out.json`` -> ``out-x0.5.json``)."""
    scale = report["scale"]
    if ladder:
        print(f"== step: every rate x{scale:g}")
    print(summary_text(report), flush=True)
    if args.report:
        path = args.report
        if ladder:
            path = path.with_name(f"{path.stem}-x{scale:g}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1))
        print(f"report: {path}")
    if args.plots:
        from roomcast.load.plots import write_plots

        plots = args.plots / f"x{scale:g}" if ladder else args.plots
        for plot in write_plots(report, plots):
            print(f"plot: {plot}")


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(parse_args(argv)))


if __name__ == "__main__":
    main()
