"""examples/monitor-example, installed with pip as a user would, found by its entry point."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import immortal
from conftest import HERE, LONG, TALKER, wait_for
from immortal import monitorload

pytestmark = pytest.mark.timeout(120)

EXAMPLE = HERE.parent / "examples" / "monitor-example"


@pytest.fixture(scope="module")
def example_installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("example-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--no-index", "--target", str(target), str(EXAMPLE)],
        check=True, timeout=300,
    )
    return target


@pytest.fixture
def linecount(example_installed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The example on sys.path here and on PYTHONPATH for the pump."""
    monkeypatch.syspath_prepend(str(example_installed))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(example_installed), *filter(None, [os.environ.get("PYTHONPATH")])]))
    importlib.invalidate_caches()


def read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def test_the_example_is_found_by_its_entry_point_name(linecount):
    assert "linecount" in monitorload.installed()
    factory = monitorload.resolve("linecount")
    assert factory.__module__ == "immortal_linecount" and factory.__name__ == "LineCount"


def test_the_example_counts_lines_and_writes_its_summary_at_shutdown(linecount, started,
                                                                     tmp_path):
    summary = tmp_path / "summary.json"
    group = started(TALKER, ["--out", "3", "--err", "2", "--exit", "5"], monitor="linecount",
                    options={"summary": str(summary)},
                    policy={"final_exit_codes": [5], "min_uptime": 0.0}, name="counted")
    data = wait_for(lambda: read_json(summary), lambda d: d is not None, LONG,
                    what="the summary written at shutdown")
    assert data == {
        "group": "counted",
        "stdout": {"lines": 3, "bytes": len("out 1") * 3},
        "stderr": {"lines": 2, "bytes": len("err 1") * 2},
        "spawned": 1,
        "exits": ["exited with status 5"],
        "setups": ["pump start"],
        "reason": data["reason"],
    }
    assert "5" in data["reason"]
    assert group.status().last_exit.code == 5


def test_the_example_default_summary_is_in_the_instance_directory(linecount, started):
    group = started(TALKER, ["--out", "1"], monitor="linecount")
    group.stop()
    data = wait_for(lambda: read_json(group.directory / "summary.json"),
                    lambda d: d is not None, what="the default summary")
    assert data["reason"] == "stop" and data["exits"] == ["killed by SIGTERM"]
    assert group.output is None  # it declares no output file


def test_the_example_refuses_bad_options_in_the_caller(linecount, home):
    with pytest.raises(immortal.MonitorOptionsError, match="linecount has no option 'sumary'"):
        immortal.start(TALKER, monitor="linecount", options={"sumary": "x.json"})
    with pytest.raises(immortal.MonitorOptionsError, match="no such directory"):
        immortal.start(TALKER, monitor="linecount",
                       options={"summary": "/nonexistent-dir/summary.json"})
    assert os.listdir(home) == []
