"""Fixtures of the deployment validation tests; the helpers are in deploy_helpers.py."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import deploy_helpers


@pytest.fixture(scope="session")
def rendered() -> Callable[[str], list[dict[str, Any]]]:
    """rendered("dev") -> the overlay's resources ("base" for the base), built once."""
    cache: dict[str, list[dict[str, Any]]] = {}

    def get(overlay: str) -> list[dict[str, Any]]:
        if overlay not in cache:
            k8s = deploy_helpers.K8S
            path = k8s / "base" if overlay == "base" else k8s / "overlays" / overlay
            cache[overlay] = deploy_helpers.kustomize_build(path)
        return cache[overlay]

    return get
