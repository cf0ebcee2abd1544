"""Both supervisors of a group killed while its target runs: the next start of the name
adopts the living target (same pid, same pipes) when it runs the same command, and ends it
to spawn anew when the command changed."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from conftest import SHORT, descendants, kill_at_once, wait_for
from immortal._linux import is_alive, pipe_backlog, process_start_time

pytestmark = pytest.mark.timeout(120)

COUNTER = """\
import os, sys, time
args = sys.argv[1:]
if args[:1] == ["close"]:
    os.closerange(3, 65536)  # as many daemons do: every fd immortal passed goes
go = args[1] if len(args) > 1 else None  # while this file is missing, it writes nothing
n = 0
paused = False
while True:
    if go and not os.path.exists(go):
        if not paused:
            os.write(1, b"paused\\n")
            paused = True
        time.sleep(0.01)
        continue
    paused = False
    n += 1
    os.write(1, f"n {n}\\n".encode())
    time.sleep(0.05)
"""


def counted(recorder, pump: int | None = None) -> list[int]:
    """The counter of each line the recorder got (from ``pump`` only, if given)."""
    return [int(e["line"].split()[1]) for e in recorder.events()
            if e["hook"] == "stdout" and e["line"].startswith("n ")
            and (pump is None or e["pump"] == pump)]


def targets(program: Path) -> list[int]:
    found = []
    for pid in descendants():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if str(program).encode() in handle.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def kill_supervisors(group) -> tuple[int, int]:
    """SIGKILL every supervisor of ``group``; its target (pid, start time)."""
    pids = group.pids
    target = (pids["target"], process_start_time(pids["target"]))
    roles = [pids[role] for role in ("daemon", "pump") if role in pids]
    kill_at_once(*roles)
    wait_for(lambda: [is_alive(pid, None) for pid in roles], lambda alive: not any(alive),
             what="the supervisors to be gone")
    return target


def orphan(started, tmp_path: Path, recorder, name: str, *args: str,
           strategy: str = "daemon", go: Path | None = None):
    """A group whose supervisors were all SIGKILLed while its counter target runs on;
    returns its program, its target (pid, start time), the lines its pump delivered, and
    the group's arguments. Lines the target wrote since wait in its pipe; with ``go``, the
    target is made quiet first (``go`` removed) and writes nothing meanwhile."""
    program = tmp_path / "counter.py"
    program.write_text(COUNTER)
    kwargs = dict(name=name, monitor="recorder", options=recorder.options, strategy=strategy)
    group = started(str(program), list(args), **kwargs)
    wait_for(lambda: counted(recorder), lambda ns: len(ns) >= 3, what="the first lines")
    if go is not None:
        go.unlink()
        recorder.wait_for(lambda ev: any(e.get("line") == "paused" for e in ev))
    target = kill_supervisors(group)
    before = counted(recorder)
    if go is None:
        # Lines written while no supervisor runs wait in the pipe (looked at, never read).
        pipe = os.open(f"/proc/{target[0]}/fd/1", os.O_RDONLY | os.O_NONBLOCK)
        try:
            wait_for(lambda: pipe_backlog(pipe), lambda size: size >= 3 * len("n 10\n"),
                     what="lines waiting in the pipe")
        finally:
            os.close(pipe)
    assert is_alive(*target)
    return program, target, before, kwargs


def adopted(again, recorder, target) -> int:
    """Check that ``again`` adopted ``target``; its pump's pid."""
    assert again.pids["target"] == target[0] and is_alive(*target)
    assert again.adopted == target[0]
    pump = again.pids["pump"]
    events = recorder.wait_for(lambda ev: any(e["hook"] == "adopt" and e["pump"] == pump
                                              for e in ev))
    mine = [e["hook"] for e in events if e["pump"] == pump]
    assert mine[:2] == ["setup", "adopt"] and "spawn" not in mine
    assert next(e for e in events if e["pump"] == pump)["why"] == "pump start"
    return pump


def no_gap(recorder, before: list[int], pump: int) -> None:
    """The new pump's lines follow the dead one's: those that waited in the pipe first,
    then every line written since, none missing."""
    last = before[-1]
    new = wait_for(lambda: counted(recorder, pump), lambda ns: len(ns) >= 10 and
                   ns[-1] >= last + 10, what="lines after the adoption")
    assert new == list(range(new[0], new[0] + len(new))), "a line is missing"
    # At most the one line the killed pump had read but not delivered is lost.
    assert last < new[0] <= last + 2, (before[-3:], new[:3])


def test_the_next_run_adopts_the_orphan_and_loses_no_line_of_its_pipe(
        started, tmp_path, recorder):
    program, target, before, kwargs = orphan(started, tmp_path, recorder, "adoptee")
    again = started(str(program), [], **kwargs)
    pump = adopted(again, recorder, target)
    no_gap(recorder, before, pump)
    status = again.status()
    assert status.running and status.state == "running"
    assert abs(status.target_started_at - before_start(target)) < 2.0
    assert targets(program) == [target[0]]


def before_start(target) -> float:
    """The wall-clock start of ``target`` from its kernel start time."""
    import time

    from immortal._linux import boot_ticks

    return time.time() - (boot_ticks() - target[1]) / os.sysconf("SC_CLK_TCK")


def test_stop_ends_the_adopted_target_and_the_group(started, tmp_path, recorder):
    program, target, before, kwargs = orphan(started, tmp_path, recorder, "stopper")
    again = started(str(program), [], **kwargs)
    pump = adopted(again, recorder, target)
    final = again.stop(timeout=SHORT)
    assert final.state == "stopped" and not final.running
    assert not is_alive(*target)
    assert targets(program) == []
    exits = [e for e in recorder.events() if e["hook"] == "exit" and e["pump"] == pump]
    assert [e["pid"] for e in exits] == [target[0]]


def test_the_adopted_targets_death_is_noticed_and_a_new_one_spawned(
        started, tmp_path, recorder):
    program, target, before, kwargs = orphan(started, tmp_path, recorder, "dier")
    again = started(str(program), [], **kwargs, policy={"min_uptime": 0.0})
    pump = adopted(again, recorder, target)
    os.kill(target[0], signal.SIGKILL)
    status = wait_for(again.status, lambda s: s.pids.get("target") not in (None, target[0]),
                      what="a new target")
    assert status.restarts == 1 and "unknown" in str(status.last_exit)
    events = recorder.wait_for(lambda ev: any(e["hook"] == "respawn" for e in ev))
    assert [e["pid"] for e in events if e["hook"] == "exit" and e["pump"] == pump] \
        == [target[0]]
    wait_for(lambda: 1 in counted(recorder, pump), bool, what="the new target's first line")
    assert targets(program) == [status.pids["target"]]


def test_a_changed_command_ends_the_orphan_and_spawns_anew(started, tmp_path, recorder):
    program, target, before, kwargs = orphan(started, tmp_path, recorder, "changed")
    again = started(str(program), ["other"], **kwargs)
    assert again.adopted is None
    new = again.pids["target"]
    assert new != target[0] and not is_alive(*target)
    assert targets(program) == [new]
    log = (Path(again.status().directory) / "daemon.log").read_text()
    assert f"the target {target[0]} left running by a dead group is ended, not adopted: " \
           "its command changed" in log


def test_a_run_from_another_environment_adopts_the_orphan(started, tmp_path, recorder):
    # Another shell, another environment: still the same program, so it is not killed;
    # the new environment is the one of its next restart.
    program, target, before, kwargs = orphan(started, tmp_path, recorder, "elsewhere")
    again = started(str(program), [], **kwargs, env={**os.environ, "ANOTHER_SHELL": "1"})
    adopted(again, recorder, target)
    log = (Path(again.status().directory) / "daemon.log").read_text()
    assert "adopted with the environment it was started with" in log


def test_a_target_that_closed_every_inherited_fd_is_adopted(started, tmp_path, recorder):
    # Quiet while no supervisor runs: it closed the pipes' read ends it was given, so a
    # write with no reader left would kill it (EPIPE).
    go = tmp_path / "go"
    go.touch()
    program, target, before, kwargs = orphan(started, tmp_path, recorder, "closer", "close",
                                             str(go), go=go)
    assert not os.path.exists(f"/proc/{target[0]}/fd/3")  # target.lock and pipes: gone
    again = started(str(program), ["close", str(go)], **kwargs)
    pump = adopted(again, recorder, target)
    go.touch()
    no_gap(recorder, before, pump)
    assert targets(program) == [target[0]]


def test_unattached_the_next_run_adopts_the_orphan_of_a_killed_pump(
        started, tmp_path, recorder):
    program, target, before, kwargs = orphan(started, tmp_path, recorder, "alone",
                                             strategy="unattached")
    again = started(str(program), [], **kwargs, policy={"min_uptime": 0.0})
    pump = adopted(again, recorder, target)
    no_gap(recorder, before, pump)
    os.kill(target[0], signal.SIGKILL)  # its death is seen without a daemon
    wait_for(again.status, lambda s: s.pids.get("target") not in (None, target[0]),
             what="a new target")
    final = again.stop(timeout=SHORT)
    assert final.state == "stopped" and targets(program) == []


def test_run_says_it_adopted_the_target(started, tmp_path, recorder, capsys):
    from immortal.cli import main

    program, target, before, kwargs = orphan(started, tmp_path, recorder, "told")
    capsys.readouterr()
    try:
        assert main(["run", "-n", "told", "-m", "recorder", "-o", f"path={recorder.path}",
                     str(program)]) == 0
        assert f"adopted running target {target[0]}" in capsys.readouterr().out
    finally:
        assert main(["stop", "told"]) == 0
    assert not is_alive(*target)


def test_a_pump_killed_after_the_adoption_hands_the_target_to_the_next(
        started, tmp_path, recorder):
    program, target, before, kwargs = orphan(started, tmp_path, recorder, "handed")
    again = started(str(program), [], **kwargs)
    pump = adopted(again, recorder, target)
    os.kill(pump, signal.SIGKILL)
    status = wait_for(again.status, lambda s: s.pids.get("pump") not in (None, pump),
                      what="a new pump")
    assert status.pids["target"] == target[0] and is_alive(*target)
    final = again.stop(timeout=SHORT)
    assert final.state == "stopped" and not is_alive(*target) and targets(program) == []


REDIRECTED = """\
import os, time
print("ready", flush=True)
null = os.open(os.devnull, os.O_WRONLY)
os.dup2(null, 1)  # its output no longer goes to the group's pipes
os.dup2(null, 2)
while True:
    time.sleep(3600)
"""


def test_an_orphan_whose_output_is_no_pipe_any_more_is_ended_not_adopted(
        started, tmp_path, recorder):
    program = tmp_path / "redirected.py"
    program.write_text(REDIRECTED)
    kwargs = dict(name="nullout", monitor="recorder", options=recorder.options)
    group = started(str(program), [], **kwargs)
    recorder.wait_for(lambda ev: any(e.get("line") == "ready" for e in ev))
    pid = group.pids["target"]
    wait_for(lambda: os.readlink(f"/proc/{pid}/fd/2"), lambda link: link == os.devnull,
             what="the target's output on /dev/null")
    target = kill_supervisors(group)
    again = started(str(program), [], **kwargs)
    assert again.adopted is None and again.pids["target"] != target[0]
    assert not is_alive(*target) and targets(program) == [again.pids["target"]]
    log = (Path(again.status().directory) / "daemon.log").read_text()
    assert f"cannot adopt the running target {target[0]} (fd 1 of process {target[0]} " \
           "is not a pipe); it is ended and a new one spawned" in log
