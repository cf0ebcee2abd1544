"""A group of several instances of its program (``workers``): each instance supervised on
its own by one daemon and one pump, the fault model held for all of them, each line of
each instance delivered once and marked with its instance, and ``NAME:K`` addressing."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections import defaultdict

import pytest

import immortal
from conftest import LONG, SHORT, wait_for
from immortal._linux import is_alive
from immortal.cli import main

pytestmark = pytest.mark.timeout(120)

# Each instance says who it is, then (with a count) writes numbered lines, a steady stream,
# and waits; USR1 makes it say so.
PROGRAM = """\
import os, signal, sys, time
k = os.environ["IMMORTAL_INSTANCE"]
signal.signal(signal.SIGUSR1, lambda *_: os.write(1, b"usr1 %s\\n" % k.encode()))
if sys.argv[1:2] == ["stubborn"]:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
os.write(1, b"i=%s g=%s\\n" % (k.encode(), os.environ["IMMORTAL_GROUP"].encode()))
count = int(sys.argv[2]) if len(sys.argv) > 2 else 0
for n in range(count):
    os.write(1, b"w %s %06d\\n" % (k.encode(), n))
    time.sleep(0.001)
while True:
    time.sleep(3600)
"""
LINE = re.compile(rb" stdout:(\d+) \| w (\d+) (\d+)$")


def start(started, workers: int = 4, *args: str, **kwargs):
    return started(sys.executable, ["-c", PROGRAM, *args], workers=workers, **kwargs)


def running(group, count: int):
    """The status once ``count`` instances run, each with a live target that has said who
    it is (its USR1 handler is set)."""
    status = wait_for(group.status, lambda s: s.state == "running"
                      and len(s.instances) == count
                      and all(e.state == "running" and e.pid and is_alive(e.pid, e.start_time)
                              for e in s.instances), LONG, what=f"{count} running instances")

    def said(out: bytes) -> bool:
        for entry in status.instances:
            k = entry.instance
            spawned = re.search(rb"event:%d  \| (re)?spawn pid %d\n" % (k, entry.pid), out)
            if not spawned or f"stdout:{k} | i={k} ".encode() not in out[spawned.end():]:
                return False
        return True
    wait_for(lambda: output(group), said, LONG, what="each instance's first line")
    return status


def pids(status) -> dict[int, int]:
    return {entry.instance: entry.pid for entry in status.instances}


def output(group) -> bytes:
    try:
        with open(group.output, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return b""


def numbered(group) -> dict[int, list[int]]:
    """Each instance's numbered lines, in the order the file monitor wrote them."""
    found: dict[int, list[int]] = defaultdict(list)
    for line in output(group).split(b"\n"):
        match = LINE.search(line)
        if match:
            assert match.group(1) == match.group(2), line  # marked with its own instance
            found[int(match.group(1))].append(int(match.group(3)))
    return found


def test_each_instance_runs_with_its_number_its_pid_and_its_marked_lines(started):
    group = start(started, 4, name="web")
    status = running(group, 4)
    assert sorted(pids(status)) == [0, 1, 2, 3]
    assert len(set(pids(status).values())) == 4
    assert "target" not in status.pids and status.spawned == 4
    for k in range(4):
        wait_for(lambda: output(group), lambda out: f"stdout:{k} | i={k} g=web".encode()
                 in out, SHORT, what=f"instance {k}'s first line")
    text = output(group).decode()
    assert all(f"event:{k}  | spawn pid {pid}" in text for k, pid in pids(status).items())
    assert "event  | pump start" in text  # the group's own events are not marked


def test_a_killed_instance_alone_is_restarted(started):
    group = start(started, 4, policy={"min_uptime": 0.0})
    before = pids(running(group, 4))
    os.kill(before[2], signal.SIGKILL)
    after = wait_for(group.status, lambda s: pids(s).get(2) not in (None, before[2])
                     and s.instances[2].state == "running", SHORT, what="instance 2 again")
    now = pids(after)
    assert {k: now[k] for k in (0, 1, 3)} == {k: before[k] for k in (0, 1, 3)}
    assert [e.restarts for e in after.instances] == [0, 0, 1, 0]
    assert after.instances[2].last_exit.signal == signal.SIGKILL
    assert after.instances[2].last_exit.instance == 2
    wait_for(lambda: output(group), lambda out: f"event:2  | exit pid {before[2]}: killed "
             "by SIGKILL".encode() in out, SHORT, what="instance 2's exit event")


def whole(group, before: dict[int, int], gone: set[int]):
    """The status once a live daemon and pump (none of ``gone``) run the same targets."""
    def ready(status) -> bool:
        return (status.running and pids(status) == before
                and all(status.pids.get(role) not in (None, *gone)
                        and is_alive(status.pids[role], status.start_times.get(role))
                        for role in ("daemon", "pump")))
    return wait_for(group.status, ready, LONG, what="the group whole again")


def test_the_pump_and_the_daemon_killed_keep_every_target_and_every_line(started):
    count = 3000
    group = start(started, 4, "steady", str(count))
    before = pids(running(group, 4))
    first = group.status().pids
    wait_for(lambda: numbered(group), lambda lines: len(lines) == 4
             and min(map(len, lines.values())) >= 300, LONG, what="lines flowing")
    os.kill(first["pump"], signal.SIGKILL)
    after_pump = whole(group, before, {first["pump"]})
    wait_for(lambda: numbered(group), lambda lines: min(map(len, lines.values())) >= 1500,
             LONG, what="more lines")
    os.kill(after_pump.pids["daemon"], signal.SIGKILL)
    whole(group, before, {first["pump"], after_pump.pids["daemon"]})
    lines = wait_for(lambda: numbered(group), lambda lines: all(
        len(set(lines[k])) == count for k in range(4)), LONG, what="every line")
    for k in range(4):
        assert lines[k] == list(range(count)), f"instance {k}: lost, repeated or reordered"
    for pid in before.values():
        assert is_alive(pid, None)
    assert [e.restarts for e in group.status().instances] == [0, 0, 0, 0]


def test_a_stop_ends_every_instance_at_once(started):
    group = start(started, 4, "stubborn", stop_timeout=1.5)
    before = pids(running(group, 4))
    began = time.monotonic()
    final = group.stop()
    took = time.monotonic() - began
    assert final.state == "stopped" and not final.running
    assert not any(is_alive(pid, None) for pid in before.values())
    # TERM is ignored by each: one grace period for all, not one after another (6 s).
    assert 1.4 <= took < 4.5, took
    assert all(e.state == "stopped" and e.pid is None for e in final.instances)
    assert {f"target.{k}.lock" for k in (1, 2, 3)} <= set(os.listdir(group.directory))


def test_restart_of_all_and_of_one(started):
    group = start(started, 3, policy={"min_uptime": 0.0})
    before = pids(running(group, 3))
    group.restart(instance=1)
    after_one = pids(group.status())
    assert after_one[1] != before[1]
    assert {k: after_one[k] for k in (0, 2)} == {k: before[k] for k in (0, 2)}
    group.restart()
    after_all = pids(running(group, 3))
    assert all(after_all[k] != after_one[k] for k in range(3))
    with pytest.raises(immortal.InvalidSpec, match="'instance' must be from 0 to 2"):
        group.signal("USR1", instance=3)


def test_the_cli_addresses_one_instance_as_name_colon_k(started, capsys):
    group = start(started, 3, name="api", policy={"min_uptime": 0.0})
    before = pids(running(group, 3))
    assert main(["signal", "api:1", "USR1"]) == 0
    wait_for(lambda: output(group), lambda out: b"stdout:1 | usr1 1" in out, SHORT,
             what="instance 1's USR1")
    assert main(["signal", "api", "USR1"]) == 0
    for k in (0, 2):
        wait_for(lambda: output(group), lambda out: f"stdout:{k} | usr1 {k}".encode() in out,
                 SHORT, what=f"instance {k}'s USR1")
    assert output(group).count(b"usr1 1") == 2
    assert main(["restart", "api:2"]) == 0
    now = pids(running(group, 3))
    assert now[2] != before[2] and now[0] == before[0] and now[1] == before[1]
    capsys.readouterr()
    assert main(["status", "api"]) == 0
    shown = capsys.readouterr().out
    for k in range(3):
        assert re.search(rf"^  api:{k} +pid {now[k]}, running", shown, re.M), shown
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert re.search(rf"^api:2 +running +{now[2]}", listed, re.M), listed
    assert main(["signal", "api:7", "USR1"]) == 2
    assert main(["restart", "api:x"]) == 2


def test_scale_up_keeps_the_running_and_down_retires_the_highest(started, capsys):
    group = start(started, 2, name="pool", stop_timeout=2.0)
    before = pids(running(group, 2))
    grown = group.scale(4)
    assert {k: pids(grown)[k] for k in (0, 1)} == before
    after = pids(running(group, 4))
    # The daemon holds the new instances' files: a new pump adopts all four.
    pump = group.status().pids["pump"]
    os.kill(pump, signal.SIGKILL)
    whole(group, after, {pump})
    assert main(["scale", "pool", "1"]) == 0
    assert "'pool' runs 1 instance(s): target " in capsys.readouterr().out
    status = group.status()
    assert status.instances == [] and status.pids["target"] == after[0]  # a group of one
    assert not any(is_alive(after[k], None) for k in (1, 2, 3))
    text = output(group).decode()
    assert all(f"event:{k}  | exit pid {after[k]}: killed by SIGTERM" in text for k in (1, 2, 3))
    with pytest.raises(immortal.InvalidSpec, match="'workers' must be from 1 to"):
        group.scale(0)


def test_a_daemon_killed_under_a_pump_with_monitor_threads_keeps_every_instance(started):
    """Backpressure "drop" runs a thread per monitor in the pump, which then exec's into
    the daemon (``roles.hand_over``) instead of becoming it in place: every instance's
    files and target go through the exec and the fresh successor pump."""
    group = start(started, 3, backpressure="drop")
    before = pids(running(group, 3))
    daemon = group.status().pids["daemon"]
    os.kill(daemon, signal.SIGKILL)
    after = whole(group, before, {daemon})
    assert [e.restarts for e in after.instances] == [0, 0, 0]
    assert main(["signal", f"{group.name}:2", "USR1"]) == 0
    wait_for(lambda: output(group), lambda out: b"stdout:2 | usr1 2" in out, SHORT,
             what="instance 2's USR1 through the new pump")
