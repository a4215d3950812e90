"""promtool unit tests of the alert rules (tests/observability/promtool/): every alert
that tests/deploy's unit tests leave out fires on its condition and stays quiet below
it, and the error ratios are quiet (not absent) when no error series exists."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIT_TESTS = Path(__file__).resolve().parent / "promtool" / "alerts_more_test.yml"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is required: apt-get install prometheus (Debian's package)")
    return found


def test_alert_rule_unit_tests_pass() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", str(UNIT_TESTS)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
