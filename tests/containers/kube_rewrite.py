"""The dev overlay rewritten for `podman kube play` (4.3): what kube play cannot follow
in a cluster is replaced, everything else is played as rendered. kube_play.py plays
the result; docs/deploy.md ("podman kube play") lists every rewrite and its reason."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from podman_stack import COMMAND_TIMEOUT_SECONDS, StackError

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
    "ROOMCAST_NOTIFIER_STREAM_REPLICAS": "1",
    "ROOMCAST_AUTH_REVOCATIONS_REPLICAS": "1",
    "ROOMCAST_ROOMS_RETENTION_BUCKET_REPLICAS": "1",
    "ROOMCAST_BOOTSTRAP_STREAM_REPLICAS": "1",
    "ROOMCAST_BOOTSTRAP_REVOCATIONS_REPLICAS": "1",
    "ROOMCAST_BOOTSTRAP_RETENTION_REPLICAS": "1",
}
# Deployments not played, with the reason; each is a follow-up for this test. None:
# the notifier plays with the Secrets and the service account an operator provides.
UNPLAYED: dict[str, str] = {}
# Pods' addresses on the run's network: <subnet>.<FIRST_HOST + i>, in play order.
FIRST_HOST = 10
# What the smoke test needs; any other Deployment of the overlay is played as well.
REQUIRED_PODS = frozenset(
    {"nats-0", "mongodb-0", "auth", "rooms", "history", "notifier", "gateway-1", "gateway-2"}
)
# One readiness command (a Python start and one local request) on a loaded machine.
PROBE_TIMEOUT_SECONDS = 15


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
class KubeRewrite:
    """The rendered overlay made playable; what was left out, and what it reads."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    tag: str = "dev"
    subnet: str = ""
    gateway_ports: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, list[str]] = field(default_factory=dict)
    # Secret name -> the keys the played pods read from it.
    secret_keys: dict[str, set[str]] = field(default_factory=dict)
    # Pod name -> the Service names that reach it, in play order (= address order).
    aliases: dict[str, list[str]] = field(default_factory=dict)
    # (pod, container) -> its readiness probe as a command run in the container.
    readiness: dict[tuple[str, str], list[str]] = field(default_factory=dict)

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
            # Run by the harness with `podman exec`, never as a podman health check: a
            # failing kube-play health check restarts its container, so a service still
            # starting (a gateway waiting for auth's keys) was restarted at every poll.
            self.readiness[(pod, container["name"])] = command
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
