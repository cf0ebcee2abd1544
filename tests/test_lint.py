"""flake8 under the project's own settings (setup.cfg): the code, the monitors, the tests
and the benchmarks are clean. flake8 comes with the test extra."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_flake8_is_clean():
    result = subprocess.run([sys.executable, "-m", "flake8", "immortal", "monitors", "tests",
                             "bench"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
