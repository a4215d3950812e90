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
- readiness probes become commands (podman converts httpGet to ``curl``, absent from
  the images, and has no gRPC probe) run with ``podman exec`` until they pass; not
  podman health checks, which restart a container whose check fails, so a service
  still starting would be restarted at every poll;
- Services become fixed pod addresses on the run's own network plus ``hostAliases`` for
  the Service names; Secrets become podman secrets, named per run;
- an operator's configuration change (the notifier's service account listed in auth's
  settings) is a Deployment played again with its ConfigMap changed, at its address.

Teardown removes pods, the volumes they used, secrets and the network, also when
starting failed.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kube_rewrite import IGNORED_KINDS, PROBE_TIMEOUT_SECONDS, UNPLAYED, KubeRewrite, render
from podman_stack import COMMAND_TIMEOUT_SECONDS, POLL_SECONDS, StackError, podman

__all__ = ["IGNORED_KINDS", "UNPLAYED", "KubePlay", "render"]

# Every service's readiness on a loaded 2-core machine, images already built.
READY_DEADLINE_SECONDS = 240.0


@dataclass
class KubePlay(KubeRewrite):
    """The rewritten overlay, played; :meth:`down` removes everything it made."""

    documents: list[dict[str, Any]] = field(default_factory=list)
    created_secrets: list[str] = field(default_factory=list)
    network: str = ""
    path: Path | None = None

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

    def replay_with_settings(self, name: str, settings: dict[str, str], directory: Path) -> None:
        """Deployment ``name`` played again with ``settings`` added to the ConfigMaps it
        reads: what an operator's overlay change does in a cluster (a new ConfigMap hash
        rolls the Deployment). The pod keeps its address; wait_ready() waits for it."""
        deployment = next(
            doc
            for doc in self.documents
            if doc["kind"] == "Deployment" and doc["metadata"]["name"] == name
        )
        spec = deployment["spec"]["template"]["spec"]
        reads = {
            source["configMapRef"]["name"]
            for container in spec["containers"]
            for source in container.get("envFrom", [])
            if "configMapRef" in source
        }
        configmaps = []
        for doc in self.documents:
            if doc["kind"] == "ConfigMap":
                doc = copy.deepcopy(doc)
                if doc["metadata"]["name"] in reads:
                    doc.setdefault("data", {}).update(settings)
                configmaps.append(doc)
        podman("pod", "rm", "--force", "--time", "0", f"{name}-pod-0")
        # podman makes a volume per Secret a pod mounts; the new pod makes it again.
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                podman("volume", "rm", "--force", volume["secret"]["secretName"], check=False)
        path = directory / f"kube-play-{name}.yaml"
        path.write_text(yaml.safe_dump_all([*configmaps, deployment], sort_keys=False))
        podman(
            "kube",
            "play",
            "--network",
            self.network,
            "--ip",
            self.address(name),
            str(path),
            timeout=READY_DEADLINE_SECONDS,
        )
        self.documents = [
            *configmaps,
            *(doc for doc in self.documents if doc["kind"] != "ConfigMap"),
        ]

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

    def readiness_command(self, container: str) -> list[str] | None:
        """The readiness command of a played container (``<pod>-<name>``, a
        Deployment's ``<pod>-pod-0-<name>``), None if its manifest has no probe."""
        for (pod, name), command in self.readiness.items():
            if container in (f"{pod}-{name}", f"{pod}-pod-0-{name}"):
                return command
        return None

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
                command = self.readiness_command(container)
                if command is None:
                    # No readiness probe in the manifest: running is enough.
                    pending.discard(container)
                    continue
                try:
                    checked = subprocess.run(
                        ["podman", "exec", container, *command],
                        capture_output=True,
                        text=True,
                        check=False,
                        timeout=PROBE_TIMEOUT_SECONDS,
                    )
                except subprocess.TimeoutExpired:
                    continue
                if checked.returncode == 0:
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
