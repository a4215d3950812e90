"""deploy/k8s: every overlay renders with kustomize, validates against the Kubernetes
schemas (kubernetes-validate, bundled, strict), and meets Roomcast's rules: probes,
resources, hardened security contexts, drain timing, consistent selectors and ports,
settings that the services actually read, and Secrets referenced but never committed."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
from collections.abc import Callable
from typing import Any

import pytest
from deploy_helpers import (
    K8S,
    OVERLAYS,
    REPO,
    SERVICES,
    configmap_data,
    find,
    pod_labels,
    pod_spec,
    require_python_module,
    run,
    selector_matches,
    service_selects,
    tool,
    workloads,
)

Render = Callable[[str], list[dict[str, Any]]]
# The oldest Kubernetes the manifests support (gRPC probes, autoscaling/v2 and
# policy/v1 are GA there) and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
# Prometheus Operator kinds: no schema ships with kubernetes-validate; checked below.
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def _kubernetes_validate() -> Any:
    return require_python_module("kubernetes_validate.utils", "kubernetes-validate==1.37.0")


def _validate(resource: dict[str, Any], version: str) -> None:
    utils = _kubernetes_validate()
    utils.validate(resource, version, strict=True)


@pytest.mark.parametrize("overlay", [*OVERLAYS, "base"])
def test_overlay_validates_against_kubernetes_schemas(overlay: str, rendered: Render) -> None:
    utils = _kubernetes_validate()
    resources = rendered(overlay)
    assert resources, f"{overlay} rendered nothing"
    errors = []
    for resource in resources:
        if resource["kind"] in CRD_KINDS:
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                _validate(resource, version)
            except utils.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                name = f"{resource['kind']}/{resource['metadata']['name']}"
                errors.append(f"{name} (k8s {version}): {path}: {exc.message}")
            except utils.SchemaNotFoundError as exc:
                errors.append(exc.message)
    assert not errors, "\n".join(errors)


def test_schema_validation_is_not_vacuous(rendered: Render) -> None:
    utils = _kubernetes_validate()
    deployment = find(rendered("base"), "Deployment", "gateway")
    broken = {**deployment, "spec": {**deployment["spec"], "replicaz": 3}}
    with pytest.raises(utils.ValidationError):
        _validate(broken, KUBERNETES_VERSIONS[-1])


def test_custom_resources_are_well_formed(rendered: Render) -> None:
    resources = rendered("prod")
    services = [r for r in resources if r["kind"] == "Service"]
    monitors = [r for r in resources if r["kind"] == "ServiceMonitor"]
    assert {m["metadata"]["name"] for m in monitors} == {
        "gateway",
        "auth",
        "rooms",
        "history",
        "notifier",
        "nats",
    }
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        selected = [
            s
            for s in services
            if selector_matches(monitor["spec"]["selector"], s["metadata"]["labels"])
        ]
        assert selected, f"ServiceMonitor/{monitor['metadata']['name']} selects no Service"
        for endpoint in monitor["spec"]["endpoints"]:
            ports = {p.get("name") for s in selected for p in s["spec"]["ports"]}
            assert endpoint["port"] in ports, (
                f"{monitor['metadata']['name']}: no port {endpoint['port']}"
            )
            assert endpoint["path"] == "/metrics"
    (rule,) = [r for r in resources if r["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert all(g["rules"] for g in rule["spec"]["groups"])
    dashboards = [
        r
        for r in resources
        if r["kind"] == "ConfigMap" and "grafana_dashboard" in r["metadata"].get("labels", {})
    ]
    assert len(dashboards) == 1
    assert "roomcast-dashboard.json" in dashboards[0]["data"]


def test_monitoring_copies_are_in_sync() -> None:
    result = run([tool("python"), str(K8S / "sync_observability.py"), "--check"])
    assert result.returncode == 0, result.stderr


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_and_limits(overlay: str, rendered: Render) -> None:
    for workload in workloads(rendered(overlay)):
        for container in _containers(pod_spec(workload) or {}):
            resources = container.get("resources", {})
            where = f"{workload['kind']}/{workload['metadata']['name']}/{container['name']}"
            for section in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    assert resource in resources.get(section, {}), (
                        f"{where}: no {section}.{resource}"
                    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_hardened(overlay: str, rendered: Render) -> None:
    """The "restricted" Pod Security Standard and a read-only root filesystem with a
    writable /tmp, for every workload (services, NATS, MongoDB, the load test)."""
    for workload in workloads(rendered(overlay)):
        spec = pod_spec(workload) or {}
        pod = spec.get("securityContext", {})
        name = f"{workload['kind']}/{workload['metadata']['name']}"
        assert spec.get("automountServiceAccountToken") is False, f"{name}: automounted token"
        assert not spec.get("hostNetwork"), name
        assert not spec.get("hostPID"), name
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        assert all("hostPath" not in v for v in volumes.values()), name
        for container in _containers(spec):
            ctx = container.get("securityContext", {})
            where = f"{name}/{container['name']}"
            assert ctx.get("allowPrivilegeEscalation") is False, where
            assert ctx.get("readOnlyRootFilesystem") is True, where
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not ctx.get("capabilities", {}).get("add"), where
            assert not ctx.get("privileged"), where
            assert (ctx.get("runAsNonRoot") or pod.get("runAsNonRoot")) is True, where
            assert ctx.get("runAsUser", pod.get("runAsUser", 1)) != 0, where
            seccomp = ctx.get("seccompProfile") or pod.get("seccompProfile") or {}
            assert seccomp.get("type") == "RuntimeDefault", where
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            if container in spec["containers"]:
                assert "/tmp" in mounts, f"{where}: read-only root needs an emptyDir on /tmp"
                assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: /tmp must be an emptyDir"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployments_have_probes(overlay: str, rendered: Render) -> None:
    deployments = [r for r in rendered(overlay) if r["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == set(SERVICES)
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            assert probe in container, f"{name}: no {probe}"
        if name == "rooms":
            assert container["livenessProbe"]["grpc"]["port"] == 50051
            assert container["readinessProbe"]["grpc"] == {
                "port": 50051,
                "service": "roomcast.rooms.v1.Rooms",
            }
        else:
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            port = container["readinessProbe"]["httpGet"]["port"]
            assert port in {p["name"] for p in container["ports"]}, f"{name}: probe port {port}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_drain_fits_termination_grace(overlay: str, rendered: Render) -> None:
    resources = rendered(overlay)
    gateway = find(resources, "Deployment", "gateway")
    spec = gateway["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep", "preStop sleeps so endpoints update before the drain"
    sleep = float(pre_stop[1])
    assert 2 <= sleep <= 15
    drain = float(
        configmap_data(resources, "roomcast-gateway-config")[
            "ROOMCAST_GATEWAY_SHUTDOWN_GRACE_SECONDS"
        ]
    )
    grace = spec["terminationGracePeriodSeconds"]
    assert grace >= sleep + drain + 2, (
        f"grace {grace}s < preStop {sleep}s + drain {drain}s + margin"
    )
    assert "replicas" not in gateway["spec"], "the HPA owns the gateway's replica count"
    hpa = find(resources, "HorizontalPodAutoscaler", "gateway")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_and_ports_line_up(overlay: str, rendered: Render) -> None:
    resources = rendered(overlay)
    pods = {
        f"{w['kind']}/{w['metadata']['name']}": (w, pod_labels(w)) for w in workloads(resources)
    }
    for workload, labels in pods.values():
        assert (
            selector_matches(workload["spec"].get("selector", {}), labels)
            or workload["kind"] == "Job"
        )
    for service in (r for r in resources if r["kind"] == "Service"):
        backends = [
            w for w, labels in pods.values() if service_selects(service["spec"]["selector"], labels)
        ]
        assert backends, f"Service/{service['metadata']['name']} selects no pod"
        names = {
            p.get("name")
            for w in backends
            for c in pod_spec(w)["containers"]
            for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert isinstance(target, int) or target in names, (
                f"{service['metadata']['name']}: {target}"
            )
    for pdb in (r for r in resources if r["kind"] == "PodDisruptionBudget"):
        assert any(selector_matches(pdb["spec"]["selector"], labels) for _, labels in pods.values())
    for kind in ("Deployment", "StatefulSet"):
        for workload in (r for r in resources if r["kind"] == kind):
            covered = any(
                selector_matches(p["spec"]["selector"], pod_labels(workload))
                for p in resources
                if p["kind"] == "PodDisruptionBudget"
            )
            assert covered, f"{kind}/{workload['metadata']['name']} has no PodDisruptionBudget"
    accounts = {r["metadata"]["name"]: r for r in resources if r["kind"] == "ServiceAccount"}
    for workload, _ in pods.values():
        account = pod_spec(workload).get("serviceAccountName")
        if account:
            assert account in accounts
            assert accounts[account]["automountServiceAccountToken"] is False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_exposes_only_the_gateway_api(overlay: str, rendered: Render) -> None:
    resources = rendered(overlay)
    (ingress,) = [r for r in resources if r["kind"] == "Ingress"]
    annotations = ingress["metadata"]["annotations"]
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{timeout}"]) >= 3600
    gateway = find(resources, "Service", "gateway")
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["path"] in ("/v1", "/.well-known"), f"unexpected public path {path['path']}"
            backend = path["backend"]["service"]
            assert backend["name"] == "gateway"
            assert backend["port"]["name"] in {p["name"] for p in gateway["spec"]["ports"]}


def test_prod_network_policies(rendered: Render) -> None:
    resources = rendered("prod")
    policies = {r["metadata"]["name"]: r for r in resources if r["kind"] == "NetworkPolicy"}
    deny = policies["default-deny-ingress"]["spec"]
    assert deny["podSelector"] == {}
    assert deny["policyTypes"] == ["Ingress"]
    assert "ingress" not in deny
    pods = [pod_labels(w) for w in workloads(resources)]
    for name, policy in policies.items():
        if name != "default-deny-ingress":
            assert any(
                selector_matches(policy["spec"]["podSelector"], labels) for labels in pods
            ), name

    def sources(name: str) -> set[str]:
        found = set()
        for rule in policies[name]["spec"]["ingress"]:
            for peer in rule["from"]:
                if "namespaceSelector" in peer:
                    found.add(
                        "ns:"
                        + peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                    )
                else:
                    found.add(peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"])
        return found

    # Clients (the ingress controller's namespace) reach only the gateway.
    for name in policies:
        if name not in ("default-deny-ingress", "gateway"):
            assert "ns:ingress-nginx" not in sources(name), name
    assert "ns:ingress-nginx" in sources("gateway")
    assert sources("mongodb") == {
        "auth",
        "rooms",
        "history",
        "notifier",
        "mongodb",
        "mongodb-backup",
    }
    nats_clients = {"gateway", "history", "notifier", "rooms", "auth", "nats-stream-setup"}
    assert sources("nats") == nats_clients | {"nats", "ns:monitoring"}
    for name in ("gateway", "auth", "rooms", "history", "notifier"):
        assert "ns:monitoring" in sources(name), f"Prometheus cannot scrape {name}"
    assert sources("notifier") == {"gateway", "ns:monitoring"}
    assert "notifier" in sources("rooms")
    assert "notifier" in sources("auth")


def test_images(rendered: Render) -> None:
    for overlay in OVERLAYS:
        for workload in workloads(rendered(overlay)):
            for container in _containers(pod_spec(workload) or {}):
                image = container["image"]
                name, _, tag = image.rpartition(":")
                assert name, f"{overlay}: untagged image {image}"
                assert tag not in ("", "latest"), f"{overlay}: unpinned image {image}"
    for workload in workloads(rendered("prod")):
        for container in pod_spec(workload)["containers"]:
            if "roomcast" in container["image"]:
                assert re.fullmatch(r"[\w.-]+/roomcast/[a-z]+:\d+\.\d+\.\d+", container["image"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_values_are_committed(overlay: str, rendered: Render) -> None:
    resources = rendered(overlay)
    assert not [r for r in resources if r["kind"] == "Secret"], "Secrets are created out of band"
    referenced = _secret_names(resources)
    docs = (REPO / "docs" / "deploy.md").read_text()
    undocumented = sorted(name for name in referenced if f"`{name}`" not in docs)
    assert not undocumented, f"document these Secrets in docs/deploy.md: {undocumented}"


def _secret_names(node: Any) -> set[str]:
    names: set[str] = set()
    if isinstance(node, dict):
        if "secretKeyRef" in node:
            names.add(node["secretKeyRef"]["name"])
        if "secret" in node and isinstance(node["secret"], dict) and "secretName" in node["secret"]:
            names.add(node["secret"]["secretName"])
        if "secretName" in node and "hosts" in node:  # Ingress TLS
            names.add(node["secretName"])
        for value in node.values():
            names |= _secret_names(value)
    elif isinstance(node, list):
        for item in node:
            names |= _secret_names(item)
    return names


def test_key_rotation_component_mounts_previous_keys(tmp_path: Any) -> None:
    """An overlay that adds the key-rotation component publishes the previous keys."""
    from deploy_helpers import kustomize_build

    overlay = tmp_path / "rotation"
    overlay.mkdir()
    relative = os.path.relpath(K8S, overlay)
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {relative}/base\ncomponents:\n  - {relative}/components/key-rotation\n"
    )
    auth = find(kustomize_build(overlay), "Deployment", "auth")
    (container,) = auth["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    path = env["ROOMCAST_AUTH_PREVIOUS_PUBLIC_KEYS_FILE"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert os.path.dirname(path) in mounts
    assert "/var/run/secrets/roomcast/signing-key" in mounts, "the patch must keep the signing key"


def _env_names(resources: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Every ROOMCAST_* variable a service's containers get, by service prefix."""
    by_service: dict[str, set[str]] = {s: set() for s in SERVICES}
    for resource in resources:
        values: list[str] = []
        if resource["kind"] == "ConfigMap":
            values = list(resource.get("data", {}))
        elif resource["kind"] == "Deployment":
            for container in resource["spec"]["template"]["spec"]["containers"]:
                values += [e["name"] for e in container.get("env", [])]
        for name in values:
            match = re.match(r"ROOMCAST_(AUTH|ROOMS|GATEWAY|HISTORY)_", name)
            if match:
                by_service[match.group(1).lower()].add(name)
    return by_service


def _settings_fields(service: str) -> set[str] | None:
    module = f"roomcast.{service}.settings"
    if importlib.util.find_spec(module) is None:
        return None
    settings = importlib.import_module(module).Settings
    return {f"ROOMCAST_{service.upper()}_{field.upper()}" for field in settings.model_fields}


def test_every_variable_is_a_real_setting(rendered: Render) -> None:
    """pydantic-settings ignores unknown variables (extra="ignore"), so a misspelt one
    would silently keep the default: check every variable the manifests, the compose
    file and the images set against the service's Settings class. Services whose
    settings module does not exist yet are checked as soon as it does."""
    names = _env_names(rendered("prod"))
    for overlay in ("dev",):
        for service, extra in _env_names(rendered(overlay)).items():
            names[service] |= extra
    names["auth"].add("ROOMCAST_AUTH_PREVIOUS_PUBLIC_KEYS_FILE")  # key-rotation component
    compose = (REPO / "docker-compose.yml").read_text()
    images = "".join((REPO / p).read_text() for p in ("Dockerfile", "deploy/image/healthcheck.py"))
    for text in (compose, images):
        for match in re.finditer(r"\b(ROOMCAST_(AUTH|ROOMS|GATEWAY|HISTORY)_[A-Z_]+)\b", text):
            names[match.group(2).lower()].add(match.group(1))
    checked = []
    for service, variables in names.items():
        fields = _settings_fields(service)
        if fields is None:
            continue
        checked.append(service)
        unknown = sorted(variables - fields)
        assert not unknown, f"{service} has no setting for {unknown}"
    assert {"auth", "rooms", "gateway"} <= set(checked)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_urls_and_ports_agree(overlay: str, rendered: Render) -> None:
    resources = rendered(overlay)
    ports = {
        r["metadata"]["name"]: {p["port"] for p in r["spec"]["ports"]}
        for r in resources
        if r["kind"] == "Service"
    }
    for prefix in ("auth", "rooms", "history", "gateway"):
        for key, value in configmap_data(resources, f"roomcast-{prefix}-config").items():
            for host, port in re.findall(r"(?:https?://|nats://|^)([a-z-]+):(\d+)", value):
                assert host in ports, f"{key}={value}: no Service {host}"
                assert int(port) in ports[host], f"{key}={value}: Service {host} has no port {port}"
    gateway = configmap_data(resources, "roomcast-gateway-config")
    assert gateway["ROOMCAST_GATEWAY_JWKS_URL"] == "http://auth:8081/.well-known/jwks.json"
    assert gateway["ROOMCAST_GATEWAY_ROOMS_TARGET"] == "rooms:50051"


def test_nats_cluster_component(rendered: Render) -> None:
    resources = rendered("prod")
    nats = find(resources, "StatefulSet", "nats")
    replicas = nats["spec"]["replicas"]
    assert replicas == 3
    stream_replicas = configmap_data(resources, "roomcast-gateway-config")[
        "ROOMCAST_GATEWAY_STREAM_REPLICAS"
    ]
    assert int(stream_replicas) == replicas, "the CHAT stream is replicated on every node"
    config = configmap_data(resources, "nats-config")["nats.conf"]
    routes = re.findall(r"nats://(nats-\d)\.nats-headless:6222", config)
    assert routes == [f"nats-{i}" for i in range(replicas)]
    assert find(resources, "Service", "nats-headless")["spec"]["publishNotReadyAddresses"] is True
    conf = K8S / "components" / "nats-cluster" / "nats.conf"
    env = {**os.environ, "POD_NAME": "nats-0"}
    result = run([tool("nats-server"), "-t", "-c", str(conf)], env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mongodb_component(rendered: Render) -> None:
    resources = rendered("prod")
    mongodb = find(resources, "StatefulSet", "mongodb")
    assert mongodb["spec"]["replicas"] == 3
    assert find(resources, "Service", "mongodb")["spec"]["clusterIP"] == "None"
    args = mongodb["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--replSet=rs0" in args
    assert any(a.startswith("--keyFile=") for a in args)
    # The bootstrap sidecar (roomcast.common.bootstrap) gets every setting it reads, and
    # its service users are on the databases the services use.
    from roomcast.common.bootstrap_settings import BootstrapSettings

    init = next(
        c for c in mongodb["spec"]["template"]["spec"]["containers"] if c["name"] == "rs-init"
    )
    assert init["command"][:4] == ["python", "-m", "roomcast.common.bootstrap", "mongo"]
    env = {e["name"] for e in init["env"]}
    assert {f"ROOMCAST_BOOTSTRAP_{f.upper()}" for f in BootstrapSettings.model_fields} >= env
    databases = {
        db
        for _, _, db in BootstrapSettings(
            mongo_auth_password="x",
            mongo_rooms_password="x",
            mongo_history_password="x",
            mongo_notifier_password="x",
        ).service_users()
    }
    for prefix in ("auth", "rooms", "history", "notifier"):
        assert f"ROOMCAST_BOOTSTRAP_MONGO_{prefix.upper()}_PASSWORD" in env
        db = configmap_data(resources, f"roomcast-{prefix}-config")[
            f"ROOMCAST_{prefix.upper()}_MONGO_DB"
        ]
        assert db in databases, f"no MongoDB user for {prefix}'s database {db}"
        # The service reads its URL (with that user's credentials) under its own prefix.
        (service,) = find(resources, "Deployment", prefix)["spec"]["template"]["spec"]["containers"]
        url = {e["name"]: e.get("valueFrom", {}) for e in service["env"]}
        assert url.get(f"ROOMCAST_{prefix.upper()}_MONGO_URL") == {
            "secretKeyRef": {"name": "roomcast-mongodb-urls", "key": prefix}
        }, f"{prefix} does not read its MongoDB URL from roomcast-mongodb-urls"


def test_loadtest_job(rendered: Render) -> None:
    job = find(rendered("dev"), "Job", "roomcast-load")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    argv = container["command"] + container["args"]
    assert argv == [
        "roomcast-load",
        "--scenario",
        "fanout-1000",
        "--gateway",
        "http://gateway:8080",
    ]
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] > 0
