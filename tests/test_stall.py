"""A pump that no longer drains the target's output is told in the status, by the daemon,
at no cost while the target is quiet."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import LONG, wait_for
from immortal import stall

pytestmark = pytest.mark.timeout(180)

# Writes 64 KiB blocks of lines for ever: blocked in its writes as soon as nobody reads.
FLOOD = ["-c", "import os\nblock = b'x' * 99 + b'\\n'\nwhile True: os.write(1, block * 655)\n"]


def switches(pid: int) -> int:
    """How many times ``pid`` has gone to sleep (its voluntary context switches)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc")


def test_a_frozen_pump_shows_as_stalled_until_it_runs_again(started):
    group = started(sys.executable, FLOOD, options={"output": os.devnull})
    assert group.status().stalled is None
    pump = group.pids["pump"]
    os.kill(pump, signal.SIGSTOP)
    try:
        frozen = time.time()
        status = wait_for(group.status, lambda s: s.stalled, LONG, what="a stall")
        assert status.running and status.state == "running"
        assert status.stalled["monitor"] is None  # no monitor call under way: the pump
        assert frozen - 2 * stall.AFTER <= status.stalled["since"] <= time.time()
        assert "stalled  the pump has not drained" in str(status)
        shown = subprocess.run([sys.executable, "-m", "immortal", "status", group.name],
                               capture_output=True, text=True, timeout=LONG).stdout
        assert f"{group.name}: running (stalled)" in shown
        assert "stalled  the pump has not drained the target's output for" in shown
    finally:
        os.kill(pump, signal.SIGCONT)
    wait_for(group.status, lambda s: s.stalled is None, LONG, what="the stall to end")
    assert group.pids["pump"] == pump  # reported, not replaced


def test_a_hanging_monitor_is_named_in_the_status(started, tmp_path):
    release = tmp_path / "release"
    group = started(sys.executable, FLOOD, monitors={
        "file": {"output": os.devnull},
        "plugins.delivery:Hang": {"release": str(release)}})
    try:
        status = wait_for(group.status, lambda s: s.stalled, LONG, what="a stall")
        assert status.stalled["monitor"] == "plugins.delivery:Hang"
        assert status.stalled["monitor_since"] <= time.time()
        assert "monitor 'plugins.delivery:Hang' has not returned" in str(status)
    finally:
        release.touch()
    wait_for(group.status, lambda s: s.stalled is None, LONG, what="the stall to end")


def test_the_watch_costs_no_wake_up_while_quiet_and_few_while_output_flows(started,
                                                                           tmp_path):
    # A line every 20 ms for a while, then silence.
    target = ["-c", "import sys, time\nfor i in range(300):\n"
              "    print(i, flush=True); time.sleep(0.02)\ntime.sleep(3600)\n"]
    out = tmp_path / "out.log"
    group = started(sys.executable, target, options={"output": str(out)})
    daemon = group.pids["daemon"]
    # Past the start-up messages from the pump: output flows.
    wait_for(lambda: out.read_text() if out.exists() else "", lambda t: "stdout | 5" in t,
             what="the first lines")
    begun, before = time.monotonic(), switches(daemon)
    wait_for(lambda: time.monotonic() - begun, lambda t: t >= 5.0, what="output flowing")
    flowing = switches(daemon) - before
    assert flowing <= 5.0 / stall.AFTER + 3, f"{flowing} wake-ups in 5 s of output"
    # Quiet: after at most two periods the daemon sleeps until the next output.
    wait_for(out.read_text, lambda t: "stdout | 299" in t, LONG, what="the last line")
    begun = time.monotonic()
    wait_for(lambda: time.monotonic() - begun, lambda t: t >= 2 * stall.AFTER + 1,
             what="two periods")
    begun, before = time.monotonic(), switches(daemon)
    wait_for(lambda: time.monotonic() - begun, lambda t: t >= 3.0, what="a quiet while")
    assert switches(daemon) - before == 0
