"""The JavaScript side for the Python tests: npm workspaces in clients/, installed and
built by ``make js`` (which ``make setup`` runs). A missing install fails, never skips."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = ROOT / "clients"


@dataclass(frozen=True)
class Js:
    node: str
    clients: Path
    web_dist: Path
    chromium: str


@pytest.fixture(scope="session")
def js() -> Js:
    node = shutil.which("node")
    assert node is not None, "node is required: run `make setup`"
    web_dist = CLIENTS / "web" / "dist"
    missing = [
        str(path.relative_to(ROOT))
        for path in (CLIENTS / "node_modules", web_dist / "index.html")
        if not path.exists()
    ]
    assert not missing, f"missing {', '.join(missing)}: run `make js`"
    chromium = os.environ.get("ROOMCAST_CHROMIUM", "/usr/bin/chromium")
    return Js(node=node, clients=CLIENTS, web_dist=web_dist, chromium=chromium)
