"""The web chat app end to end in headless Chromium (Debian's chromium, driven by
playwright-core from scenarios.mjs) against a real stack: two users on two gateways, a
reload, a gateway killed mid-chat, a private message, the notifications panel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
# Starting NATS, SecantusDB and five services: ~10 s, more on a loaded machine.
STACK_START_TIMEOUT_SECONDS = 120.0
# One scenario: a browser start (~1 s), two or three registrations, a few messages; the
# failover one also waits for a gateway restart (~5 s).
SCENARIO_TIMEOUT_SECONDS = 180


@pytest.fixture(scope="module")
def stack_line() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "stack_server.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdin is not None
    deadline = time.monotonic() + STACK_START_TIMEOUT_SECONDS
    line = ""
    try:
        while not line.startswith("{"):
            assert time.monotonic() < deadline, "the stack did not start in time"
            line = proc.stdout.readline()
            assert line or proc.poll() is None, f"the stack exited with {proc.returncode}"
        assert json.loads(line)["gateways"]
        yield line.strip()
    finally:
        proc.stdin.close()  # stack_server.py stops everything when its stdin closes
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def run_scenario(js: Any, name: str, stack_line: str) -> None:
    result = subprocess.run(
        [js.node, str(HERE / "scenarios.mjs"), name, stack_line],
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT_SECONDS,
        env=os.environ | {"ROOMCAST_CHROMIUM": js.chromium},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-6000:] + result.stdout[-2000:]
    assert f"{name}: ok" in result.stdout


def test_two_users_on_two_gateways_chat_both_ways(js: Any, stack_line: str) -> None:
    """Typing, presence, read receipt and an unread badge on the way."""
    run_scenario(js, "chat", stack_line)


def test_a_reload_keeps_the_session_and_shows_history(js: Any, stack_line: str) -> None:
    run_scenario(js, "reload", stack_line)


def test_a_gateway_killed_mid_chat_loses_and_doubles_nothing(js: Any, stack_line: str) -> None:
    run_scenario(js, "failover", stack_line)


def test_a_private_message_is_visible_only_to_its_recipient(js: Any, stack_line: str) -> None:
    run_scenario(js, "private", stack_line)


def test_the_bell_counts_dms_and_the_panel_marks_them_read(js: Any, stack_line: str) -> None:
    """Inbox rows written by the notifier, through the gateway, in the page."""
    run_scenario(js, "notifications", stack_line)


def test_replies_reactions_and_files_between_two_users(js: Any, stack_line: str) -> None:
    """A reply and its thread view, reaction chips toggled across gateways, a file shared
    and downloaded by the other member; all of it again from history after a reload."""
    run_scenario(js, "conversations", stack_line)


def test_push_registration_subscribes_with_the_vapid_key_and_logout_forgets_it(
    js: Any, stack_line: str
) -> None:
    """The app's Web Push path: service worker, VAPID key, the notifier's POST, and the
    DELETE on logout (the browser's push service itself is replaced: none headless)."""
    run_scenario(js, "push", stack_line)
