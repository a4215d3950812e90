"""examples/chat_cli.py in a real terminal (tmux), two users on two gateways of the
e2e stack: what a person sees and types, including the mistakes they make.

tmux runs on a private server socket (``-L``) that the test kills at the end; the
panes stay after their program exits (``remain-on-exit``) so the last lines can be
read.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e_helpers import PASSWORD, new_user

from roomcast.testing.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "examples" / "chat_cli.py"
# A chat client starts (imports, login, history, socket) in about a second; a loaded
# 2-core CI machine may take several times that.
SCREEN_DEADLINE_SECONDS = 30.0
# How often the screen is read while waiting for a line to appear.
POLL_SECONDS = 0.1


class Terminal:
    """A private tmux server; one session (window) per person."""

    def __init__(self) -> None:
        self.socket = f"roomcast-test-{uuid.uuid4().hex[:8]}"
        self.tmux("-f", "/dev/null", "new-session", "-d", "-s", "idle", "-x", "200", "-y", "50")
        self.tmux("set-option", "-g", "remain-on-exit", "on")
        self.tmux("set-option", "-g", "history-limit", "5000")

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True
        )
        return done.stdout

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        command = " ".join([sys.executable, str(CLI), *(_quote(a) for a in args)])
        # The session's environment (-e), not the command line: what ps would show.
        extra = [f"-e{key}={value}" for key, value in (env or {}).items()]
        self.tmux(
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "200",
            "-y",
            "50",
            "-c",
            str(ROOT),
            *extra,
            command,
        )

    def screen(self, name: str) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-t", name, "-S", "-5000")

    def type(self, name: str, text: str) -> None:
        if text:
            self.tmux("send-keys", "-t", name, "-l", text)
        self.tmux("send-keys", "-t", name, "Enter")

    def key(self, name: str, key: str) -> None:
        self.tmux("send-keys", "-t", name, key)

    def wait_for(self, name: str, check: Callable[[str], object], what: str) -> str:
        """Poll the screen until ``check(screen)`` holds (a line appeared)."""
        deadline = time.monotonic() + SCREEN_DEADLINE_SECONDS
        while True:
            screen = self.screen(name)
            if check(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}: timed out waiting for {what}; screen:\n{screen}")
            time.sleep(POLL_SECONDS)

    def wait_line(self, name: str, pattern: str) -> re.Match[str]:
        screen = self.wait_for(name, lambda s: re.search(pattern, s, re.M), repr(pattern))
        found = re.search(pattern, screen, re.M)
        assert found is not None
        return found

    def exited(self, name: str) -> bool:
        return self.tmux("display-message", "-p", "-t", name, "#{pane_dead}").strip() == "1"

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, check=False)


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    assert shutil.which("tmux"), "tmux is required (make setup installs it)"
    term = Terminal()
    try:
        yield term
    finally:
        term.kill()


async def test_chat_cli_two_people_in_a_terminal(e2e_stack: Stack, terminal: Terminal) -> None:
    url_a, url_b = e2e_stack.gateway_urls
    suffix = uuid.uuid4().hex[:6]
    alice, bob = f"alice{suffix}", f"bob{suffix}"
    # Someone who exists but is not in the room: a private message to them is refused.
    outsider = await new_user(url_a, "carol")
    carol = outsider.user["username"] if outsider.user else ""
    await outsider.aclose()
    t = terminal

    # The password is asked for, not echoed, and never on the command line.
    t.start("alice", "--gateway", url_a, "--username", alice, "--register", "--create", "lobby")
    t.wait_line("alice", rf"^password for {alice}: ")
    t.type("alice", PASSWORD)
    alice_id = t.wait_line("alice", rf"logged in as {alice} \(user id ([0-9a-f]{{24}})\)")[1]
    room = t.wait_line("alice", r"created room lobby: ([0-9a-f]{24})")[1]
    t.wait_line("alice", r"^connected to ")

    assert PASSWORD not in t.screen("alice")
    # A wrong password (from the environment, as a script passes it) is one line and an
    # exit, not a traceback.
    t.start(
        "wrong",
        "--gateway",
        url_b,
        "--username",
        alice,
        "--room",
        room,
        env={"ROOMCAST_PASSWORD": "not it"},
    )
    t.wait_for("wrong", lambda _s: t.exited("wrong"), "the client to exit")
    assert re.search(r"^!! invalid_credentials: ", t.screen("wrong"), re.M)

    bob_env = {"ROOMCAST_PASSWORD": PASSWORD}
    t.start("bob", "--gateway", url_b, "--username", bob, "--register", "--room", room, env=bob_env)
    t.wait_line("bob", rf"logged in as {bob} \(user id [0-9a-f]{{24}}\)")
    t.wait_line("bob", r"^connected to ")
    # Member events are sentences, presence says who came online.
    t.wait_line("alice", rf"-- {bob} joined the room$")
    t.wait_line("alice", rf"-- {bob} is online$")

    t.type("bob", "")  # an empty line is ignored, not a way out
    t.type("bob", "hello alice")
    t.wait_line("alice", rf"^ \[\d+\] {bob}: hello alice$")
    t.wait_line("bob", rf"^\*\[\d+\] {bob}: hello alice$")

    # /to takes a username; the private marker shows on both sides.
    t.type("bob", f"/to {alice} psst")
    t.wait_line("alice", rf"^ \[\d+\] {bob} \(private to you\): psst$")
    t.wait_line("bob", rf"^\*\[\d+\] {bob} \(private to {alice}\): psst$")
    # Mistakes: one line each, and the client stays.
    t.type("bob", "/to nobody_at_all hi")
    t.wait_line("bob", r"^!! no user named nobody_at_all$")
    t.type("bob", f"/to {carol} are you there")
    t.wait_line("bob", r"^!! \w+: .*member")
    t.type("bob", "/frobnicate")
    t.wait_line("bob", r"^!! unknown command /frobnicate")

    # /members: names, who is you, who is online.
    t.type("alice", "/members")
    t.wait_line(
        "alice",
        rf"members \(2\): ({alice} \(you, online, owner\), {bob} \(online\)"
        rf"|{bob} \(online\), {alice} \(you, online, owner\))$",
    )

    t.type("bob", "/quit")
    t.wait_for("bob", lambda _s: t.exited("bob"), "bob's client to exit")
    t.wait_line("alice", rf"-- {bob} went offline$")

    # Back again: history shows the own-message star and the private marker, as live.
    t.tmux("kill-session", "-t", "bob")
    t.start("bob", "--gateway", url_a, "--username", bob, "--password", PASSWORD, "--room", room)
    t.wait_line("bob", r"^connected to ")
    screen = t.screen("bob")
    assert re.search(rf"^\*\[\d+\] {bob}: hello alice$", screen, re.M), screen
    assert re.search(rf"^\*\[\d+\] {bob} \(private to {alice}\): psst$", screen, re.M), screen

    # Ctrl-C leaves quietly.
    t.key("alice", "C-c")
    t.wait_for("alice", lambda _s: t.exited("alice"), "alice's client to exit")
    t.wait_line("alice", r"^bye$")
    assert alice_id in t.screen("alice")
    for name in ("alice", "bob", "wrong"):
        assert "Traceback" not in t.screen(name), t.screen(name)
