"""The observed stack: the whole stack as ``make up`` runs it (on free ports), the local
NATS probe, and a real Prometheus (Debian's package) scraping them with
deploy/observability's local config and alert rules."""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from obs_promql import ALERTS, LOCAL_CONFIG, OBSERVABILITY, PrometheusApi

from roomcast.testing.processes import ManagedProcess, free_port, port_accepts, wait_until
from roomcast.testing.stack import Stack, StackPorts

# One scrape and one rule evaluation per second: fresh samples arrive within a second
# of the load, and a 1-minute rate window holds dozens of points.
SCRAPE_INTERVAL = "1s"
# Prometheus opens its TSDB and loads the rules in well under a second; a loaded CI
# machine gets a generous margin.
PROMETHEUS_START_TIMEOUT_SECONDS = 30.0
# The default ports prometheus-local.yml targets, and where each now listens (below).
LOCAL_DEFAULT_PORTS = {
    8080: "gateway_a",
    8090: "gateway_b",
    8081: "auth",
    8082: "rooms_http",
    8083: "history",
    8084: "notifier",
}
LOCAL_PROMETHEUS_PORT = 9090
LOCAL_NATS_PROBE_PORT = 7777

# Auth's bcrypt queue, shrunk so that rare events happen within a few requests (the
# defaults' reasons are in auth's settings; the event, not the threshold, is tested):
# one hash at a time and one waiting at most, so a burst of concurrent logins
# overflows the queue and auth answers 503 overloaded. Everything else runs with the
# defaults of `make up` (but bcrypt cost 4, as in every test).
TEST_LIMITS = {
    "ROOMCAST_AUTH_HASH_CONCURRENCY": "1",
    "ROOMCAST_AUTH_MAX_PENDING_HASHES": "1",
    # One webhook endpoint (nothing listens there), so the notifier exports the webhook
    # series the dashboard and the alerts query (per configured endpoint, at zero).
    "ROOMCAST_NOTIFIER_WEBHOOKS": '[{"name": "obs", "url": "http://127.0.0.1:9/hook", '
    '"secret": "observability-test-secret"}]',
    "ROOMCAST_NOTIFIER_WEBHOOK_ALLOW_PRIVATE_HOSTS": "true",
}


@dataclass
class ObservedStack:
    stack: Stack
    prometheus: PrometheusApi
    nats_probe_port: int
    prometheus_port: int
    config: dict[str, Any]


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if found is None:
        pytest.fail("prometheus is required: apt-get install prometheus (Debian's package)")
    return found


def local_config_for(stack: Stack, prometheus_port: int, probe_port: int) -> dict[str, Any]:
    """prometheus-local.yml with its targets moved to the stack's ports, 1 s scrapes and
    the alert rules by absolute path. Every job of the file is kept as it is."""
    config: dict[str, Any] = yaml.safe_load(LOCAL_CONFIG.read_text())
    ports = {default: getattr(stack.ports, name) for default, name in LOCAL_DEFAULT_PORTS.items()}
    ports[LOCAL_PROMETHEUS_PORT] = prometheus_port
    ports[LOCAL_NATS_PROBE_PORT] = probe_port
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            moved = []
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                assert int(port) in ports, f"{job['job_name']}: unknown local port {target}"
                moved.append(f"{host}:{ports[int(port)]}")
            static["targets"] = moved
    config["global"].update(
        scrape_interval=SCRAPE_INTERVAL,
        scrape_timeout=SCRAPE_INTERVAL,
        evaluation_interval=SCRAPE_INTERVAL,
    )
    config["rule_files"] = [str(ALERTS)]
    return config


@contextlib.contextmanager
def observed_stack() -> Iterator[ObservedStack]:
    """Start everything; stop it all on exit, whatever happened."""
    state = Path(tempfile.mkdtemp(prefix="roomcast-obs-"))
    stack = Stack(state, StackPorts.free(), bcrypt_cost=4, extra_env=dict(TEST_LIMITS))
    processes: list[ManagedProcess] = []
    api: PrometheusApi | None = None
    try:
        stack.start()
        assert stack.nats is not None
        probe_port = free_port()
        probe = ManagedProcess(
            "nats-probe",
            [
                sys.executable,
                str(OBSERVABILITY / "nats_probe.py"),
                "--nats",
                stack.nats.url,
                "--listen",
                f"127.0.0.1:{probe_port}",
            ],
        )
        processes.append(probe)
        probe.start()
        wait_until(
            lambda: probe.check_alive() and port_accepts("127.0.0.1", probe_port),
            timeout=PROMETHEUS_START_TIMEOUT_SECONDS,
            what="the NATS probe",
        )

        prometheus_port = free_port()
        config = local_config_for(stack, prometheus_port, probe_port)
        config_path = state / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        (state / "prometheus-data").mkdir()
        prometheus = ManagedProcess(
            "prometheus",
            [
                prometheus_binary(),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={state / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ],
        )
        processes.append(prometheus)
        prometheus.start()
        api = PrometheusApi(f"http://127.0.0.1:{prometheus_port}")
        ready_api = api
        wait_until(
            lambda: prometheus.check_alive() and ready_api.ready(),
            timeout=PROMETHEUS_START_TIMEOUT_SECONDS,
            what="Prometheus /-/ready",
        )
        yield ObservedStack(stack, api, probe_port, prometheus_port, config)
    finally:
        if api is not None:
            api.close()
        for process in reversed(processes):
            process.stop()
        stack.stop()
        shutil.rmtree(state, ignore_errors=True)
