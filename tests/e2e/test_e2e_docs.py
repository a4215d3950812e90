"""Every command block of README.md, docs/client.md and docs/api.md runs as written
against the e2e stack (started exactly as ``make up`` starts it), in document order,
and prints what the docs show (compared by shape: keys and frame types, not values).

The documented addresses (127.0.0.1:8080 / :8090) become the test stack's ports and
the documented users (alice, bob) get a unique suffix, so the blocks run on a stack
that already has users; nothing else is changed. See e2e_docblocks.py for the rules.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from e2e_docblocks import Block, compare_json, compare_transcript, localize, parse

from roomcast.testing.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
DOCS = ["README.md", "docs/client.md", "docs/api.md"]
USERS = ("alice", "bob")
# One block talks to a local stack: a few requests and a login (bcrypt) at most; the
# SDK quick start waits for its own message. Generous for a loaded 2-core CI machine.
BLOCK_TIMEOUT_SECONDS = 90
MARK = "@@roomcast-doc-block"


def _check_output(block: Block, printed: str) -> None:
    if block.output is None:
        return
    if block.output_kind == "json":
        compare_json(block.output, printed, block.where)
    else:
        compare_transcript(block.output, printed, block.where)


def _run_shell(blocks: list[Block], gateways: list[str], names: dict[str, str]) -> None:
    """All shell blocks of one document in one shell, in order (a later block uses the
    variables an earlier one set, as in a terminal). ``-u`` makes an unset variable an
    error, as an empty token would be."""
    parts = ["set -euo pipefail"]
    for i, block in enumerate(blocks):
        parts += [f"echo '{MARK} {i}'", localize(block.code, gateways, names)]
    done = subprocess.run(
        ["bash", "-c", "\n".join(parts)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_SECONDS * max(1, len(blocks)),
        check=False,
    )
    chunks = done.stdout.split(f"{MARK} ")[1:]
    printed = {int(c.split("\n", 1)[0]): c.split("\n", 1)[1] for c in chunks}
    last = blocks[max(printed)] if printed else blocks[0]
    assert done.returncode == 0, (
        f"{last.where} failed ({done.returncode}):\n{last.code}\nstdout:\n"
        f"{printed.get(blocks.index(last), '')}\nstderr:\n{done.stderr}"
    )
    for i, block in enumerate(blocks):
        _check_output(block, printed[i])


def _run_python(block: Block, gateways: list[str], names: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", localize(block.code, gateways, names)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == 0, f"{block.where} failed:\n{done.stdout}\n{done.stderr}"
    _check_output(block, done.stdout)


@pytest.mark.parametrize("doc", DOCS)
def test_docs_command_blocks_run_as_written(e2e_stack: Stack, doc: str) -> None:
    document = parse(ROOT / doc, doc)
    suffix = uuid.uuid4().hex[:6]
    names = {user: f"{user}{suffix}" for user in USERS}
    runnable = [b for b in document.commands if b.not_run is None]
    assert runnable, f"{doc} has no command block to run"
    shell = [b for b in runnable if b.is_shell]
    if shell:
        _run_shell(shell, e2e_stack.gateway_urls, names)
    for block in runnable:
        if block.is_python:
            _run_python(block, e2e_stack.gateway_urls, names)


def test_docs_shape_comparison_catches_what_the_issue_found() -> None:
    """The comparison is strict where the old README was wrong."""
    real_register = '{"user": {"id": "6", "username": "a", "display_name": "a", ' + (
        '"avatar_url": null, "created_at": "t", "email": null}}'
    )
    with pytest.raises(AssertionError):  # a bare user shown where {"user": ...} comes
        compare_json(
            '{"id": "6", "username": "a", "display_name": "a", "avatar_url": null, '
            '"created_at": "t", "email": null}',
            real_register,
            "register",
        )
    compare_json(real_register.replace('"a"', '"b"'), real_register, "values are free")
    shown = (
        '→ {"type": "subscribe", "room": "r"}\n← {"type": "subscribed", "room": "r", "seq": 0}\n'
    )
    received = shown + '← {"type": "presence", "room": "r", "user": {}, "status": "online"}\n'
    with pytest.raises(AssertionError):  # the presence frame the old README left out
        compare_transcript(shown, received, "ws")
    ack_first = '→ {"type": "send"}\n← {"type": "ack", "seq": 1}\n← {"type": "message", "seq": 1}\n'
    message_first = (
        '→ {"type": "send"}\n← {"type": "message", "seq": 1}\n← {"type": "ack", "seq": 1}\n'
    )
    compare_transcript(ack_first, message_first, "either order")
