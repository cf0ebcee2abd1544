"""The pipe holder: a target that closed every inherited fd outlives both supervisors
killed together, writing on, and the next start adopts it; the holder never outlives the
group, and a holder killed is replaced."""

from __future__ import annotations

import os
import signal

import pytest

from conftest import SHORT, kill_at_once, proc_state, wait_for
from immortal import orphans
from immortal._linux import is_alive
from test_adopt import adopted, no_gap, orphan, targets

pytestmark = pytest.mark.timeout(120)


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
