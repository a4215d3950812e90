"""docs/architecture.md stays true: every module it names still exists.

The whiteboard (and the prose around it) names code by dotted path: a module
(``roomcast.gateway.realtime.fanout``) or something in one
(``roomcast.gateway.realtime.fanout.Fanout``). Every name must import, with any
trailing attributes present, so a rename or a move that forgets the page fails here.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "architecture.md"
DOTTED = re.compile(r"\broomcast(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
SERVICES = {"auth", "rooms", "gateway", "history"}


def named(pattern: re.Pattern[str]) -> list[str]:
    return sorted(set(pattern.findall(DOC.read_text(encoding="utf-8"))))


def resolves(name: str) -> bool:
    """Does ``name`` import as a module, or as attributes of the longest module prefix?"""
    parts = name.split(".")
    for cut in range(len(parts), 1, -1):
        module_name = ".".join(parts[:cut])
        try:
            spec = importlib.util.find_spec(module_name)
        except ImportError:  # a parent is a module, not a package: try shorter
            spec = None
        if spec is None:
            continue
        target: object = importlib.import_module(module_name)
        for attribute in parts[cut:]:
            if not hasattr(target, attribute):
                return False
            target = getattr(target, attribute)
        return True
    return False


def test_the_page_names_the_code_of_every_service() -> None:
    services = {name.split(".")[1] for name in named(DOTTED)}
    assert services >= SERVICES | {"common"}, services


@pytest.mark.parametrize("name", named(DOTTED))
def test_every_module_the_page_names_exists(name: str) -> None:
    assert resolves(name), f"docs/architecture.md names {name}, which does not exist"


def test_a_name_that_is_gone_is_caught() -> None:
    # The check itself: a module removed by the gateway's split, an attribute that was
    # never there, and a name that resolves.
    assert not resolves("roomcast.gateway.hub")
    assert not resolves("roomcast.gateway.realtime.fanout.NoSuchThing")
    assert resolves("roomcast.gateway.realtime.fanout.Fanout")
