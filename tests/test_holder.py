"""The pipe holder: a target that closed every inherited fd outlives both supervisors
killed together, writing on, and the next start adopts it with the journal the holder
kept (nothing the dead pump had read is lost); the holder never outlives the group, and a
holder killed is replaced."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from conftest import LONG, SHORT, kill_at_once, proc_state, wait_for
from immortal import holder, orphans
from immortal._linux import is_alive
from test_adopt import adopted, kill_supervisors, no_gap, orphan, targets
from test_delivery import numbered, seen

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def with_holder(monkeypatch):
    """The holder is off by default (``holder.ENV``): on for these tests."""
    monkeypatch.setenv(holder.ENV, "1")


def holders(group) -> list[int]:
    return [pid for pid, _ in orphans.holders(group.directory)
            if proc_state(pid) not in (None, "Z")]


def test_a_target_that_closed_its_fds_writes_on_after_both_supervisors_die(
        started, tmp_path, recorder):
    # It writes a line every few hundredths of a second; without a reader left for its
    # pipe, its next write would kill it (EPIPE). `orphan` waits for lines in the pipe.
    program, target, before, kwargs = orphan(started, tmp_path, recorder, "writes", "close")
    assert not os.path.exists(f"/proc/{target[0]}/fd/3")  # the read ends it was given: gone
    again = started(str(program), ["close"], **kwargs)
    pump = adopted(again, recorder, target)
    no_gap(recorder, before, pump)
    assert targets(program) == [target[0]]
    # The new daemon's holder alone: the dead one's is ended.
    wait_for(lambda: holders(again), lambda found: len(found) == 1, what="one holder")


def test_a_holder_left_alone_is_ended_by_the_next_run_or_a_stop(started, tmp_path):
    program = tmp_path / "quiet.py"
    program.write_text("import os, time\nos.closerange(3, 65536)\ntime.sleep(600)\n")
    group = started(str(program), [], name="ends")
    found = wait_for(lambda: holders(group), lambda found: len(found) == 1, what="a holder")
    pids = group.pids
    kill_at_once(pids["daemon"], pids["pump"], pids["target"])
    wait_for(group.status, lambda s: not s.running, what="the group to stop running")
    assert group.orphans() == [] and holders(group) == found  # the group's own, not shown
    again = started(str(program), [], name="ends")
    assert not is_alive(found[0], None) or proc_state(found[0]) == "Z"
    assert len(holders(again)) == 1
    pids = again.pids
    kill_at_once(pids["daemon"], pids["pump"], pids["target"])
    wait_for(again.status, lambda s: not s.running, what="the group to stop running")
    assert again.stop(timeout=SHORT).orphans == []  # nothing of the program's was left
    assert holders(again) == []


def test_a_killed_holder_is_replaced_and_a_stop_ends_it(started, tmp_path):
    program = tmp_path / "quiet.py"
    program.write_text("import time\ntime.sleep(600)\n")
    group = started(str(program), [], name="replaced", workers=2)
    first = wait_for(lambda: holders(group), lambda found: len(found) == 1, what="a holder")
    os.kill(first[0], signal.SIGKILL)
    wait_for(lambda: holders(group), lambda found: len(found) == 1 and found != first,
             what="a new holder")
    group.scale(3)
    wait_for(lambda: holders(group), lambda found: len(found) == 1 and found != first,
             what="one holder after a scale")
    group.stop(timeout=SHORT)
    assert holders(group) == []


def test_what_the_dead_pump_read_but_did_not_deliver_is_delivered_after_the_adoption(
        started, tmp_path):
    # A slow monitor works through a backlog: lines sit in the journal (read by the pump,
    # not delivered yet) and in the pipe when daemon and pump are killed together.
    count = 20000
    path = tmp_path / "slow.txt"
    kwargs = dict(name="backlog", monitors={"plugins.delivery:Lines": {
        "path": str(path), "delay": 0.0003}})
    group = started(sys.executable, numbered(count), **kwargs)
    wait_for(lambda: len(seen(path)), lambda n: 200 <= n, LONG, what="the first lines")
    target = kill_supervisors(group)
    again = started(sys.executable, numbered(count), **kwargs)
    assert again.adopted == target[0]
    lines = wait_for(lambda: seen(path), lambda lines: len(lines) >= count, LONG,
                     what="every line")
    assert lines == [b"line %06d" % n for n in range(count)]
