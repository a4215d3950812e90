"""Fixtures of the observability tests (helpers live in the obs_*.py modules beside
this file, importable by name once this directory is on sys.path)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from obs_stack import ObservedStack, observed_stack


@pytest.fixture(scope="module")
def observed() -> Iterator[ObservedStack]:
    with observed_stack() as running:
        yield running
