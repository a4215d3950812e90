"""The command blocks of the user docs, as a newcomer would paste them.

A fenced block whose language is ``sh``/``bash``/``console`` (shell) or ``python`` is a
command block. Each one runs, unless the line right before its fence says why not:
``<!-- not run: <reason> -->`` (a block that starts the stack or deletes local state).
A block fenced ``json output`` or ``text output`` right after a command block is what
that command prints; the test compares its shape (keys, frame types and order rules),
never volatile values (ids, tokens, times).

Transcripts (``text output`` lines ``→ {frame}`` / ``← {frame}``) compare per request:
the frames received after one ``→`` line, before the next, as a multiset (order within
the group is not promised, e.g. a message may come before its own ack).
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SHELL_LANGUAGES = frozenset({"sh", "bash", "console", "shell"})
_FENCE = re.compile(r"^```(\S*)[ \t]*(.*)$")
_NOT_RUN = re.compile(r"^<!-- not run: (.+?) -->$")


@dataclass
class Block:
    doc: str
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    not_run: str | None = None  # the reason given in the docs
    output: str | None = None  # the shown output of a command block
    output_kind: str | None = None  # "json" or "text"

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def is_shell(self) -> bool:
        return self.language in SHELL_LANGUAGES

    @property
    def is_python(self) -> bool:
        return self.language == "python"


@dataclass
class Document:
    name: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def commands(self) -> list[Block]:
        return [b for b in self.blocks if b.is_shell or b.is_python]


def parse(path: Path, name: str) -> Document:
    """Every fenced block of a markdown file, outputs attached to their commands."""
    doc = Document(name)
    lines = path.read_text().splitlines()
    i = 0
    previous_command: Block | None = None
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1  # prose between a command and its output ("prints:") is fine
            continue
        language, extra = opening.group(1), opening.group(2).strip()
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        code = "\n".join(body) + "\n"
        if extra == "output" and language in ("json", "text"):
            assert previous_command is not None, (
                f"{name}:{start + 1}: an output block must follow a command block"
            )
            previous_command.output, previous_command.output_kind = code, language
            previous_command = None
            continue
        marker = _NOT_RUN.match(lines[start - 1].strip()) if start > 0 else None
        block = Block(name, start + 1, language, code, marker.group(1) if marker else None)
        doc.blocks.append(block)
        previous_command = block if (block.is_shell or block.is_python) else None
    return doc


def localize(code: str, gateways: list[str], names: dict[str, str]) -> str:
    """The block as it must run against the test stack: the documented default gateway
    addresses become the stack's, the documented usernames unique ones, and the
    virtualenv's Python the interpreter running the tests (the same packages)."""
    code = code.replace(".venv/bin/python", sys.executable)
    a, b = (url.removeprefix("http://") for url in gateways)
    for host in ("127.0.0.1", "localhost"):
        code = code.replace(f"{host}:8080", a).replace(f"{host}:8090", b)
    for name, unique in names.items():
        code = re.sub(rf"\b{name}\b", unique, code)
    return code


def shape(value: Any) -> Any:
    """The structure of a JSON value: object keys (recursively) and list item shapes;
    scalars are all alike (values are volatile: ids, times, tokens)."""
    if isinstance(value, dict):
        return tuple(sorted((k, shape(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("list", shape(value[0]) if value else None)
    return "scalar"


def _json_documents(text: str) -> list[Any]:
    """The JSON documents printed one after the other (curl adds no newline)."""
    decoder = json.JSONDecoder()
    documents, at, text = [], 0, text.strip()
    while at < len(text):
        document, at = decoder.raw_decode(text, at)
        documents.append(document)
        while at < len(text) and text[at].isspace():
            at += 1
    return documents


def compare_json(shown: str, printed: str, where: str) -> None:
    expected, actual = _json_documents(shown), _json_documents(printed)
    assert len(expected) == len(actual), f"{where}: printed {printed!r}, docs show {shown!r}"
    for want, got in zip(expected, actual, strict=True):
        mismatch = (
            f"{where}: the docs show\n  {json.dumps(want)}\nbut the command printed\n  "
            f"{json.dumps(got)}"
        )
        assert shape(want) == shape(got), mismatch
        assert _lists_agree(want, got), mismatch


def _lists_agree(want: Any, got: Any) -> bool:
    """An empty list in the docs must be empty for real, a shown item must exist."""
    if isinstance(want, dict) and isinstance(got, dict):
        return all(_lists_agree(v, got.get(k)) for k, v in want.items())
    if isinstance(want, list) and isinstance(got, list):
        return bool(want) == bool(got)
    return True


def _transcript(text: str) -> list[tuple[dict[str, Any], Counter[Any]]]:
    groups: list[tuple[dict[str, Any], Counter[Any]]] = []
    for line in text.strip().splitlines():
        arrow, _, frame = line.strip().partition(" ")
        if arrow == "→":
            groups.append((json.loads(frame), Counter()))
        elif arrow == "←":
            assert groups, f"a received frame before any sent one: {line}"
            groups[-1][1][shape(json.loads(frame))] += 1
        else:
            raise AssertionError(f"not a transcript line: {line!r}")
    return groups


def compare_transcript(shown: str, printed: str, where: str) -> None:
    expected, actual = _transcript(shown), _transcript(printed)
    assert [shape(sent) for sent, _ in expected] == [shape(sent) for sent, _ in actual], (
        f"{where}: sent frames differ:\n{printed}"
    )
    for (sent, want), (_, got) in zip(expected, actual, strict=True):
        assert want == got, (
            f"{where}: after {json.dumps(sent)} the docs show other frames than were "
            f"received:\n{printed}"
        )
