"""memory_limit, memory_window, memory_children: a target whose memory stays over the
limit for the window is restarted gracefully, with the reason 'memory' in its restart
record, its exit event and the group's status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import immortal
from conftest import LONG, SHORT, proc_state, wait_for
from immortal import memwatch
from immortal.memwatch import MemoryWatch

pytestmark = pytest.mark.timeout(120)

MIB = 1 << 20

# Grows to 80 MiB (pages written, so resident) on its first run only (a marker file), says
# so, then sleeps; with --child the memory is its child's.
GROWER = """
import os, subprocess, sys, time
marker = sys.argv[1]
first = not os.path.exists(marker)
open(marker, "a").close()
if first and "--child" in sys.argv:
    subprocess.Popen([sys.executable, "-c",
                      "import time\\nx = b'\\\\x01' * (80 << 20)\\nprint('grown', flush=True)\\n"
                      "time.sleep(3600)"])
elif first:
    x = b"\\x01" * (80 << 20)
    print("grown", flush=True)
time.sleep(3600)
"""


# --- the pure parts ------------------------------------------------------------------------
@pytest.mark.parametrize("given, size", [
    ("300M", 300 * MIB), ("300MB", 300 * MIB), ("300 MiB", 300 * MIB), ("1.5G", 3 * 512 * MIB),
    ("512k", None), ("2048K", 2 * MIB), (5 * MIB, 5 * MIB), ("5242880", 5 * MIB),
])
def test_sizes(given: object, size: int | None) -> None:
    if size is None:
        with pytest.raises(immortal.InvalidSpec, match="from 1M"):
            memwatch.parse_size("memory_limit", given)
    else:
        assert memwatch.parse_size("memory_limit", given) == size


@pytest.mark.parametrize("kwargs, error, fragment", [
    ({"memory_limit": "lots"}, immortal.InvalidSpec, "'memory_limit' must be a size"),
    ({"memory_limit": True}, immortal.InvalidType, "'memory_limit' must be a size"),
    ({"memory_window": 5}, immortal.InvalidSpec, "'memory_window' needs 'memory_limit'"),
    ({"memory_children": True}, immortal.InvalidSpec, "needs 'memory_limit'"),
    ({"memory_limit": "1G", "memory_window": -1}, immortal.InvalidSpec, "from 0 to 86400"),
    ({"memory_limit": "1G", "memory_children": 1}, immortal.InvalidType, "must be a bool"),
])
def test_bad_memory_options_are_refused_in_the_caller(home: Path, kwargs: dict[str, object],
                                                      error: type[Exception],
                                                      fragment: str) -> None:
    with pytest.raises(error) as caught:
        immortal.start(sys.executable, ["-c", "pass"], name="badmem", **kwargs)
    assert fragment in str(caught.value)
    assert not (home / "badmem").exists()


def test_the_cli_names_its_options(home: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "immortal", "run", "--memory-limit", "lots",
                             sys.executable], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "immortal: error: --memory-limit must be a size" in result.stderr


def test_the_interval() -> None:
    assert memwatch.interval(10.0) == 1.0
    assert memwatch.interval(1.0) == 0.25
    assert memwatch.interval(0.0) == memwatch.MIN_INTERVAL


def test_over_the_limit_for_the_whole_window_and_no_wake_up_without_a_target() -> None:
    watch = MemoryWatch(100, 2.0)
    assert watch.deadline(False, 0.0) is None
    assert watch.deadline(True, 10.0) == 10.0 + watch.every
    assert watch.readings(10.5, {0: 150, 1: 50}) == []
    assert watch.readings(11.5, {0: 150, 1: 150}) == []
    assert watch.readings(12.0, {0: 90, 1: 150}) == []  # 0 came back under: from zero
    assert watch.readings(13.5, {0: 150, 1: 150}) == [1]
    assert watch.readings(15.0, {0: 150, 1: 150}) == []  # 1 restarted: counted afresh
    assert watch.readings(15.5, {0: 150}) == [0]
    assert watch.readings(16.0, {0: None}) == []  # gone
    assert watch.deadline(False, 16.0) is None and watch.over == {}


def test_the_memory_of_a_process_and_of_its_descendants() -> None:
    code = ("import subprocess, sys, time\n"
            "subprocess.Popen([sys.executable, '-c', 'x = bytes(1) * (40 << 20)\\n"
            "print(1, flush=True)\\nimport time\\ntime.sleep(60)'])\n"
            "time.sleep(60)\n")
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) as child:
        try:
            assert child.stdout is not None
            child.stdout.readline()  # the grandchild has its 40 MiB
            alone = memwatch.measure(child.pid, False)
            tree = memwatch.measure(child.pid, True)
            assert alone is not None and tree is not None
            assert tree - alone >= 40 * MIB
        finally:
            below = memwatch._linux.descendants(child.pid)
            for pid in below:
                os.kill(pid, signal.SIGKILL)
            child.kill()
    assert memwatch.measure(child.pid, True) is None
    for pid in below:  # gone, or a zombie that came to us (we are a subreaper)
        wait_for(lambda: proc_state(pid), lambda state: state in (None, "Z"),
                 what=f"{pid} to die")


# --- a group with a limit ------------------------------------------------------------------
@pytest.mark.parametrize("children", [False, True], ids=["target", "descendants"])
def test_a_target_that_grows_past_the_limit_is_restarted_for_memory(
        started, recorder, tmp_path: Path, children: bool) -> None:
    args = ["-c", GROWER, str(tmp_path / "marker")] + (["--child"] if children else [])
    group = started(sys.executable, args, memory_limit="50M", memory_window=1.0,
                    memory_children=children, monitor="recorder", options=recorder.options)
    first = group.pids["target"]
    events = recorder.wait_for(lambda found: any(e["hook"] == "stdout" for e in found), SHORT)
    grown = time.monotonic()
    assert any(e["hook"] == "stdout" and "grown" in str(e.get("line")) for e in events), events
    exits = recorder.wait_for(lambda found: any(e["hook"] == "exit" for e in found), SHORT)
    took = time.monotonic() - grown
    exit_event = next(e for e in exits if e["hook"] == "exit")
    record = exit_event["record"]
    assert (record["pid"], record["decision"], record["reason"]) == (first, "restart", "memory")
    assert record["signal"] == 15  # gracefully: TERM first
    # Within the window and one interval (and what a loaded machine adds).
    window, every = 1.0, memwatch.interval(1.0)
    assert took < window + every + 3.0, took
    status = wait_for(group.status, lambda s: s.pids.get("target") not in (None, first), LONG,
                      what="the new target")
    assert status.last_exit.reason == "memory" and status.restarts == 1
    assert "(restarted: over its memory limit)" in str(status)
    log = (Path(group.directory) / "pump.log").read_text()
    assert "over the limit of 50 MiB; restarting it" in log


def test_a_small_target_is_left_alone(started, tmp_path: Path) -> None:
    group = started(sys.executable, ["-c", "import time\ntime.sleep(3600)"],
                    memory_limit="200M", memory_window=0.2)
    first = group.pids["target"]
    begun = time.monotonic()
    wait_for(lambda: time.monotonic() - begun, lambda t: t >= 1.5, what="a few readings")
    assert group.pids["target"] == first and group.status().restarts == 0


def test_the_monitors_exit_lines_say_it_was_over_its_memory_limit(
        started, tmp_path: Path) -> None:
    """The reason 'status' gives is in the text monitors' exit line too: the file's and
    the logging monitor's (here in pump.log), not a bare 'killed by SIGTERM'."""
    group = started(sys.executable, ["-c", GROWER, str(tmp_path / "marker")],
                    memory_limit="50M", memory_window=0.5, ready="spawn",
                    monitors={"file": {}, "logging": {}})
    first = group.pids["target"]
    wait_for(group.status, lambda s: s.pids.get("target") not in (None, first), LONG,
             what="the target restarted for its memory")
    said = f"exit pid {first}: killed by SIGTERM (restarted: over its memory limit)"
    output = Path(group.status().output)
    wait_for(output.read_text, lambda text: said in text, SHORT, what=f"{said!r} in {output}")
    log = Path(group.directory) / "pump.log"
    wait_for(log.read_text, lambda text: said in text, SHORT, what=f"{said!r} in {log}")
