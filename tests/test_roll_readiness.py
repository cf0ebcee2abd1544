"""A rolling restart's ``line:`` readiness reads the replacement's own lines (``spare``):
never a line its old process prints meanwhile; and every line of both reaches the
monitors once, as their instance's, through supervisors' deaths during the roll too; a
signal during a roll reaches the old processes and the replacements alike."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

import immortal
from conftest import LONG, PROGRAMS, SHORT, wait_for

pytestmark = pytest.mark.timeout(120)

GENERATIONS = str(PROGRAMS / "generations.py")


def pids(status: immortal.Status) -> dict[int, int]:
    return {entry.instance: entry.pid for entry in status.instances if entry.pid}


def test_a_ready_line_of_the_old_process_does_not_make_the_replacement_ready(
        started, tmp_path):
    group = started(GENERATIONS, [str(tmp_path / "state"), "--old-ready", "--interval",
                                  "0.05"], workers=2, name="gen", ready="line:^serving",
                    ready_timeout=2.0, stop_timeout=SHORT)
    before = pids(group.status())
    with pytest.raises(immortal.StartError, match="instance 0") as failure:
        group.restart()
    assert "not ready within 2" in str(failure.value), failure.value
    status = group.status()
    assert status.roll["state"] == "failed" and status.roll["replaced"] == []
    assert pids(status) == before  # the old processes serve on


def test_a_replacement_that_prints_the_ready_line_is_ready(started, tmp_path):
    group = started(GENERATIONS, [str(tmp_path / "state"), "--old-ready", "--new-ready",
                                  "--delay", "0.3", "--interval", "0.05"], workers=2,
                    name="gen", ready="line:^serving", ready_timeout=LONG,
                    stop_timeout=SHORT)
    before = pids(group.status())
    group.restart()
    status = group.status()
    assert status.roll["state"] == "done" and sorted(status.roll["replaced"]) == [0, 1]
    assert not set(pids(status).values()) & set(before.values())


def delivered(path: Path) -> dict[int, dict[int, list[tuple[int, str]]]]:
    """The numbered lines the jsonl monitor wrote: by pid, (instance, stream) of each n."""
    found: dict[int, dict[int, list[tuple[int, str]]]] = {}
    for raw in path.read_text().splitlines():
        record = json.loads(raw)
        words = str(record.get("line", "")).split()
        if record.get("stream") in ("stdout", "stderr") and len(words) == 3 \
                and words[0] == "line":
            found.setdefault(int(words[1]), {}).setdefault(int(words[2]), []).append(
                (record.get("instance", 0), record["stream"]))
    return found


@pytest.mark.parametrize("killed", [None, "pump", "daemon"])
def test_every_line_of_the_old_and_the_new_process_reaches_the_monitor_once(
        started, tmp_path, killed):
    output = tmp_path / "out.jsonl"
    # The replacements are ready a second after their spawn: time to kill a supervisor.
    group = started(GENERATIONS, [str(tmp_path / "state"), "--old-ready", "--new-ready",
                                  "--delay", "1", "--interval", "0.002"], workers=2,
                    name="gen", ready="line:^serving", ready_timeout=LONG,
                    stop_timeout=SHORT, monitor="jsonl", options={"output": str(output)})
    before = pids(group.status())
    if killed is None:
        group.restart(batch=2)
    else:
        victim = group.status().pids[killed]
        os.kill(group.status().pids["daemon"], signal.SIGHUP)
        wait_for(group.status, lambda s: (s.roll or {}).get("replacements"), SHORT,
                 what="a replacement spawned")
        os.kill(victim, signal.SIGKILL)
        wait_for(group.status, lambda s: (s.roll or {}).get("state") == "done"
                 and s.pids.get(killed) not in (None, victim), LONG, what="the roll done")
    after = pids(group.status())
    assert not set(after.values()) & set(before.values())
    group.stop()
    lines = delivered(output)
    for k in (0, 1):
        for pid in (before[k], after[k]):
            numbers = lines.get(pid, {})
            assert numbers, f"no line of process {pid} (instance {k})"
            top = max(numbers)
            missing = [n for n in range(1, top + 1) if n not in numbers]
            assert not missing, f"process {pid}: lines {missing[:10]} missing"
            twice = {n: seen for n, seen in numbers.items() if len(seen) != 1}
            assert not twice, f"process {pid}: lines delivered more than once: {twice}"
            streams = {n: ("stdout" if n % 2 else "stderr") for n in numbers}
            assert all(seen == [(k, streams[n])] for n, seen in numbers.items()), \
                f"process {pid}: a line attributed to another instance or stream"


# Logs its pid to LOG on each USR1, and to STATE.K once it traps it; the first process of
# an instance prints the ready line, its replacements never do (the roll waits for them
# until the group stops).
TRAPPER = """
import os, signal, sys, time
log, state = sys.argv[1], sys.argv[2] + "." + os.environ["IMMORTAL_INSTANCE"]
def got(*_):
    with open(log, "a") as handle:
        handle.write(f"{os.getpid()}\\n")
signal.signal(signal.SIGUSR1, got)
old = not os.path.exists(state)
with open(state, "a") as handle:
    handle.write(f"{os.getpid()}\\n")
if old:
    print("serving", flush=True)
while True:
    time.sleep(60)
"""


def pids_in(path: Path) -> set[int]:
    return set(map(int, path.read_text().split())) if path.exists() else set()


def rolling(group: immortal.Group) -> immortal.Status:
    """Start a roll (a SIGHUP to the daemon, as 'immortal restart' asks); the status once
    a replacement is spawned."""
    os.kill(group.status().pids["daemon"], signal.SIGHUP)
    return wait_for(group.status, lambda s: (s.roll or {}).get("replacements"), SHORT,
                    what="a replacement spawned")


def usr1(group: immortal.Group, status: immortal.Status, answering: bool) -> None:
    """``group.signal("USR1")``; unless ``answering``, with the group's supervisors frozen
    meanwhile: the caller then signals the processes itself."""
    if not answering:
        for role in ("daemon", "pump"):
            os.kill(status.pids[role], signal.SIGSTOP)
    try:
        group.signal("USR1")
    finally:
        if not answering:
            for role in ("daemon", "pump"):
                os.kill(status.pids[role], signal.SIGCONT)


@pytest.mark.parametrize("answering", [True, False])
def test_a_signal_during_a_roll_reaches_the_old_targets_and_the_replacements(
        started, tmp_path, answering):
    program, log, state = tmp_path / "trapper.py", tmp_path / "usr1.log", tmp_path / "state"
    program.write_text(TRAPPER)
    group = started(str(program), [str(log), str(state)], workers=2, name="trap",
                    ready="line:^serving", ready_timeout=LONG)
    old = set(pids(group.status()).values())
    status = rolling(group)
    new = {pid for pid, _ in status.roll["replacements"].values()}
    wait_for(lambda: pids_in(Path(f"{state}.0")), lambda got: new <= got, SHORT,
             what="the replacement trapping USR1")
    usr1(group, status, answering)
    wait_for(lambda: pids_in(log), lambda got: got == old | new, SHORT,
             what=f"USR1 in {sorted(old | new)}")


# Logs its pid to LOG on each USR1. The first process of an instance traps USR1 and prints
# the ready line at once; a replacement does so only once the file GO exists: until then
# a USR1 would end it (its default action).
LATE_TRAPPER = """
import os, signal, sys, time
log, state, go = sys.argv[1], sys.argv[2] + "." + os.environ["IMMORTAL_INSTANCE"], sys.argv[3]
def got(*_):
    with open(log, "a") as handle:
        handle.write(f"{os.getpid()}\\n")
if os.path.exists(state):
    deadline = time.monotonic() + 60
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.01)
signal.signal(signal.SIGUSR1, got)
with open(state, "a") as handle:
    handle.write(f"{os.getpid()}\\n")
print("serving", flush=True)
while True:
    time.sleep(60)
"""


def rolling_late(started, tmp_path: Path):
    """A group of two LATE_TRAPPERs in a roll, its first replacement spawned: the group,
    the USR1 log, the GO file, the status then, the old pids and the replacements'."""
    program, log, state, go = (tmp_path / "late.py", tmp_path / "usr1.log",
                               tmp_path / "state", tmp_path / "go")
    program.write_text(LATE_TRAPPER)
    group = started(str(program), [str(log), str(state), str(go)], workers=2, name="late",
                    ready="line:^serving", ready_timeout=LONG)
    old = set(pids(group.status()).values())
    status = rolling(group)
    first = {pid for pid, _ in status.roll["replacements"].values()}
    return group, log, go, status, old, first


@pytest.mark.parametrize("answering", [True, False])
def test_a_signal_during_a_roll_waits_for_a_replacement_still_starting_up(
        started, tmp_path, answering):
    """A replacement that does not handle the signal yet (it has not set its handler up)
    gets it from the pump once it is ready, instead of dying of it and failing the roll;
    with the supervisors frozen, the caller that signals the targets itself leaves it out.
    The old targets get it at once."""
    group, log, go, status, old, first = rolling_late(started, tmp_path)
    usr1(group, status, answering)
    wait_for(lambda: pids_in(log), lambda got: got == old, SHORT, what="USR1 in the old ones")
    go.touch()
    status = wait_for(group.status, lambda s: (s.roll or {}).get("state") != "rolling",
                      LONG, what="the roll over")
    assert status.roll["state"] == "done", status.roll
    assert first <= set(pids(status).values()) and not old & set(pids(status).values())
    if answering:  # held by the pump until the replacement was ready
        wait_for(lambda: pids_in(log), lambda got: got == old | first, SHORT,
                 what=f"USR1 in {sorted(old | first)}")


def test_a_signal_held_for_a_replacement_outlives_the_pump_that_held_it(started, tmp_path):
    """The pump holding a signal for a replacement still starting up is killed: its
    successor, which resumes the roll, sends it once the replacement is ready (before, it
    was lost with the pump)."""
    group, log, go, status, old, first = rolling_late(started, tmp_path)
    group.signal("USR1")
    wait_for(lambda: pids_in(log), lambda got: got == old, SHORT, what="USR1 in the old ones")
    held = wait_for(group.status, lambda s: (s.roll or {}).get("held"), SHORT,
                    what="the held signal in the status")
    assert {tuple(numbers) for numbers in held.roll["held"].values()} == {(signal.SIGUSR1,)}
    pump = held.pids["pump"]
    os.kill(pump, signal.SIGKILL)
    wait_for(lambda: group.status().pids.get("pump"), lambda pid: pid and pid != pump, LONG,
             what="a new pump")
    go.touch()
    status = wait_for(group.status, lambda s: (s.roll or {}).get("state") != "rolling",
                      LONG, what="the roll over")
    assert status.roll["state"] == "done", status.roll
    assert first <= set(pids(status).values())
    wait_for(lambda: pids_in(log), lambda got: got == old | first, SHORT,
             what=f"USR1 in {sorted(old | first)}")
    assert not status.roll.get("held"), status.roll


def test_takes_signal_reads_what_a_process_handles_or_ignores():
    """What the pump looks at before it signals a replacement not yet ready."""
    import select
    import subprocess
    import sys

    from immortal._linux import takes_signal

    child = subprocess.Popen(
        [sys.executable, "-c", "import signal, sys, time\n"
         "signal.signal(signal.SIGUSR1, lambda *_: None)\n"
         "signal.signal(signal.SIGUSR2, signal.SIG_IGN)\n"
         # its own default, whatever it inherited (nohup ignores SIGHUP)
         "signal.signal(signal.SIGHUP, signal.SIG_DFL)\n"
         "print('set', flush=True)\n"
         "time.sleep(60)\n"], stdout=subprocess.PIPE)
    try:
        assert select.select([child.stdout], [], [], LONG)[0], "the child never set up"
        assert child.stdout.readline() == b"set\n"
        assert takes_signal(child.pid, signal.SIGUSR1)  # handled
        assert takes_signal(child.pid, signal.SIGUSR2)  # ignored
        assert not takes_signal(child.pid, signal.SIGHUP)  # its default ends it
        assert takes_signal(child.pid, signal.SIGWINCH)  # its default does nothing
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert not takes_signal(child.pid, signal.SIGUSR1)  # gone
