"""The JSON Schemas the TypeScript SDK's types are checked against are the server's own:
re-exported from the pydantic models, they must equal the committed files."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_exporter() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "export_schemas", ROOT / "tools/export_schemas.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_schemas_match_the_models() -> None:
    exporter = load_exporter()
    stale = [
        name
        for name, model in exporter.MODELS.items()
        if (exporter.SCHEMA_DIR / f"{name}.json").read_text() != exporter.render(model)
    ]
    assert stale == [], "run tools/export_schemas.py and commit clients/typescript/schema/"


def test_every_schema_file_has_a_model() -> None:
    exporter = load_exporter()
    files = {path.stem for path in exporter.SCHEMA_DIR.glob("*.json")}
    assert files == set(exporter.MODELS)


def test_check_mode_reports_a_stale_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = load_exporter()
    monkeypatch.setattr(exporter, "SCHEMA_DIR", tmp_path)
    assert exporter.main([]) == 0  # writes every file
    (tmp_path / "Room.json").write_text("{}\n")
    assert exporter.main(["--check"]) == 1
    assert (tmp_path / "Room.json").read_text() == "{}\n"  # --check writes nothing
