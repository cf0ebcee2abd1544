"""mypy under the project's settings (pyproject.toml, ``[tool.mypy]``): the package and the
built-in monitors type-check, strictly in the modules listed there. mypy comes with the test
extra."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_finds_no_error():
    # No cache written into the checkout: each run checks everything afresh.
    result = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", "/dev/null"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
