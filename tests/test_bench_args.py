"""``bench/run.py``'s arguments: which rows a run measures, what it installs, where its
figures and its report go. Through ``--dry-run``, which says so and does nothing: the bench
itself is long, and not a test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LONG

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "run.py"
RESULTS = ROOT / "bench" / "results"


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "IMMORTAL_BENCH_INSTALLED"}
    return subprocess.run([sys.executable, str(BENCH), *args], env=env, cwd=ROOT,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=LONG)


def plan(*args: str) -> dict[str, str]:
    """What ``--dry-run`` says the run would do: rows, install, figures, report."""
    result = bench(*args, "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    said = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert not Path(said["figures"]).exists() or said["figures"].endswith(
        ("/quick.json", "/full.json"))  # a whole run's figures are kept in the repository
    return said


def test_a_whole_run_writes_its_modes_figures_and_the_report():
    quick = plan("--quick")
    assert quick["figures"] == str(RESULTS / "quick.json")
    assert quick["report"] == str(ROOT / "docs" / "benchmarks.md")
    assert quick["rows"].endswith("(quick)") and "rolling" in quick["rows"]
    assert plan()["figures"] == str(RESULTS / "full.json")


def test_some_rows_keep_their_figures_apart_and_write_no_report_unless_asked(tmp_path):
    only = plan("--only", "rolling,stop")
    assert only["rows"] == "stop, rolling (full)"
    assert re.fullmatch(re.escape(str(RESULTS)) + r"/stop-rolling-only-\d{8}T\d{4}Z\.json",
                        only["figures"]), only
    assert only["report"] == "none"
    asked = plan("--quick", "--only", "relay", "--output", str(tmp_path / "relay.md"))
    assert re.fullmatch(re.escape(str(RESULTS)) + r"/relay-only-quick-\d{8}T\d{4}Z\.json",
                        asked["figures"]), asked
    assert asked["report"] == str(tmp_path / "relay.md")
    assert not (tmp_path / "relay.md").exists()


def test_each_run_installs_into_a_directory_of_its_own():
    assert plan()["install"] == ("this checkout into /tmp/bench-immortal-*, removed at the "
                                 "end")
    assert plan("--editable")["install"] == "the project's venv as it is (--editable)"


def test_an_unknown_row_is_refused():
    result = bench("--only", "rolling,nope", "--dry-run")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "unknown rows: nope" in result.stderr
