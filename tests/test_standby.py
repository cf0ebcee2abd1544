"""The first role started ahead of time (``immortal run``): used, cancelled, or orphaned.

Real interpreters and sockets: the standby is a real ``python -m immortal._role standby``
child of this process, and a start through it is a real detached group.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import immortal
from immortal import standby
from conftest import LONG, SHORT, TALKER, descendants, wait_for

pytestmark = pytest.mark.timeout(120)


def test_start_uses_a_prepared_standby(home):
    ready = standby.prepare("daemon")
    assert ready is not None
    group = immortal.start(TALKER, ["--out", "1"], stop_timeout=5.0)
    try:
        assert standby.claim("daemon") is None  # taken by that start
        # It got its go: it detached (the first process exits 0) instead of being killed.
        assert ready.popen.wait(timeout=SHORT) == 0
        status = group.status()
        assert set(status.pids) == {"daemon", "pump", "target"}
        assert status.pids["daemon"] in descendants()
    finally:
        ready.cancel()  # a no-op now
        group.stop(timeout=LONG)
    assert not group.status().running


def test_a_failed_check_cancels_the_standby_and_leaves_nothing(home):
    ready = standby.prepare("daemon")
    assert ready is not None
    with pytest.raises(immortal.MonitorNotFound):
        immortal.start(TALKER, monitor="no-such-monitor")
    # Checks fail before the launch: the standby is still pending, and the caller ends it.
    assert standby.claim("daemon") is ready
    ready.cancel()
    assert ready.popen.returncode is not None  # reaped
    assert ready.popen.pid not in descendants()
    assert not list(home.iterdir())  # nothing created


def test_a_standby_whose_caller_goes_away_exits_by_itself(home):
    ready = standby.prepare("pump")
    assert ready is not None
    assert standby.claim("pump") is ready
    ready.sock.close()  # what the caller's death does to its end
    ready.sock = None
    assert ready.popen.wait(timeout=SHORT) == 0
    assert not list(home.iterdir())


def test_the_command_with_bad_input_leaves_no_standby_behind(home):
    before = set(descendants())
    result = subprocess.run([sys.executable, "-m", "immortal", "run", TALKER, "-m", "nosuch"],
                            capture_output=True, text=True, timeout=LONG,
                            env={**os.environ, "IMMORTAL_HOME": str(home)})
    assert result.returncode != 0
    assert "monitor 'nosuch' is not installed" in result.stderr
    # The command reaped its standby: nothing of it came back to us (the subreaper).
    wait_for(lambda: set(descendants()) - before, lambda left: not left, SHORT,
             "processes the command left")
    assert not list(home.iterdir())


def test_a_group_started_by_the_command_has_a_titled_daemon(home):
    env = {**os.environ, "IMMORTAL_HOME": str(home)}
    result = subprocess.run([sys.executable, "-m", "immortal", "run", TALKER, "-n", "sb"],
                            capture_output=True, text=True, timeout=LONG, env=env)
    assert result.returncode == 0, result.stderr
    group = immortal.attach("sb")
    try:
        assert group.status().running
        daemon = group.status().pids["daemon"]
        wait_for(lambda: _cmdline(daemon), lambda line: line.startswith("immortal: daemon "),
                 SHORT, "the daemon's title")
    finally:
        group.stop(timeout=LONG)


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()


@pytest.mark.parametrize("argv, role", [
    (["run", "app.py"], "daemon"),
    (["run", "-s", "unattached", "app.py"], "pump"),
    (["run", "--strategy=unattached", "app.py"], "pump"),
    (["run", "--strat", "daemon", "app.py"], "daemon"),
    (["run", "-sunattached", "app.py"], "pump"),
    (["run", "-s", "development", "app.py"], None),
    (["run", "--strategy", "development", "app.py"], None),
    (["run", "app.py", "--", "-s", "development"], "daemon"),  # the target's, not ours
    (["run", "--help"], None),
    (["status", "app"], None),
    ([], None),
])
def test_the_command_line_is_glanced_at_for_the_role(argv, role):
    standby.early(argv)
    try:
        prepared = standby.pending_all()
        assert [s.role for s in prepared] == ([role] if role else [])
    finally:
        for waiting in standby.pending_all():
            waiting.cancel()
            assert waiting.popen.returncode is not None
