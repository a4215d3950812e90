"""The whole Roomcast stack on one machine: nats-server (JetStream), SecantusDB, auth,
rooms, history and two gateways. ``make up`` runs :func:`main` with the documented
default ports; the end-to-end tests start a :class:`Stack` on free ports.

Every port can be changed with environment variables (``ROOMCAST_UP_<PART>_PORT``).
``make up`` supervises the parts (roomcast.testing.supervisor): a part that dies is
restarted with backoff and reported, the others keep running. Ctrl-C (or SIGTERM) stops
the services in reverse order, each gracefully.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from roomcast.common.tokens import generate_private_key_pem
from roomcast.testing.processes import (
    ManagedProcess,
    MongoServer,
    NatsServer,
    ServiceProcess,
    free_port,
)
from roomcast.testing.supervisor import Supervisor


def _vapid_private_key() -> str:
    """A P-256 private key, raw and base64url: what the notifier's VAPID setting takes."""
    key = ec.generate_private_key(ec.SECP256R1())
    raw = key.private_numbers().private_value.to_bytes(32, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# The services in start order (each may depend on the ones before it).
SERVICES = ("auth", "rooms", "history", "gateway-a", "gateway-b", "notifier")
# The notifier's rooms service account (docs/notifications.md): a read-only service reader.
NOTIFIER_SERVICE_USER = "roomcast-notifier"


@dataclass(frozen=True)
class StackPorts:
    gateway_a: int = 8080
    gateway_b: int = 8090
    auth: int = 8081
    rooms_http: int = 8082
    rooms_grpc: int = 50051
    history: int = 8083
    notifier: int = 8084
    nats: int = 4222
    mongo: int = 27017

    @classmethod
    def from_env(cls) -> StackPorts:
        values = {}
        for f in fields(cls):
            raw = os.environ.get(f"ROOMCAST_UP_{f.name.upper()}_PORT")
            if raw:
                values[f.name] = int(raw)
        return cls(**values)

    @classmethod
    def free(cls) -> StackPorts:
        return cls(**{f.name: free_port() for f in fields(cls)})


@dataclass
class Stack:
    """Starts and stops the processes of one stack; ``state_dir`` keeps data and keys."""

    state_dir: Path
    ports: StackPorts = field(default_factory=StackPorts)
    # bcrypt cost for auth; tests lower it, ``make up`` keeps the production default.
    bcrypt_cost: int | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    # 1: one nats-server (``ports.nats``); 3: a JetStream cluster of three nodes on free
    # ports, and the CHAT stream and the revocation bucket with that many replicas.
    nats_nodes: int = 1
    nats: NatsServer | None = None
    nats_cluster: list[NatsServer] = field(default_factory=list)
    mongo: MongoServer | None = None
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    @property
    def gateway_urls(self) -> list[str]:
        return [
            f"http://127.0.0.1:{self.ports.gateway_a}",
            f"http://127.0.0.1:{self.ports.gateway_b}",
        ]

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.auth}/.well-known/jwks.json"

    def signing_key_file(self) -> Path:
        """The development signing key, generated once and kept out of git (.roomcast/)."""
        path = self.state_dir / "dev-signing-key.pem"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(generate_private_key_pem())
        return path

    @property
    def nats_url(self) -> str:
        """Every node's URL, comma-separated (what the services' NATS_URL takes)."""
        return ",".join(node.url for node in self.nats_cluster)

    def _common(self, prefix: str) -> dict[str, str]:
        if not self.nats_cluster or self.mongo is None:
            raise RuntimeError("start NATS and MongoDB before the services")
        env = {
            f"{prefix}HOST": "127.0.0.1",
            f"{prefix}NATS_URL": self.nats_url,
            f"{prefix}MONGO_URL": self.mongo.url,
            f"{prefix}JWKS_URL": self.jwks_url,
        }
        # As the production overlay's nats-cluster component sets them: every JetStream
        # asset (the CHAT stream, auth's revocation bucket, rooms' retention bucket) on
        # every node of the cluster.
        if prefix in ("ROOMCAST_GATEWAY_", "ROOMCAST_HISTORY_", "ROOMCAST_NOTIFIER_"):
            env[f"{prefix}STREAM_REPLICAS"] = str(self.nats_nodes)
        if prefix == "ROOMCAST_AUTH_":
            env[f"{prefix}REVOCATIONS_REPLICAS"] = str(self.nats_nodes)
        if prefix == "ROOMCAST_ROOMS_":
            env[f"{prefix}RETENTION_BUCKET_REPLICAS"] = str(self.nats_nodes)
        env.update({k: v for k, v in self.extra_env.items() if k.startswith(prefix)})
        return env

    def service_env(self, name: str) -> dict[str, str]:
        p = self.ports
        rooms_target = f"127.0.0.1:{p.rooms_grpc}"
        if name == "auth":
            env = self._common("ROOMCAST_AUTH_")
            env |= {
                "ROOMCAST_AUTH_PORT": str(p.auth),
                "ROOMCAST_AUTH_SIGNING_KEY_FILE": str(self.signing_key_file()),
                # The gateways forward REST calls from 127.0.0.1 with X-Forwarded-For.
                "ROOMCAST_AUTH_TRUSTED_PROXIES": "127.0.0.1",
            }
            if self.bcrypt_cost is not None:
                env["ROOMCAST_AUTH_BCRYPT_COST"] = str(self.bcrypt_cost)
            env.setdefault("ROOMCAST_AUTH_SERVICE_READER_USERNAMES", NOTIFIER_SERVICE_USER)
            return env
        if name == "rooms":
            env = self._common("ROOMCAST_ROOMS_")
            return env | {
                "ROOMCAST_ROOMS_GRPC_PORT": str(p.rooms_grpc),
                "ROOMCAST_ROOMS_HTTP_PORT": str(p.rooms_http),
            }
        if name == "history":
            env = self._common("ROOMCAST_HISTORY_")
            return env | {
                "ROOMCAST_HISTORY_PORT": str(p.history),
                "ROOMCAST_HISTORY_ROOMS_TARGET": rooms_target,
            }
        if name == "notifier":
            return self._notifier_env()
        port = p.gateway_a if name == "gateway-a" else p.gateway_b
        env = self._common("ROOMCAST_GATEWAY_")
        return env | {
            "ROOMCAST_GATEWAY_PORT": str(port),
            "ROOMCAST_GATEWAY_ROOMS_TARGET": rooms_target,
            "ROOMCAST_GATEWAY_AUTH_URL": f"http://127.0.0.1:{p.auth}",
            "ROOMCAST_GATEWAY_HISTORY_URL": f"http://127.0.0.1:{p.history}",
            "ROOMCAST_GATEWAY_NOTIFIER_URL": f"http://127.0.0.1:{p.notifier}",
        }

    def _dev_secret(self, name: str, make: Callable[[], str]) -> str:
        """A development secret, generated once and kept out of git (.roomcast/)."""
        path = self.state_dir / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(make())
        return path.read_text().strip()

    def _notifier_env(self) -> dict[str, str]:
        p = self.ports
        env = self._common("ROOMCAST_NOTIFIER_")
        defaults = {
            "ROOMCAST_NOTIFIER_PORT": str(p.notifier),
            "ROOMCAST_NOTIFIER_ROOMS_TARGET": f"127.0.0.1:{p.rooms_grpc}",
            "ROOMCAST_NOTIFIER_AUTH_URL": f"http://127.0.0.1:{p.auth}",
            "ROOMCAST_NOTIFIER_SERVICE_USERNAME": NOTIFIER_SERVICE_USER,
            "ROOMCAST_NOTIFIER_SERVICE_PASSWORD": self._dev_secret(
                "dev-notifier-password", lambda: secrets.token_urlsafe(24)
            ),
            # Development only: the account is registered on first use.
            "ROOMCAST_NOTIFIER_SERVICE_REGISTER": "true",
            "ROOMCAST_NOTIFIER_VAPID_PRIVATE_KEY": self._dev_secret(
                "dev-vapid-key", _vapid_private_key
            ),
        }
        return defaults | env

    def make_service(self, name: str) -> ServiceProcess:
        p = self.ports
        module = "gateway" if name.startswith("gateway") else name
        port = {
            "auth": p.auth,
            "rooms": p.rooms_http,
            "history": p.history,
            "notifier": p.notifier,
            "gateway-a": p.gateway_a,
            "gateway-b": p.gateway_b,
        }[name]
        return ServiceProcess(
            module,
            self.service_env(name),
            ready_url=f"http://127.0.0.1:{port}/readyz",
            name=name,
        )

    def _make_nats(self) -> list[NatsServer]:
        if self.nats_nodes == 1:
            (self.state_dir / "nats").mkdir(exist_ok=True)
            return [NatsServer(self.ports.nats, str(self.state_dir / "nats"))]
        client_ports = [self.ports.nats] + [free_port() for _ in range(self.nats_nodes - 1)]
        cluster_ports = [free_port() for _ in range(self.nats_nodes)]
        routes = [f"nats://127.0.0.1:{port}" for port in cluster_ports]
        nodes = []
        for i, (client_port, cluster_port) in enumerate(
            zip(client_ports, cluster_ports, strict=True)
        ):
            store = self.state_dir / f"nats-{i + 1}"
            store.mkdir(exist_ok=True)
            nodes.append(
                NatsServer(
                    client_port,
                    str(store),
                    name=f"nats-{i + 1}",
                    cluster_port=cluster_port,
                    routes=routes,
                )
            )
        return nodes

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "mongo").mkdir(exist_ok=True)
        self.nats_cluster = self._make_nats()
        self.nats = self.nats_cluster[0]
        self.mongo = MongoServer(self.ports.mongo, str(self.state_dir / "mongo"))
        try:
            for node in self.nats_cluster:
                node.start()
            self.mongo.start()
            for name in SERVICES:
                service = self.make_service(name)
                self.services[name] = service
                service.start()
        except BaseException:
            self.stop()
            raise

    def restart(self, name: str) -> ServiceProcess:
        """Start a fresh process for a service that was stopped or killed."""
        old = self.services.get(name)
        if old is not None:
            old.stop()
        service = self.make_service(name)
        self.services[name] = service
        service.start()
        return service

    def processes(self) -> list[ManagedProcess]:
        return list(self.parts().values())

    def parts(self) -> dict[str, ManagedProcess]:
        """Every process by name, in start order (what a supervisor watches)."""
        parts: dict[str, ManagedProcess] = {node.name: node for node in self.nats_cluster}
        if self.mongo is not None:
            parts[self.mongo.name] = self.mongo
        parts.update(self.services)
        return parts

    def supervisor(self, **options: Any) -> Supervisor:
        return Supervisor(self.parts, **options)

    def stop(self) -> None:
        for process in reversed(self.processes()):
            process.stop()

    def describe(self) -> str:
        p = self.ports
        rows = [
            ("gateway A (REST + WebSocket /v1/ws)", f"http://127.0.0.1:{p.gateway_a}"),
            ("gateway B (REST + WebSocket /v1/ws)", f"http://127.0.0.1:{p.gateway_b}"),
            ("auth", f"http://127.0.0.1:{p.auth}"),
            ("rooms gRPC", f"127.0.0.1:{p.rooms_grpc}"),
            ("rooms health/metrics", f"http://127.0.0.1:{p.rooms_http}"),
            ("history", f"http://127.0.0.1:{p.history}"),
            ("notifier (inbox, Web Push, webhooks)", f"http://127.0.0.1:{p.notifier}"),
            ("NATS (JetStream)", self.nats_url),
            ("MongoDB (SecantusDB)", f"mongodb://127.0.0.1:{p.mongo}"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"  {name.ljust(width)}  {where}" for name, where in rows]
        logs = [
            f"  {proc.name.ljust(width)}  pid {proc.pid}  {proc.log_path}"
            for proc in self.processes()
        ]
        return "\n".join(
            [
                "Roomcast is up and ready (every part answered /readyz):",
                *lines,
                "Logs:",
                *logs,
                "A part that dies is restarted (kill one and watch it come back).",
                "Press Ctrl-C to stop everything.",
            ]
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m roomcast.testing.stack", description=__doc__)
    parser.add_argument("--state-dir", default=os.environ.get("ROOMCAST_UP_STATE_DIR", ".roomcast"))
    args = parser.parse_args(argv)
    stack = Stack(Path(args.state_dir), StackPorts.from_env())
    stopping = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        stack.start()
    except Exception as exc:
        print(f"could not start the stack: {exc}", file=sys.stderr)
        sys.exit(1)
    print(stack.describe(), flush=True)
    # Supervised from this (the main) thread: restarted children get the death signal
    # tied to it, so even a killed launcher leaves nothing behind.
    stack.supervisor().run(stopping)
    print("stopping...", flush=True)
    stack.stop()
    print("stopped.", flush=True)


if __name__ == "__main__":
    main()
