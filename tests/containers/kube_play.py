"""The dev overlay (`kubectl kustomize deploy/k8s/overlays/dev`) run with `podman kube
play`, rewritten only where kube play cannot follow a cluster (docs/deploy.md, "podman
kube play"):

- kinds kube play skips without a word (:data:`IGNORED_KINDS`) are left out; the
  offline validation (tests/deploy) keeps checking them;
- the StatefulSets become Pods named as their first member (``nats-0``, ``mongodb-0``),
  one member each, on the local stand-in images; NATS's config loses its ``cluster``
  block, the replica counts the nats-cluster component sets (3) become 1;
- the bootstrap Job becomes a Pod (kube play skips Jobs), run from our own image as in
  the cluster; the load-test Job is not run (a load test, not part of starting up);
- the gateway Deployment becomes two, ``gateway-1`` and ``gateway-2``, each publishing
  its HTTP port on its own free loopback port (podman 4.3 publishes every
  ``containerPort`` on the host's same port, so replicas would collide, and would take
  the well-known ports); no other port is published;
- readiness probes become exec probes (podman converts httpGet to ``curl``, absent from
  the images, and has no gRPC probe), polled with ``podman healthcheck run`` (podman's
  own timers need systemd);
- Services become fixed pod addresses on the run's own network plus ``hostAliases`` for
  the Service names; Secrets become podman secrets, named per run.

Teardown removes pods, the volumes they used, secrets and the network, also when
starting failed.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import random
import re
import shlex
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from podman_stack import COMMAND_TIMEOUT_SECONDS, POLL_SECONDS, StackError, podman

REPO = Path(__file__).resolve().parents[2]
OVERLAY = REPO / "deploy" / "k8s" / "overlays" / "dev"

# Kinds `podman kube play` (4.3) skips silently in a multi-document file (checked:
# every one of these next to a Pod: only the Pod is created, exit 0).
IGNORED_KINDS = frozenset(
    {
        "Namespace",
        "ServiceAccount",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Ingress",
        "NetworkPolicy",
    }
)
# Jobs that are part of starting the stack, run as Pods; other Jobs are left out.
BOOTSTRAP_JOBS = frozenset({"nats-stream-replicas"})
STANDINS = {
    "nats": "localhost/roomcast-standin-nats:dev",
    "mongo": "localhost/roomcast-standin-mongo:dev",
}
MONGO_STANDIN_COMMAND = [
    "secantusd-py",
    "--host",
    "0.0.0.0",
    "--port",
    "27017",
    "--storage-path",
    "/data/db",
    # The stand-in needs no more for a smoke test; the default takes half the RAM.
    "--cache-size",
    "256M",
]
MONGO_STANDIN_CHECK = ["python", "/opt/roomcast/mongo_bootstrap.py", "check"]
# Containers without a stand-in image (the NATS exporter): left out.
DROPPED_CONTAINERS = frozenset({"exporter"})
# Settings the cluster gives 3 (a replica per NATS node); one node here.
SINGLE_NODE = {
    "ROOMCAST_GATEWAY_STREAM_REPLICAS": "1",
    "ROOMCAST_HISTORY_STREAM_REPLICAS": "1",
    "ROOMCAST_AUTH_REVOCATIONS_REPLICAS": "1",
    "ROOMCAST_BOOTSTRAP_STREAM_REPLICAS": "1",
    "ROOMCAST_BOOTSTRAP_REVOCATIONS_REPLICAS": "1",
}
# Deployments not played, with the reason; each is a follow-up for this test.
UNPLAYED = {
    # Needs its service account in auth, a VAPID key and a MongoDB user the bootstrap
    # does not create yet; not on the chat path the smoke test covers.
    "notifier": "Deployment",
}
# Pods' addresses on the run's network: <subnet>.<FIRST_HOST + i>, in play order.
FIRST_HOST = 10
# What the smoke test needs; any other Deployment of the overlay is played as well.
REQUIRED_PODS = frozenset(
    {"nats-0", "mongodb-0", "auth", "rooms", "history", "gateway-1", "gateway-2"}
)
# One readiness command (a Python start and one local request) on a loaded machine.
PROBE_TIMEOUT_SECONDS = 15
# Every service's readiness on a loaded 2-core machine, images already built.
READY_DEADLINE_SECONDS = 240.0


def render(overlay: Path | None = None) -> list[dict[str, Any]]:
    # ROOMCAST_KUBE_OVERLAY: another rendering root (a copy of deploy/k8s at a commit).
    overlay = overlay or Path(os.environ.get("ROOMCAST_KUBE_OVERLAY", OVERLAY))
    kubectl = REPO / ".venv" / "bin" / "kubectl"
    result = subprocess.run(
        [str(kubectl), "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        check=False,
        timeout=COMMAND_TIMEOUT_SECONDS,
    )
    if result.returncode != 0:
        raise StackError(f"kubectl kustomize failed: {result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _probe_command(probe: dict[str, Any], ports: dict[str, int]) -> list[str] | None:
    """The probe as a command run in the container (the images have Python, not curl)."""
    if "httpGet" in probe:
        port = probe["httpGet"]["port"]
        port = ports.get(port, port)
        url = f"http://127.0.0.1:{port}{probe['httpGet'].get('path', '/')}"
        code = f"import urllib.request; urllib.request.urlopen({url!r}, timeout=2)"
        return ["python3", "-c", code]
    if "grpc" in probe:
        port, service = probe["grpc"]["port"], probe["grpc"].get("service", "")
        code = (
            "import grpc, sys; from grpc_health.v1 import health_pb2 as p, health_pb2_grpc as g; "
            f"c = grpc.insecure_channel('127.0.0.1:{port}'); "
            f"r = g.HealthStub(c).Check(p.HealthCheckRequest(service={service!r}), timeout=2); "
            "sys.exit(0 if r.status == p.HealthCheckResponse.SERVING else 1)"
        )
        return ["python", "-c", code]
    if "exec" in probe:
        return list(probe["exec"]["command"])
    return None


@dataclass
class KubePlay:
    """The rewritten overlay, played; use as a context manager."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    tag: str = "dev"
    subnet: str = ""
    gateway_ports: dict[str, int] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    documents: list[dict[str, Any]] = field(default_factory=list)
    dropped: dict[str, list[str]] = field(default_factory=dict)
    # Secret name -> the keys the played pods read from it.
    secret_keys: dict[str, set[str]] = field(default_factory=dict)
    # Pod name -> the Service names that reach it, in play order (= address order).
    aliases: dict[str, list[str]] = field(default_factory=dict)
    created_secrets: list[str] = field(default_factory=list)
    network: str = ""
    path: Path | None = None

    # -- rewriting -----------------------------------------------------------------

    def secret_name(self, name: str) -> str:
        return f"{name}-{self.run_id}"

    def _image(self, image: str) -> str:
        name = image.split(":", 1)[0]
        if name.startswith("roomcast/"):
            return f"localhost/{name}:{self.tag}"
        return STANDINS.get(name, image)

    def _container(self, container: dict[str, Any], pod: str) -> dict[str, Any]:
        container = copy.deepcopy(container)
        container["image"] = self._image(container["image"])
        if container["image"] == STANDINS["mongo"]:
            # SecantusDB in place of mongod: no keyfile (one member), its own health check.
            container["command"] = MONGO_STANDIN_COMMAND
            container.pop("args", None)
            container["readinessProbe"] = {"exec": {"command": MONGO_STANDIN_CHECK}}
            container["volumeMounts"] = [
                m for m in container.get("volumeMounts", []) if m["name"] != "keyfile"
            ]
        if container["image"] in STANDINS.values():
            # The stand-ins run as root, like their compose services: podman creates
            # emptyDir volumes owned by root (a cluster's fsGroup is not applied), and
            # the official images' users (999, 1000) do not exist in them.
            container.setdefault("securityContext", {}).update(
                {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False}
            )
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
        published = []
        if pod in self.gateway_ports:
            published = [
                {
                    "containerPort": ports["http"],
                    "hostPort": self.gateway_ports[pod],
                    "hostIP": "127.0.0.1",
                }
            ]
        container["ports"] = published
        readiness = container.pop("readinessProbe", None)
        container.pop("livenessProbe", None)
        container.pop("startupProbe", None)
        container.pop("lifecycle", None)
        command = _probe_command(readiness, ports) if readiness else None
        if command:
            # podman joins an exec probe's words with spaces and runs them with sh -c:
            # one shell-quoted word survives that. A Python start takes more than the
            # default 1 s timeout on a loaded machine.
            container["livenessProbe"] = {
                "exec": {"command": [shlex.join(command)]},
                "periodSeconds": 3600,
                "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
            }
        for env in container.get("env", []):
            if env["name"] in SINGLE_NODE:
                env["value"] = SINGLE_NODE[env["name"]]
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                self.secret_keys.setdefault(ref["name"], set()).add(ref["key"])
                ref["name"] = self.secret_name(ref["name"])
        return container

    def _pod_spec(self, spec: dict[str, Any], pod: str) -> dict[str, Any]:
        spec = copy.deepcopy(spec)
        spec.pop("initContainers", None)
        spec.pop("affinity", None)
        spec.pop("topologySpreadConstraints", None)
        spec["containers"] = [
            self._container(c, pod)
            for c in spec["containers"]
            if c["name"] not in DROPPED_CONTAINERS
        ]
        used = {m["name"] for c in spec["containers"] for m in c.get("volumeMounts", [])}
        volumes = [v for v in spec.get("volumes", []) if v["name"] in used]
        for volume in volumes:
            if "secret" in volume:
                keys = {item["key"] for item in volume["secret"].get("items", [])}
                self.secret_keys.setdefault(volume["secret"]["secretName"], set()).update(keys)
                volume["secret"]["secretName"] = self.secret_name(volume["secret"]["secretName"])
                # podman 4.3 dereferences `optional` unchecked (a nil pointer panic).
                volume["secret"].setdefault("optional", False)
        declared = {v["name"] for v in volumes}
        # A StatefulSet's claims: an emptyDir here, deleted with the pod.
        volumes += [{"name": name, "emptyDir": {}} for name in sorted(used - declared)]
        spec["volumes"] = volumes
        return spec

    def address(self, pod: str) -> str:
        return f"{self.subnet}.{FIRST_HOST + list(self.aliases).index(pod)}"

    def _as_pod(self, name: str, template: dict[str, Any], restart: str) -> dict[str, Any]:
        spec = self._pod_spec(template["spec"], name)
        spec["restartPolicy"] = restart
        metadata = {"name": name, "labels": template["metadata"].get("labels", {})}
        return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}

    def _as_deployment(self, name: str, deployment: dict[str, Any]) -> dict[str, Any]:
        deployment = copy.deepcopy(deployment)
        deployment["metadata"] = {"name": name, "labels": deployment["metadata"].get("labels", {})}
        deployment["spec"]["replicas"] = 1
        template = deployment["spec"]["template"]
        template["spec"] = self._pod_spec(template["spec"], name)
        return deployment

    def rewrite(self, rendered: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The documents to play: ConfigMaps, then one Pod or Deployment per pod, each
        given an address and the Service names that reach it (``hostAliases``)."""
        configmaps: list[dict[str, Any]] = []
        pods: list[dict[str, Any]] = []
        for doc in rendered:
            kind, name = doc["kind"], doc["metadata"]["name"]
            doc = copy.deepcopy(doc)
            doc["metadata"].pop("namespace", None)
            if kind in IGNORED_KINDS or UNPLAYED.get(name) == kind:
                self.dropped.setdefault(kind, []).append(name)
            elif kind == "ConfigMap":
                data = doc.get("data", {})
                data.update({k: v for k, v in SINGLE_NODE.items() if k in data})
                if "nats.conf" in data:
                    data["nats.conf"] = re.sub(
                        r"\ncluster \{.*?\n\}\n", "\n", data["nats.conf"], flags=re.S
                    )
                configmaps.append(doc)
            elif kind == "StatefulSet":
                member = f"{name}-0"
                self.aliases[member] = [name, f"{member}.{doc['spec']['serviceName']}"]
                pods.append(self._as_pod(member, doc["spec"]["template"], "Always"))
            elif kind == "Job" and name in BOOTSTRAP_JOBS:
                self.aliases[name] = []
                pods.append(self._as_pod(name, doc["spec"]["template"], "OnFailure"))
            elif kind == "Job":
                self.dropped.setdefault(kind, []).append(name)
            elif kind == "Deployment" and name == "gateway":
                for replica, aliases in (("gateway-1", ["gateway"]), ("gateway-2", [])):
                    self.aliases[replica] = aliases
                    pods.append(self._as_deployment(replica, doc))
            elif kind == "Deployment":
                self.aliases[name] = [name]
                pods.append(self._as_deployment(name, doc))
            else:
                raise StackError(f"no rule for {kind} {name}: decide how kube play runs it")
        missing = REQUIRED_PODS - set(self.aliases)
        if missing:
            raise StackError(f"the overlay no longer has {sorted(missing)}")
        host_aliases = [
            {"ip": self.address(pod), "hostnames": names}
            for pod, names in self.aliases.items()
            if names
        ]
        for doc in pods:
            spec = doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc["spec"]
            spec["hostAliases"] = host_aliases
        return configmaps + pods

    # -- secrets -------------------------------------------------------------------

    def create_secrets(self, values: dict[str, dict[str, str]], volume_secrets: set[str]) -> None:
        """secretKeyRef reads a podman secret holding JSON with base64 values; a Secret
        volume reads one holding a Kubernetes Secret document (podman 4.3)."""
        missing = {
            name: sorted(keys - set(values.get(name, {})))
            for name, keys in self.secret_keys.items()
            if keys - set(values.get(name, {}))
        }
        if missing:
            raise StackError(f"the overlay reads Secrets the test does not make: {missing}")
        for name, data in values.items():
            encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
            if name in volume_secrets:
                # podman 4.3 writes a Secret volume's `data` values as they are (not
                # base64-decoded) and ignores `stringData`: the plain values go in `data`.
                body = yaml.safe_dump(
                    {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "metadata": {"name": self.secret_name(name)},
                        "data": data,
                    }
                )
            else:
                body = json.dumps(encoded)
            subprocess.run(
                ["podman", "secret", "create", self.secret_name(name), "-"],
                input=body,
                text=True,
                capture_output=True,
                check=True,
                timeout=COMMAND_TIMEOUT_SECONDS,
            )
            self.created_secrets.append(self.secret_name(name))

    # -- lifecycle -----------------------------------------------------------------

    def create_network(self) -> None:
        # The dev overlay trusts the pod CIDR 10.244.0.0/16 (kubeadm/kind): a /24 in it
        # keeps the manifests' trust chain meaning what it means in a cluster.
        for _ in range(10):
            subnet = f"10.244.{random.randint(100, 250)}"
            network = f"roomcast-kube-{self.run_id}"
            created = subprocess.run(
                ["podman", "network", "create", "--subnet", f"{subnet}.0/24", network],
                capture_output=True,
                text=True,
                check=False,
                timeout=COMMAND_TIMEOUT_SECONDS,
            )
            if created.returncode == 0:
                self.subnet, self.network = subnet, network
                return
        raise StackError(f"no free subnet for the kube play network: {created.stderr}")

    def play(self, documents: list[dict[str, Any]], directory: Path) -> None:
        self.documents = documents
        self.path = directory / "kube-play.yaml"
        self.path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
        args = ["kube", "play", "--network", self.network]
        for doc in documents:
            if doc["kind"] in ("Pod", "Deployment"):
                args += ["--ip", self.address(doc["metadata"]["name"])]
        podman(*args, str(self.path), timeout=READY_DEADLINE_SECONDS)

    def pod_names(self) -> list[str]:
        """kube play names a Pod as it is, a Deployment's pods ``<name>-pod-<i>``."""
        return [
            doc["metadata"]["name"] + ("-pod-0" if doc["kind"] == "Deployment" else "")
            for doc in self.documents
            if doc["kind"] in ("Pod", "Deployment")
        ]

    def containers(self) -> list[str]:
        """Every container of the played pods, infra containers aside."""
        names: list[str] = []
        for pod in self.pod_names():
            out = podman(
                "ps", "--all", "--filter", f"pod={pod}", "--format", "{{.Names}}", check=False
            )
            names += [name for name in out.split() if not name.endswith("-infra")]
        return names

    def state(self, container: str) -> dict[str, Any]:
        return json.loads(podman("inspect", "--format", "{{json .State}}", container))  # type: ignore[no-any-return]

    def logs(self, container: str, tail: int = 60) -> str:
        result = subprocess.run(
            ["podman", "logs", "--tail", str(tail), container],
            capture_output=True,
            text=True,
            check=False,
            timeout=COMMAND_TIMEOUT_SECONDS,
        )
        return result.stdout + result.stderr

    def wait_ready(self) -> None:
        """Until the bootstrap Pod has succeeded and every container's readiness
        command passes; a container that stops is a failure with its logs."""
        deadline = time.monotonic() + READY_DEADLINE_SECONDS
        pending = set(self.containers())
        if len(pending) < len(self.pod_names()):
            raise StackError(f"kube play started only {sorted(pending)}")
        while pending and time.monotonic() < deadline:
            for container in sorted(pending):
                state = self.state(container)
                if container.startswith("nats-stream-replicas"):
                    if state["Status"] == "exited" and state["ExitCode"] == 0:
                        pending.discard(container)
                    continue
                if state["Status"] != "running":
                    # Restarted by its pod's restartPolicy, as a kubelet would (a service
                    # that started before the bootstrap finished): judged at the deadline.
                    continue
                checked = subprocess.run(
                    ["podman", "healthcheck", "run", container],
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=COMMAND_TIMEOUT_SECONDS,
                )
                # No probe in the manifest ("no healthcheck defined"): running is enough.
                if checked.returncode == 0 or "has no defined healthcheck" in checked.stderr:
                    pending.discard(container)
            if pending:
                time.sleep(POLL_SECONDS)
        if pending:
            # The dev overlay logs at DEBUG: keep the lines that say what went wrong.
            logs = "\n".join(
                f"--- {c} {self.state(c)['Status']}\n"
                + "\n".join(
                    line for line in self.logs(c, 400).splitlines() if '"debug"' not in line
                )[-3000:]
                for c in sorted(pending)
            )
            raise StackError(
                f"not ready in {READY_DEADLINE_SECONDS:.0f} s: {sorted(pending)}\n{logs}"
            )

    def down(self) -> None:
        volumes: set[str] = set()
        if self.network:
            for container in self.containers():
                out = podman("inspect", "--format", "{{json .Mounts}}", container, check=False)
                for mount in json.loads(out or "[]") or []:
                    if mount.get("Type") == "volume" and mount.get("Name"):
                        volumes.add(mount["Name"])
        if self.path is not None:
            podman("kube", "down", str(self.path), check=False)
        for pod in self.pod_names():
            podman("pod", "rm", "--force", "--time", "0", pod, check=False)
        # podman makes a volume per ConfigMap and Secret a pod mounts, named after it.
        for doc in self.documents:
            if doc["kind"] not in ("Pod", "Deployment"):
                continue
            spec = doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc["spec"]
            for volume in spec.get("volumes", []):
                source = volume.get("configMap") or {}
                if source.get("name"):
                    volumes.add(source["name"])
        for volume in sorted(volumes | set(self.created_secrets)):
            podman("volume", "rm", "--force", volume, check=False)
        for secret in self.created_secrets:
            podman("secret", "rm", secret, check=False)
        self.created_secrets.clear()
        if self.network:
            podman("network", "rm", "--force", self.network, check=False)
            self.network = ""
