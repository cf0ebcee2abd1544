"""immortal.exec: a program run to its end, its output read, and nothing it started left
running: not at a timeout, not past max_buffer, not once it exits. The suite runs as a
child subreaper (conftest): the tests check that no process of the call's tree runs on,
wherever it was re-parented, and the call itself never relies on being one."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

import immortal
from conftest import SHORT, proc_state, wait_for

pytestmark = pytest.mark.timeout(60)

# A grandchild in a session of its own that ignores SIGTERM, its pid on stdout.
ESCAPER = """
import os, signal, sys, time
pid = os.fork()
if pid == 0:
    os.setsid()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(os.getpid(), flush=True)
    time.sleep(3600)
    os._exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
time.sleep(float(sys.argv[1]))
"""


def gone(pid: int) -> bool:
    return proc_state(pid) in (None, "Z")


def test_the_output_and_exit_status() -> None:
    result = immortal.exec(sys.executable, ["-c", "import sys\nprint('out')\n"
                                            "print('err', file=sys.stderr)\nsys.exit(3)"])
    assert (result.stdout, result.stderr) == (b"out\n", b"err\n")
    assert isinstance(result.status, immortal.ExitStatus)
    assert result.status.code == 3 and result.returncode == 3
    assert result.status.pid and gone(result.status.pid)


def test_env_cwd_and_a_program_on_path(tmp_path: Path) -> None:
    result = immortal.exec("sh", ["-c", "pwd; echo $ONLY"], env={"ONLY": "me",
                                                                 "PATH": os.defpath},
                           cwd=tmp_path)
    assert result.stdout.decode().split() == [str(tmp_path), "me"]
    assert immortal.exec("/bin/sh", ["-c", "kill -9 $$"]).status.signal == signal.SIGKILL


def test_a_grandchild_that_ignores_term_dies_at_the_timeout() -> None:
    """A 1 s timeout: back within 1.5 s, with what was read, and nothing left running."""
    begun = time.monotonic()
    with pytest.raises(immortal.ExecTimeout) as caught:
        immortal.exec(sys.executable, ["-c", ESCAPER, "3600"], timeout=1)
    took = time.monotonic() - begun
    assert took <= 1.5, took
    error = caught.value
    assert isinstance(error, TimeoutError) and isinstance(error, immortal.ImmortalError)
    grandchild = int(error.stdout.split()[0])
    assert gone(grandchild), f"the grandchild {grandchild} runs on"
    assert error.status is not None and error.status.signal == signal.SIGKILL
    assert gone(error.status.pid)
    assert "ran past its timeout of 1 s" in str(error)


def test_what_the_program_leaves_running_is_ended_when_it_exits() -> None:
    result = immortal.exec(sys.executable, ["-c", ESCAPER, "0"], timeout=SHORT)
    assert result.status.code == 0
    assert gone(int(result.stdout.split()[0]))


def test_output_past_max_buffer_ends_the_tree() -> None:
    flood = ("import os, sys, time\n"
             "if os.fork() == 0:\n"
             "    os.setsid()\n"
             "    while True: sys.stdout.write('x' * 4096); sys.stdout.flush()\n"
             "time.sleep(3600)\n")
    with pytest.raises(immortal.OutputTooLarge) as caught:
        immortal.exec(sys.executable, ["-c", flood], max_buffer=100_000, timeout=SHORT)
    error = caught.value
    assert 100_000 < len(error.stdout) + len(error.stderr) <= 100_001
    assert error.status is not None and error.status.signal == signal.SIGKILL


def test_a_caller_that_is_no_subreaper_ends_the_tree_too() -> None:
    """The call made by a fresh interpreter (not a subreaper: the flag is not inherited):
    its escaped grandchild is still found and killed."""
    code = ("import sys, immortal\n"
            "try:\n"
            f"    immortal.exec(sys.executable, ['-c', {ESCAPER!r}, '3600'], timeout=1)\n"
            "except immortal.ExecTimeout as exc:\n"
            "    print(exc.stdout.split()[0].decode())\n")
    result = immortal.exec(sys.executable, ["-c", code], timeout=SHORT)
    assert result.status.code == 0, result.stderr
    assert gone(int(result.stdout))


def test_bad_arguments_are_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(immortal.TargetNotFound):
        immortal.exec(tmp_path / "missing")
    with pytest.raises(immortal.InvalidSpec, match="'timeout' must be a number more than 0 "):
        immortal.exec("true", timeout=0)
    with pytest.raises(immortal.InvalidType, match="'max_buffer'"):
        immortal.exec("true", max_buffer=1.5)
    with pytest.raises(immortal.InvalidType, match="'args' must be a list"):
        immortal.exec("echo", "hi")


def test_a_manager_kills_its_execs_in_flight() -> None:
    manager = immortal.Manager(stop_on_sigterm=False)
    assert manager.exec("echo", ["x"]).stdout == b"x\n"
    found: dict[str, object] = {}

    def run() -> None:
        found["result"] = manager.exec(sys.executable, ["-c", ESCAPER, "3600"])

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(lambda: manager._running, bool, SHORT, what="the exec to start")
    running = next(iter(manager._running))
    wait_for(lambda: os.path.exists(f"/proc/{running.pid}"), bool, what="its process")
    manager.kill_all()
    thread.join(SHORT)
    assert not thread.is_alive()
    result = found["result"]
    assert isinstance(result, immortal.ExecResult)
    assert result.status.signal == signal.SIGKILL
    manager.close()
