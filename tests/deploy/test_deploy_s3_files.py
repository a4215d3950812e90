"""deploy/k8s/components/s3-files: an overlay that adds it (and names its bucket and
region, as docs/deploy.md says) renders with kustomize, validates against the Kubernetes
schemas, gives history's container its S3 keys from the Secret (never a value), keeps
the MongoDB URL, and yields settings history accepts with the S3 backend; without the
bucket, history refuses to start instead of falling back to a default."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from deploy_helpers import (
    K8S,
    REPO,
    configmap_data,
    find,
    kustomize_build,
    require_python_module,
)

COMPONENT = K8S / "components" / "s3-files"
SECRET = "roomcast-history-s3"
# The oldest and newest Kubernetes the manifests support (as in test_deploy_k8s.py).
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
# Stand-ins for what Secrets hold (the rendered manifests only reference them).
SECRET_VALUES = {
    "ROOMCAST_HISTORY_MONGO_URL": "mongodb://history:placeholder@mongodb-0.mongodb:27017",
    "ROOMCAST_HISTORY_FILES_S3_ACCESS_KEY_ID": "placeholder-key-id",
    "ROOMCAST_HISTORY_FILES_S3_SECRET_ACCESS_KEY": "placeholder-secret",
}


def render(tmp_path: Path, literals: list[str]) -> list[dict[str, Any]]:
    """An overlay of the base with the component and ``literals`` merged into
    roomcast-history-config, as docs/deploy.md shows."""
    overlay = tmp_path / "s3-overlay"
    overlay.mkdir()
    relative = os.path.relpath(K8S, overlay)
    merged = "".join(f"      - {literal}\n" for literal in literals)
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {relative}/base\n"
        f"components:\n  - {relative}/components/s3-files\n"
        "configMapGenerator:\n  - name: roomcast-history-config\n    behavior: merge\n"
        f"    literals:\n{merged}"
    )
    return kustomize_build(overlay)


def history_env(resources: list[dict[str, Any]]) -> dict[str, str]:
    """history's environment as the kubelet builds it, Secret values stood in for."""
    deployment = find(resources, "Deployment", "history")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = configmap_data(resources, "roomcast-history-config")
    for entry in container["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            env[entry["name"]] = SECRET_VALUES[entry["name"]]
    return env


def history_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in [n for n in os.environ if n.startswith("ROOMCAST_HISTORY_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = require_python_module("roomcast.history.settings", "-e services/history")
    return settings.Settings()


def test_component_switches_history_to_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    resources = render(
        tmp_path,
        [
            "ROOMCAST_HISTORY_FILES_S3_BUCKET=roomcast-files",
            "ROOMCAST_HISTORY_FILES_S3_REGION=us-east-1",
            "ROOMCAST_HISTORY_FILES_S3_ENDPOINT_URL=https://minio.storage.svc:9000",
            "ROOMCAST_HISTORY_FILES_S3_ADDRESSING_STYLE=path",
        ],
    )
    assert not [r for r in resources if r["kind"] == "Secret"], "Secrets are created out of band"
    deployment = find(resources, "Deployment", "history")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs["ROOMCAST_HISTORY_FILES_S3_ACCESS_KEY_ID"] == {
        "name": SECRET,
        "key": "access-key-id",
    }
    assert refs["ROOMCAST_HISTORY_FILES_S3_SECRET_ACCESS_KEY"] == {
        "name": SECRET,
        "key": "secret-access-key",
    }
    assert refs["ROOMCAST_HISTORY_MONGO_URL"]["name"] == "roomcast-mongodb-urls", "kept"
    assert all("value" not in e for e in container["env"]), "keys come from the Secret only"

    settings = history_settings(history_env(resources), monkeypatch)
    assert settings.files_backend == "s3"
    assert settings.files_s3_bucket == "roomcast-files"
    assert settings.files_s3_endpoint_url == "https://minio.storage.svc:9000"
    assert settings.files_s3_addressing_style == "path"
    assert settings.files_s3_secret_access_key.get_secret_value() == "placeholder-secret"
    # Every variable the rendered manifests set is one history reads (a misspelt one
    # would be ignored and keep the default).
    fields = {f"ROOMCAST_HISTORY_{name.upper()}" for name in type(settings).model_fields}
    assert not sorted(set(history_env(resources)) - fields)


def test_rendered_component_validates_against_kubernetes_schemas(tmp_path: Path) -> None:
    resources = render(
        tmp_path,
        ["ROOMCAST_HISTORY_FILES_S3_BUCKET=roomcast-files", "ROOMCAST_HISTORY_FILES_S3_REGION=x"],
    )
    utils = require_python_module("kubernetes_validate.utils", "kubernetes-validate==1.37.0")
    for resource in resources:
        for version in KUBERNETES_VERSIONS:
            utils.validate(resource, version, strict=True)


def test_without_a_bucket_history_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The component sets no bucket or region: an overlay that forgets them gets a
    history that stops at start-up naming them, never one with a guessed bucket."""
    resources = render(tmp_path, ["ROOMCAST_HISTORY_LOG_LEVEL=INFO"])
    with pytest.raises(
        ValueError, match="needs ROOMCAST_HISTORY_FILES_S3_BUCKET, ROOMCAST_HISTORY_FILES_S3_REGION"
    ):
        history_settings(history_env(resources), monkeypatch)


def test_component_and_its_secret_are_documented() -> None:
    deploy = (REPO / "docs" / "deploy.md").read_text()
    assert "components/s3-files" in deploy
    assert f"`{SECRET}`" in deploy
    for key in ("access-key-id", "secret-access-key"):
        assert key in deploy
    component = (COMPONENT / "kustomization.yaml").read_text()
    assert not re.search(r"SECRET_ACCESS_KEY=|ACCESS_KEY_ID=", component), "no keys committed"
