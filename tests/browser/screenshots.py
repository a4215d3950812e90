"""Regenerate the web app's screenshots in docs/img/ (``make screenshots``): start a
stack on free ports, drive the app in headless Chromium (scenarios.mjs screenshots)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    node = shutil.which("node")
    if node is None:
        print("node is required: run `make setup`", file=sys.stderr)
        return 1
    stack = subprocess.Popen(
        [sys.executable, str(HERE / "stack_server.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert stack.stdin is not None
    assert stack.stdout is not None
    try:
        line = ""
        while not line.startswith("{"):
            line = stack.stdout.readline()
            if not line and stack.poll() is not None:
                print("the stack did not start", file=sys.stderr)
                return 1
        result = subprocess.run(
            [node, str(HERE / "scenarios.mjs"), "screenshots", line.strip()],
            env=os.environ,
            check=False,
        )
        return result.returncode
    finally:
        stack.stdin.close()
        stack.wait(60)


if __name__ == "__main__":
    sys.exit(main())
