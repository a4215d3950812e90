"""The TypeScript SDK's vitest suite (clients/typescript/test) as part of ``make test``:
it starts its own real stack (stack_server.py) and checks reconnects, resumes,
exactly-once sends, gap repair, tokens and the REST types against the server's schemas."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

# The suite starts a whole stack (~10 s) and runs ~45 tests (~25 s, the file and
# reaction tests included); a loaded 2-core machine can take several times that.
VITEST_TIMEOUT_SECONDS = 300


# The subprocess has its own budget; the suite-wide 120 s pytest-timeout would kill the
# test first on a loaded machine and leave vitest's stack_server.py running.
@pytest.mark.timeout(VITEST_TIMEOUT_SECONDS + 30)
def test_vitest_suite_passes_against_the_real_stack(js: Any) -> None:
    vitest = js.clients / "node_modules" / "vitest" / "vitest.mjs"
    result = subprocess.run(
        [js.node, str(vitest), "run", "--reporter=dot"],
        cwd=js.clients / "typescript",
        capture_output=True,
        text=True,
        timeout=VITEST_TIMEOUT_SECONDS,
        env=os.environ | {"ROOMCAST_PYTHON": sys.executable, "CI": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
