"""promtool unit tests of the notifier's alerts (promtool/notifier_alerts_test.yml): the
webhook dead-letter, webhook failure-ratio and consumer-lag alerts fire on their
condition and stay quiet below it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIT_TESTS = Path(__file__).resolve().parent / "promtool" / "notifier_alerts_test.yml"


def test_notifier_alert_rules_fire_and_stay_quiet_as_documented() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is required: apt-get install prometheus (Debian's package)")
    result = subprocess.run(
        [promtool, "test", "rules", str(UNIT_TESTS)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
