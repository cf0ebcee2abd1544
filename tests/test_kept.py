"""The target as the daemon keeps it between pumps (``immortal.kept``): what the pumps say
of it, what the next pump is handed, and whether one is left after a pump's death."""

from __future__ import annotations

import os
import time

from immortal.events import ExitStatus
from immortal.kept import KeptTarget
from immortal.roles import Adopt, Exited, Spawning, Started, Target


def test_what_the_pumps_say_names_the_target():
    kept = KeptTarget(None)
    assert (kept.pid, kept.alive(), kept.adopt()) == (None, False, None)
    kept.heard(Spawning(1234))
    assert kept.spawning == 1234 and kept.pid is None
    kept.heard(Target(42, 1000.0))
    assert (kept.pid, kept.started, kept.spawning, kept.alive()) == (42, 1000.0, None, True)
    kept.heard(Exited(41))  # not ours
    kept.heard(Started())  # not about the target
    assert kept.pid == 42
    kept.heard(Exited(42))
    assert (kept.pid, kept.started, kept.alive()) == (None, None, False)


def test_a_target_reaped_with_no_pump_is_handed_to_the_next_with_its_exit():
    kept = KeptTarget(Adopt(42, time.time() - 5.0))
    status = kept.reaped(ExitStatus(code=3, pid=42))
    assert status.code == 3 and 4.0 < status.uptime < 60.0
    kept.exit = status
    assert not kept.alive() and kept.adopt() == Adopt(42, kept.started, status)
    kept.handed_over()
    assert (kept.pid, kept.exit, kept.adopt()) == (None, None, None)


def test_a_live_target_stays_known_after_a_hand_over():
    kept = KeptTarget(Adopt(42, 1000.0))
    kept.handed_over()
    assert kept.pid == 42 and kept.alive()
    assert KeptTarget(None).reaped(ExitStatus(code=1)) == ExitStatus(code=1)  # no start


def test_a_known_target_not_reparented_to_us_is_gone():
    """After a pump's death the target is our child (we are the subreaper); one that is
    not (this test process's own pid stands for it) has died already."""
    kept = KeptTarget(Adopt(os.getpid(), 1000.0))
    kept.heard(Spawning(1))
    assert kept.left(pump_running=True) is False and kept.pid is None
    assert kept.spawning == 1  # a pump still runs: nothing of its spawn is looked for
