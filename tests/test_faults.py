"""Faults from docs RELIABILITY that are not chaos: both supervisors dying, stale state,
a descendant holding the target lock, a full disk, crash-loop cost, no timer while idle."""

from __future__ import annotations

import os
import platform
import signal
import time

import pytest

import immortal
from conftest import LONG, SHORT, TALKER, cmdline, descendants, kill_at_once, wait_for
from immortal._linux import is_alive, process_start_time
from immortal.state import LEFT_ENDED

pytestmark = pytest.mark.timeout(120)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def lines(recorder, hook="stdout"):
    return [e["line"] for e in recorder.events() if e["hook"] == hook]


def test_both_supervisors_killed_then_a_run_of_another_command_kills_the_orphan(
        started, recorder):
    group = started(TALKER, [], name="twice", monitor="recorder", options=recorder.options)
    # Quiet from here on: the orphan must not die of a write to its closed pipes.
    recorder.wait_for(lambda ev: any(e.get("line") == "ready" for e in ev))
    pids = group.pids
    orphan_start = process_start_time(pids["target"])
    kill_at_once(pids["daemon"], pids["pump"])
    wait_for(group.status, lambda s: not s.running, what="the group to read as not running")
    # Reads change nothing that the next start needs.
    repr(group)
    assert immortal.attach("twice").status().stale
    # The target survived both: it is an orphan now, still holding the target lock.
    assert is_alive(pids["target"], orphan_start)
    # Another command: the orphan is ended, not adopted (tests/test_adopt.py adopts).
    again = started(TALKER, ["--cwd"], name="twice", monitor="recorder",
                    options=recorder.options)
    assert again.adopted is None
    new = again.pids
    assert new["target"] != pids["target"]
    assert not is_alive(pids["target"], orphan_start)
    targets = [p for p in descendants() if "talker.py" in cmdline(p)]
    assert targets == [new["target"]]


def test_stale_state_after_killing_the_whole_group(started, recorder):
    group = started(TALKER, [], name="stale", monitor="recorder", options=recorder.options)
    pids = group.pids
    kill_at_once(*pids.values())
    status = wait_for(group.status, lambda s: not s.running, what="the group to stop running")
    assert status.stale and status.state not in ("stopped", "fatal")
    assert str(status).splitlines()[0] == \
        "stale: not running (its supervisors were killed without a stop)"
    assert group.pids == {}  # nothing left that anyone could signal
    with pytest.raises(immortal.NotRunning):
        group.restart()
    final = group.stop()  # signals nothing: the recorded pids are proven dead
    assert not final.running and final.state == "stopped"
    assert "stale state removed" in final.reason and final.orphans == []
    assert str(final).splitlines()[0] == f"stale: not running ({final.reason})"
    again = started(TALKER, [], name="stale", monitor="recorder", options=recorder.options)
    assert again.status().running and again.pids["target"] not in pids.values()


def test_a_descendant_holding_the_target_lock_delays_the_respawn(started, recorder):
    group = started(TALKER, ["--heir"], monitor="recorder", options=recorder.options,
                    policy={"min_uptime": 0.0, "backoff_initial": 0.05, "backoff_max": 0.2})
    first = group.pids["target"]
    heir = int(next(line.split()[1] for line in wait_for(
        lambda: lines(recorder), lambda ls: any(x.startswith("heir ") for x in ls))
        if line.startswith("heir ")))
    os.kill(first, signal.SIGKILL)
    status = wait_for(group.status, lambda s: s.last_exit is not None
                      and s.last_exit.error is not None, what="a refused spawn")
    assert "target.lock" in status.last_exit.error
    assert "target" not in group.pids  # nothing was spawned beside the heir
    os.kill(heir, signal.SIGKILL)
    wait_for(group.status, lambda s: s.pids.get("target") not in (None, first),
             what="the respawn once the heir is gone")


def test_full_disk_does_not_hurt_the_target(started, tmp_path):
    group = started(TALKER, ["--out", "5"], options={"output": "/dev/full"},
                    policy={"min_uptime": 0.0})
    pids = group.pids
    log = group.directory / "pump.log"
    text = wait_for(log.read_text, lambda t: "No space left on device" in t,
                    what="the write failure report")
    assert text.count("cannot write /dev/full") == 1  # rate-limited
    status = group.status()
    assert status.running and status.pids == pids and status.restarts == 0


def test_removed_log_directory_recovers(started, tmp_path):
    logdir = tmp_path / "logs"
    logdir.mkdir()
    out = logdir / "out.log"
    group = started(TALKER, [], options={"output": str(out)}, policy={"min_uptime": 0.0})
    wait_for(lambda: out.read_text() if out.exists() else "", lambda t: "ready" in t)
    out.unlink()
    logdir.rmdir()
    os.kill(group.pids["target"], signal.SIGKILL)  # events and lines while it is gone
    wait_for(group.status, lambda s: s.restarts == 1 and s.state == "running")
    logdir.mkdir()
    os.kill(group.pids["target"], signal.SIGKILL)
    text = wait_for(lambda: out.read_text() if out.exists() else "",
                    lambda t: "ready" in t and "lines dropped" in t, timeout=SHORT,
                    what="writing to resume in the recreated directory")
    assert "output resumed" in text
    assert group.status().running


def test_crash_loop_costs_little_cpu(started):
    group = started(TALKER, ["--exit", "1"],
                    policy={"backoff_initial": 0.05, "backoff_max": 0.4})
    wait_for(group.status, lambda s: s.restarts >= 3, what="a crash loop")
    pids = group.pids
    roles = [pids["daemon"], pids["pump"]]
    before = sum(cpu_seconds(p) for p in roles)
    begun = time.monotonic()
    wait_for(lambda: time.monotonic() - begun, lambda elapsed: elapsed >= 3.0, timeout=SHORT)
    used = sum(cpu_seconds(p) for p in roles) - before
    # Several restarts a second, each a spawn: far from a busy loop (a core would be 3 s).
    assert used < 0.6, f"daemon + pump used {used:.2f} s of CPU in 3 s of crash loop"


# The syscalls a selector waits in, on the architectures this check knows: (number, index
# of the timeout argument, the value of "no timeout" in it).
_WAITS = {"x86_64": {232: (3, 0xFFFFFFFF), 281: (3, 0xFFFFFFFF), 441: (3, 0)},
          "aarch64": {22: (3, 0xFFFFFFFF), 441: (3, 0)}}


def waits_for_ever(pid: int) -> bool:
    """Whether ``pid``'s main thread is blocked in epoll with no timeout (its wait ends
    only when something happens), from /proc/PID/syscall."""
    with open(f"/proc/{pid}/syscall") as handle:
        fields = handle.read().split()
    known = _WAITS[platform.machine()]
    if not fields or not fields[0].isdigit() or int(fields[0]) not in known:
        return False
    index, forever = known[int(fields[0])]
    return int(fields[1 + index], 16) & 0xFFFFFFFF == forever


def test_an_idle_group_waits_with_no_timeout(started):
    """No polling timer: once the group is quiet, daemon and pump both sleep in their
    selector until something happens. (What an idle group costs is bench's idle row; the
    loop's timeouts are tested with a fake clock in test_loop.)"""
    if platform.machine() not in _WAITS or not os.path.exists(f"/proc/{os.getpid()}/syscall"):
        pytest.skip("no /proc/PID/syscall, or its syscall numbers are not known here")
    group = started(TALKER, ["--out", "3"])  # some output: the stall watch wakes, then rests
    wait_for(group.status, lambda s: s.state == "running")
    pids = group.pids
    roles = [pids["daemon"], pids["pump"]]
    # The stall watch looks at the pump for a period or two after the target's last output.
    wait_for(lambda: [waits_for_ever(pid) for pid in roles], all, timeout=LONG,
             what="the daemon and the pump to wait with no timeout")


def test_a_stop_whose_supervisors_are_killed_meanwhile_is_how_the_group_ended(started):
    """The daemon and the pump killed while a stop waits for a target that ignores TERM:
    the stop ends what they left, and the group reads as stopped by it, not as killed
    without a stop."""
    group = started(TALKER, ["--ignore-term"], name="midstop", ready="line:^ready",
                    stop_timeout=30.0)
    pids = group.pids
    grace = group.begin_stop(timeout=30.0)
    wait_for(group.status, lambda s: s.state == "stopping", LONG, what="the stop under way")
    kill_at_once(pids["daemon"], pids["pump"])
    final = group.finish_stop(grace)
    assert (final.state, final.reason) == ("stopped", LEFT_ENDED), final
    assert final.orphans == [pids["target"]] and not is_alive(pids["target"], None)
    assert not final.stale and "killed without a stop" not in str(final)
