"""Delivery to each monitor on its own: exactly once across pump kills, drops counted per
monitor, and a monitor that hangs seen (and, with backpressure "drop", harmless)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import immortal
from conftest import LONG, wait_for
from immortal._linux import is_alive
from immortal.daemoncontrol import STOP_MARGIN
from immortal import relay
from immortal.ledger import Ledger
from immortal.monitoring import Host

pytestmark = pytest.mark.timeout(180)


def numbered(count: int, then: str = "", steady: bool = False) -> list[str]:
    """A target writing ``count`` numbered lines at once (``steady``: 100 at a time, a
    millisecond apart), then running ``then``, then waiting to be stopped."""
    step = 100 if steady else count
    return ["-c", "import os, sys, time\n"
            f"for n in range(0, {count}, {step}):\n"
            f"    os.write(1, b''.join(b'line %06d\\n' % i for i in range(n, n + {step})))\n"
            f"    time.sleep({0.001 if steady else 0})\n"
            f"{then}\n"
            "time.sleep(3600)\n"]


def seen(path: Path) -> list[bytes]:
    """The numbered lines in a monitor's file (the ``file`` monitor's records too)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return [line.rpartition(b"| ")[2] if b" | " in line else line
            for line in data.split(b"\n")[:-1] if b"line " in line]


def repeated(lines: list[bytes]) -> int:
    return sum(n - 1 for n in Counter(lines).values())


@pytest.mark.parametrize("fast", ["plugins.delivery:Lines", "file", "plugins.delivery:Plain"])
def test_a_pump_kill_during_a_backlog_repeats_no_line_to_any_monitor(started, tmp_path,
                                                                     fast):
    """Each monitor resumes at its own mark; a monitor that can check its output
    (``delivered``) is repeated nothing, and neither is one that cannot (``Plain``): it
    runs in a process of its own, which finishes the call the kill fell in."""
    count = 20000  # several reads of the pipe: a backlog in the journal and the pipe
    paths = {"fast": tmp_path / "fast.txt", "slow": tmp_path / "slow.txt"}
    option = "path" if fast.startswith("plugins") else "output"
    group = started(sys.executable, numbered(count), monitors={
        fast: {option: str(paths["fast"])},
        "plugins.delivery:Second": {"path": str(paths["slow"]), "delay": 0.0003}})
    # One monitor has taken a block the other is still working through.
    wait_for(lambda: (len(seen(paths["fast"])), len(seen(paths["slow"]))),
             lambda n: min(n) >= 200 and abs(n[0] - n[1]) > 1000, LONG, what="a backlog")
    os.kill(group.pids["pump"], signal.SIGKILL)
    for name, path in paths.items():
        wait_for(lambda: len(set(seen(path))), lambda n: n == count, LONG,
                 what=f"every line at the {name} monitor")
    group.stop()
    for name, path in paths.items():
        lines = seen(path)
        assert repeated(lines) == 0, \
            f"{name}: {repeated(lines)} lines handed over again"
        assert lines == sorted(lines), name


# ----------------------------------------------------------------- by hand, on a journal
class Died(BaseException):
    """The pump dies in the middle of a monitor call (not an Exception: never caught)."""


class Taker(immortal.Monitor):
    """Takes lines one by one; the pump 'dies' at the line ``options["die_at"]``."""

    def stdout(self, line):
        if line == self.options.get("die_at"):
            raise Died
        self.options["got"].append(line)


class BlockTaker(immortal.Monitor):
    def block(self, stream, data, offset):
        self.options["got"].extend(data.split(b"\n")[:-1])


def test_a_successor_hands_each_monitor_only_the_lines_past_its_own_mark(tmp_path):
    """The first monitor took a whole block, the second died in its middle: the successor
    gives the second the rest of the block and the first nothing of it."""
    journal = relay.open_journal(relay.make_journal())
    r, w = relay.make_pipe()
    got: dict[str, list[bytes]] = {"block": [], "lines": []}

    def pump(die_at: bytes | None) -> relay.Relay:
        host = Host([("block", BlockTaker, {"got": got["block"]}),
                     ("lines", Taker, {"got": got["lines"], "die_at": die_at})],
                    "g", tmp_path, ledger=Ledger(journal))
        return relay.Relay(r, journal, 0, lambda data, offset, end: host.block(
            "stdout", data, offset, end))

    try:
        lines = [b"line %d" % i for i in range(100)]
        os.write(w, b"\n".join(lines[:60]) + b"\n")
        with pytest.raises(Died):
            pump(b"line 40").read()
        successor = pump(None)
        successor.recover()
        successor.deliver()
        os.write(w, b"\n".join(lines[60:]) + b"\n")
        successor.drain()
        assert got["block"] == lines and got["lines"] == lines
    finally:
        journal.close()
        os.close(r)
        os.close(w)


# ----------------------------------------------------------------- backpressure "drop"
FLOOD = 200_000  # 2.4 MB: more than the pipe and a monitor's queue hold


def paced(count: int, fast: Path, then: str) -> list[str]:
    """A target writing ``count`` numbered lines, 100 at a time, never more than 10000
    (120 KB) ahead of what the monitor writing ``fast`` has written: that monitor never
    falls a queue (1 MiB) behind, however loaded the machine (an unpaced flood made it
    drop lines, or not empty its queue by the end, on a loaded machine)."""
    return ["-c", "import os, sys, time\n"
            f"def seen():\n"
            f"    try:\n"
            f"        return os.stat({str(fast)!r}).st_size // 12\n"
            f"    except FileNotFoundError:\n"
            f"        return 0\n"
            f"for n in range(0, {count}, 100):\n"
            f"    os.write(1, b''.join(b'line %06d\\n' % i for i in range(n, n + 100)))\n"
            f"    deadline = time.monotonic() + 60\n"
            f"    while seen() < n + 100 - 10000 and time.monotonic() < deadline:\n"
            f"        time.sleep(0.001)\n"
            f"deadline = time.monotonic() + 60\n"
            f"while seen() < {count} and time.monotonic() < deadline:\n"
            f"    time.sleep(0.001)\n"
            f"{then}\n"]


def test_drop_loses_only_the_slow_monitors_lines_and_status_counts_them(started, tmp_path):
    paths = {"fast": tmp_path / "fast.txt", "slow": tmp_path / "slow.txt"}
    group = started(sys.executable, paced(FLOOD, paths["fast"], "sys.exit(0)"),
                    backpressure="drop", policy={"final_exit_codes": [0]}, stop_timeout=1.0,
                    monitors={
                        "plugins.delivery:Lines": {"path": str(paths["fast"])},
                        "plugins.delivery:Second": {"path": str(paths["slow"]),
                                                    "delay": 0.001}})
    final = group.wait(LONG)
    assert final.state == "stopped"
    fast = paths["fast"].read_bytes().split(b"\n")[:-1]
    assert len(fast) == FLOOD and not any(line.startswith(b"dropped") for line in fast)
    slow = paths["slow"].read_bytes().split(b"\n")[:-1]
    told = sum(int(line.split()[1]) for line in slow if line.startswith(b"dropped"))
    assert told > 0 and len(seen(paths["slow"])) + told == FLOOD
    assert final.monitors == {"plugins.delivery:Lines": {"dropped": 0},
                              "plugins.delivery:Second": {"dropped": told}}
    assert final.dropped == told
    assert f"plugins.delivery:Second: dropped {told}" in str(final)
    shown = subprocess.run([sys.executable, "-m", "immortal", "status", group.name],
                           capture_output=True, text=True, timeout=LONG).stdout
    assert f"dropped  {told} lines" in shown
    assert f"plugins.delivery:Second: dropped {told}" in shown
    assert "plugins.delivery:Lines: dropped" not in shown


def test_with_drop_a_hanging_monitor_never_stalls_the_target(started, tmp_path):
    fast = tmp_path / "fast.txt"
    finished = tmp_path / "finished"
    release = tmp_path / "release"
    group = started(sys.executable, numbered(FLOOD, f"open({str(finished)!r}, 'w')", steady=True),
                    backpressure="drop", monitors={
                        "plugins.delivery:Hang": {"release": str(release)},
                        "plugins.delivery:Lines": {"path": str(fast)}})
    try:
        # More than the pipe holds: the target finishes only if nobody waits on the hang.
        wait_for(finished.exists, bool, LONG, what="the target to write all its lines")
        wait_for(lambda: len(seen(fast)), lambda n: n == FLOOD, LONG,
                 what="every line at the other monitor")
        status = wait_for(group.status, lambda s: s.monitors.get(
            "plugins.delivery:Hang", {}).get("dropped"), LONG, what="the hang's drops")
        assert status.monitors["plugins.delivery:Lines"] == {"dropped": 0}
    finally:
        release.touch()


def test_with_drop_lines_a_killed_pump_had_queued_count_as_dropped(started, tmp_path):
    slow = tmp_path / "slow.txt"
    group = started(sys.executable, numbered(20000), backpressure="drop", monitors={
        "plugins.delivery:Second": {"path": str(slow), "delay": 0.001}})
    wait_for(lambda: len(seen(slow)), lambda n: n >= 100, LONG, what="the first lines")
    os.kill(group.pids["pump"], signal.SIGKILL)
    # The new pump tells the monitor what died queued in the old one, and status counts it.
    text = wait_for(lambda: slow.read_bytes(), lambda data: b"dropped " in data, LONG,
                    what="a dropped() call")
    told = sum(int(line.split()[1]) for line in text.split(b"\n") if line.startswith(
        b"dropped "))
    got = len(seen(slow))
    assert got < 20000 and told > 0
    group.stop()
    final = group.status()
    got = len(seen(slow))
    told = sum(int(line.split()[1]) for line in slow.read_bytes().split(b"\n")
               if line.startswith(b"dropped "))
    # Exact but for a kill between a line's write and the count of it: one line both ways.
    assert 20000 - 1 <= got + told <= 20000 + 1
    assert final.monitors["plugins.delivery:Second"] == {"dropped": told}


def test_with_drop_a_stop_after_both_supervisors_died_counts_what_they_had_queued(
        started, tmp_path):
    """Both supervisors killed with lines queued for a slow monitor; the stop hands what
    the pipe holder kept to the monitors (a drain): the stop's final status counts every
    line the monitor did not get as dropped for it, the dead pump's queue too."""
    slow = tmp_path / "slow.txt"
    group = started(sys.executable, numbered(20000), backpressure="drop", monitors={
        "plugins.delivery:Second": {"path": str(slow), "delay": 0.001}})
    wait_for(lambda: len(seen(slow)), lambda n: n >= 100, LONG, what="the first lines")
    pids = group.pids
    os.kill(pids["daemon"], signal.SIGKILL)
    os.kill(pids["pump"], signal.SIGKILL)
    final = group.stop()
    got = len(seen(slow))
    dropped = final.monitors["plugins.delivery:Second"]["dropped"]
    # Exact but for a kill between a line's write and the count of it: one line both ways.
    assert 20000 - 1 <= got + dropped <= 20000 + 1, (got, dropped)
    assert final.dropped == dropped


def test_a_stop_by_signal_ends_the_group_though_a_monitor_hangs(started, tmp_path):
    """SIGTERM to the daemon (a service manager's stop) while the pump is held in a monitor
    call that never returns: the daemon kills the targets and the pump once the grace
    period and a margin are over, and starts no pump again. Before, the group ran on."""
    release = tmp_path / "release"
    group = started(sys.executable, numbered(FLOOD, steady=True), stop_timeout=1.0,
                    monitors={"plugins.delivery:HangAt": {"release": str(release),
                                                          "at": 300}})
    try:
        wait_for(group.status, lambda s: s.stalled, LONG, what="the pump held by the monitor")
        pids = group.pids
        os.kill(pids["daemon"], signal.SIGTERM)
        wait_for(lambda: [pid for pid in pids.values() if is_alive(pid, None)],
                 lambda alive: not alive, 1.0 + STOP_MARGIN + LONG,
                 what="the daemon, the pump and the target to be gone")
        status = group.status()
        assert not status.running and status.state == "stopped", status
        assert "did not end it in time" in (status.reason or "")
    finally:
        release.touch()


def test_a_stop_shorter_than_the_groups_grace_ends_the_group_itself_though_a_monitor_hangs(
        started, tmp_path):
    """Backpressure "drop", a monitor that hangs, and 'stop --timeout 1' of a group whose
    own grace is 30 s: the pump gives the monitors' queues the stop's second, not the
    group's thirty, ends the group itself (the other monitors get their shutdown) before
    the daemon would overrule it."""
    release = tmp_path / "release"
    group = started(sys.executable, numbered(FLOOD, steady=True), stop_timeout=30.0,
                    backpressure="drop", monitors={
                        "plugins.delivery:Hang": {"release": str(release)}, "file": {}})
    try:
        wait_for(group.status, lambda s: s.monitors.get("plugins.delivery:Hang", {}).get(
            "dropped"), LONG, what="the hanging monitor dropping lines")
        final = group.stop(timeout=1.0)
        assert (final.state, final.reason) == ("stopped", "stop"), final
        log = (group.directory / "output.log").read_text()
        assert "shutdown" in log.splitlines()[-1], log.splitlines()[-3:]
    finally:
        release.touch()


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
@pytest.mark.parametrize("strategy", ["daemon", "unattached"])
def test_a_pump_that_ends_flushes_what_a_monitor_left_open_and_runs_its_exit_functions(
        started, tmp_path, strategy, binary):
    """A role ends without the teardown of every module (``forking.finish``): the pump,
    forked or a fresh interpreter, still frees its monitors' objects, and runs the exit
    functions they registered. A buffered file a monitor never closed keeps every line:
    freed in a cycle with the objects around it, it could be freed after the buffer below
    it, and lose what it held (as at an interpreter's exit), but it is flushed first."""
    buffered, mark, plain = tmp_path / "buffered.txt", tmp_path / "atexit", tmp_path / "out.log"
    group = started(sys.executable, numbered(50), strategy=strategy, monitors={
        "file": {"output": str(plain)},
        "plugins.outputs:Unclosed": {"path": str(buffered), "mark": str(mark),
                                     "binary": binary}})
    wait_for(lambda: len(seen(plain)), lambda count: count == 50, LONG, "the 50 lines")
    assert not buffered.exists() or buffered.read_bytes() == b""  # still in its buffer
    group.stop(timeout=LONG)
    assert seen(buffered) == [b"line %06d" % i for i in range(50)]
    assert mark.exists()
