"""The pipe holder: a target that closed every inherited fd outlives both supervisors
killed together, writing on, and the next start adopts it with the journal the holder
kept (nothing the dead pump had read is lost); the holder never outlives the group, and a
holder killed is replaced."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import sys
from pathlib import Path

import pytest

import immortal

from conftest import LONG, SHORT, kill_at_once, proc_state, wait_for
from immortal import holder, orphans
from immortal._linux import is_alive
from immortal.state import instance_dir
from test_adopt import COUNTER, adopted, counted, kill_supervisors, no_gap, orphan, targets
from test_delivery import numbered, seen

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def with_holder(monkeypatch):
    """The holder is on by default (``holder.ENV`` unset): as a user's groups run."""
    monkeypatch.delenv(holder.ENV, raising=False)


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
    # Ended once the new daemon knows its start is over (a start that fails leaves it).
    wait_for(lambda: proc_state(found[0]), lambda state: state in (None, "Z"),
             what="the dead group's holder ended")
    assert len(holders(again)) == 1
    pids = again.pids
    kill_at_once(pids["daemon"], pids["pump"], pids["target"])
    wait_for(again.status, lambda s: not s.running, what="the group to stop running")
    assert again.stop(timeout=SHORT).orphans == []  # nothing of the program's was left
    assert holders(again) == []


def test_a_start_that_finds_no_holder_of_the_dead_group_says_so(started, tmp_path):
    """The dead group's holder died with it: what its target wrote and no monitor got is
    lost, and the next start's daemon log says so."""
    program = tmp_path / "quiet.py"
    program.write_text("import time\ntime.sleep(600)\n")
    group = started(str(program), [], name="gone")
    found = wait_for(lambda: holders(group), lambda found: len(found) == 1, what="a holder")
    pids = group.pids
    kill_at_once(pids["daemon"], pids["pump"], pids["target"], found[0])
    wait_for(group.status, lambda s: not s.running, what="the group to stop running")
    again = started(str(program), [], name="gone")
    assert "left no pipe holder" in (again.directory / "daemon.log").read_text()


# A target that writes its lines once the flag file is there, and exits as soon as a new
# start of its group has chosen it for adoption (that start rewrites spec.json once it
# has), before the start's first role can claim it.
LEAVING = """\
import os, sys, time
spec, flag = sys.argv[1:3]
os.closerange(3, 65536)
os.write(1, b"ready\\n")
seen = os.stat(spec).st_mtime_ns
written = False
while True:
    if not written and os.path.exists(flag):
        for n in (1, 2, 3):
            os.write(1, f"after {os.getpid()} {n}\\n".encode())
        os.write(2, f"after {os.getpid()} err\\n".encode())
        written = True
    if os.stat(spec).st_mtime_ns != seen:
        sys.exit(0)
    time.sleep(0.001)
"""


def texts(path: Path) -> list[bytes]:
    """The text of each record the ``file`` monitor wrote (lines and events)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return [line.rpartition(b"| ")[2] for line in data.split(b"\n")[:-1]]


def orphan_writes(group, flag: Path) -> dict[str, int]:
    """Kill the group's daemon and pump, then have its target write its lines (``flag``)
    with no pump to read them; the group's pids."""
    pids = group.pids
    kill_at_once(pids["daemon"], pids["pump"])
    for role in ("daemon", "pump"):  # gone, and the group lock with them
        wait_for(lambda: proc_state(pids[role]), lambda state: state in (None, "Z"),
                 what=f"the {role} gone")
    written = bytes_written(pids["target"])
    flag.write_text("")
    wait_for(lambda: bytes_written(pids["target"]), lambda count: count > written,
             what="the orphan's lines written with no pump to read them")
    return pids


def test_a_target_gone_before_its_adoption_leaves_its_lines_to_that_start(started, tmp_path):
    """The start chose the orphan for adoption; it died before the start's daemon could
    claim it: the daemon takes what the holder kept, as it would had it found no target
    (before, those lines were lost)."""
    program = tmp_path / "leaving.py"
    program.write_text(LEAVING)
    flag, out = tmp_path / "write", tmp_path / "out.log"
    args = [str(instance_dir("leaving") / "spec.json"), str(flag)]
    kwargs = dict(name="leaving", options={"output": str(out)})
    group = started(str(program), args, **kwargs)
    wait_for(lambda: texts(out), lambda lines: b"ready" in lines, what="the first line")
    pids = orphan_writes(group, flag)
    again = started(str(program), args, **kwargs)
    assert "cannot adopt the running target" in (again.directory / "daemon.log").read_text()
    theirs = [b"after %d %s" % (pids["target"], end) for end in (b"1", b"2", b"3", b"err")]
    lines = wait_for(lambda: texts(out), lambda got: all(line in got for line in theirs),
                     LONG, what="the dead orphan's lines")
    assert all(lines.count(line) == 1 for line in theirs), lines


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


def test_a_group_started_with_the_holder_turned_off_has_none(started, tmp_path, monkeypatch):
    monkeypatch.setenv(holder.ENV, "0")
    program = tmp_path / "quiet.py"
    program.write_text("import time\ntime.sleep(600)\n")
    group = started(str(program), [], name="unheld")
    assert group.status().running
    assert holders(group) == []
    group.stop(timeout=SHORT)


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


def bytes_written(pid: int) -> int:
    with open(f"/proc/{pid}/io") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("wchar"))


def pause(monkeypatch, tmp_path, point: str):
    """The next daemon to reach ``point`` of its start stops itself there (the test hook
    ``holder.PAUSE``); returns that daemon's pid once it has."""
    flag = tmp_path / f"pause-{point}"
    flag.write_text("")
    monkeypatch.setenv("IMMORTAL_TEST_PAUSE", f"{point} {flag}")

    def paused(group) -> int:
        daemon = group.pids["daemon"]
        wait_for(lambda: (flag.exists(), proc_state(daemon)),
                 lambda seen: seen == (False, "T"), what="the daemon to stop at " + point)
        return daemon
    return paused


def test_a_target_spawned_while_its_new_daemon_is_held_up_outlives_both_supervisors(
        started, tmp_path, recorder, monkeypatch):
    # Daemon and pump killed together at the first instant the pump may spawn: the target,
    # which closes every inherited fd, must already have its pipes held, or its next
    # write fails with no reader left (EPIPE).
    program = tmp_path / "counter.py"
    program.write_text(COUNTER)
    paused = pause(monkeypatch, tmp_path, "pump")
    kwargs = dict(name="early", monitor="recorder", options=recorder.options)
    group = started(str(program), ["close"], **kwargs)
    paused(group)
    wait_for(lambda: counted(recorder), lambda ns: len(ns) >= 3, what="the first lines")
    target = kill_supervisors(group)
    before = counted(recorder)
    # Bytes written (a failed write counts none): three more lines, or its end.
    written = bytes_written(target[0])
    wait_for(lambda: bytes_written(target[0]) if is_alive(*target) else None,
             lambda count: count is None or count >= written + 3 * len("n 10\n"),
             what="three more lines of the orphan, or its end")
    assert is_alive(*target), "the orphan died at its next write: its pipes had no reader"
    again = started(str(program), ["close"], **kwargs)
    no_gap(recorder, before, adopted(again, recorder, target))


def test_a_start_adopts_the_journal_of_the_targets_pipes_not_an_older_holders(
        started, tmp_path, monkeypatch):
    # A holder left by a group whose target died with its supervisors holds that group's
    # journal; the next group's daemon and pump die together before it ended that holder,
    # with lines read but not delivered in their journal. The start that adopts the new
    # target must take the new journal, whichever holder is older.
    quiet = tmp_path / "quiet.py"
    quiet.write_text("import time\ntime.sleep(600)\n")
    first = started(str(quiet), [], name="stale", monitors={"plugins.delivery:Lines": {
        "path": str(tmp_path / "first.txt")}})
    left = wait_for(lambda: holders(first), lambda found: len(found) == 1, what="a holder")
    pids = first.pids
    kill_at_once(pids["daemon"], pids["pump"], pids["target"])
    wait_for(first.status, lambda s: not s.running, what="the first group to stop running")
    count = 20000
    path = tmp_path / "slow.txt"
    kwargs = dict(name="stale", monitors={"plugins.delivery:Lines": {
        "path": str(path), "delay": 0.0003}})
    paused = pause(monkeypatch, tmp_path, "others")
    group = started(sys.executable, numbered(count), **kwargs)
    paused(group)
    assert len(holders(group)) == 2 and left[0] in holders(group)
    wait_for(lambda: len(seen(path)), lambda n: 200 <= n, LONG, what="the first lines")
    target = kill_supervisors(group)
    again = started(sys.executable, numbered(count), **kwargs)
    assert again.adopted == target[0]
    last = b"line %06d" % (count - 1)
    lines = wait_for(lambda: seen(path), lambda lines: last in lines, LONG,
                     what="the last line")
    assert lines == [b"line %06d" % n for n in range(count)]


WAITER = """import os, sys, time
def wait(path):
    deadline = time.monotonic() + 120
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
wait(sys.argv[1])
os.write(1, b"".join(b"line %06d\\n" % n for n in range(5)) + b"line 000")
wait(sys.argv[2])
os.write(1, b"005\\nline 000006\\n")
time.sleep(600)
"""


def pump_dies_mid_block(started, tmp_path, monkeypatch, name: str):
    """A group whose pump dies in the middle of a block: the first monitor (`file`) had
    it, the line monitor after it not yet. Its target writes on into its pipes (the holder
    reads them); returns the group, its daemon (stopped), its target and the monitors'
    files (`file`, the line monitor), the test hooks unset."""
    program = tmp_path / "waiter.py"
    program.write_text(WAITER)
    go, more, kill = tmp_path / "go", tmp_path / "more", tmp_path / "kill-after-call"
    log, lines = tmp_path / "file.log", tmp_path / "lines.txt"
    monitors = {"file": {"output": str(log)}, "plugins.delivery:Lines": {"path": str(lines)}}
    paused = pause(monkeypatch, tmp_path, "pump")
    monkeypatch.setenv("IMMORTAL_TEST_KILL_AFTER_CALL", str(kill))
    group = started(str(program), [str(go), str(more)], name=name, monitors=monitors)
    daemon = paused(group)
    pump, target = group.pids["pump"], group.pids["target"]
    kill.write_text("")
    go.write_text("")
    wait_for(lambda: proc_state(pump), lambda state: state in (None, "Z"),
             what="the pump to kill itself after the first monitor's call")
    assert lines.read_bytes() == b""  # the line monitor had nothing of that block
    written = bytes_written(target)
    more.write_text("")
    wait_for(lambda: bytes_written(target), lambda count: count > written,
             what="the target's lines written with no pump to read them")
    monkeypatch.delenv("IMMORTAL_TEST_PAUSE")
    monkeypatch.delenv("IMMORTAL_TEST_KILL_AFTER_CALL")
    return group, daemon, target, log, lines


def test_a_fresh_start_delivers_what_a_dead_group_left_in_its_holder(
        started, tmp_path, monkeypatch):
    # The target dies with its daemon. The next start adopts no target, but takes the
    # holder's pipes and journal: the line monitor gets every line, `file` each once.
    group, daemon, target, log, lines = pump_dies_mid_block(started, tmp_path, monkeypatch,
                                                            "leftover")
    kill_at_once(daemon, target)
    wait_for(group.status, lambda s: not s.running, what="the group to stop running")
    quiet = tmp_path / "quiet.py"
    quiet.write_text("import time\ntime.sleep(600)\n")
    monitors = {"file": {"output": str(log)}, "plugins.delivery:Lines": {"path": str(lines)}}
    again = started(str(quiet), [], name="leftover", monitors=monitors)
    expected = [b"line %06d" % n for n in range(7)]
    wait_for(lambda: seen(lines), lambda got: len(got) >= 7, LONG,
             what="the dead group's lines in the line monitor")
    again.stop(timeout=SHORT)
    assert seen(lines) == expected
    assert seen(log) == expected  # once each: the block it had is not given again


def test_a_stop_hands_the_monitors_what_the_holder_kept(started, tmp_path, monkeypatch):
    # As above, but the group is stopped before any start: the stop ends the holder, and
    # hands the monitors what it kept first (before, those lines were lost).
    group, daemon, target, log, lines = pump_dies_mid_block(started, tmp_path, monkeypatch,
                                                            "stopped")
    os.kill(daemon, signal.SIGKILL)
    wait_for(group.status, lambda s: not s.running, what="the group to stop running")
    assert len(holders(group)) == 1
    status = group.stop(timeout=SHORT)
    assert status.orphans == [target] and not is_alive(target, None)
    assert holders(group) == []
    expected = [b"line %06d" % n for n in range(7)]
    assert seen(lines) == expected
    assert seen(log) == expected  # once each: the block it had is not given again


# Writes its lines once the flag file is there; until then (and after) it sleeps.
FLAGGED = """\
import os, sys, time
os.closerange(3, 65536)
os.write(1, b"ready\\n")
while not os.path.exists(sys.argv[1]):
    time.sleep(0.005)
for n in (1, 2, 3):
    os.write(1, f"kept {os.getpid()} {n}\\n".encode())
time.sleep(600)
"""


def test_a_start_that_fails_leaves_the_dead_groups_holder_to_the_next(
        started, tmp_path, monkeypatch):
    """A dead group left lines in its holder; the start after it fails (its pump killed
    before the start was over): the holder is left as it was, and the start after that
    delivers the lines (before, the failed start had ended the holder and they were
    lost)."""
    program = tmp_path / "flagged.py"
    program.write_text(FLAGGED)
    flag, out = tmp_path / "write", tmp_path / "out.log"
    kwargs = dict(name="kept", options={"output": str(out)})
    group = started(str(program), [str(flag)], **kwargs)
    old = wait_for(lambda: holders(group), lambda found: len(found) == 1, what="a holder")
    pids = orphan_writes(group, flag)
    kill_at_once(pids["target"])
    theirs = [b"kept %d %d" % (pids["target"], n) for n in (1, 2, 3)]
    # The next start's pump stops itself before it tells its daemon the start is over.
    pause(monkeypatch, tmp_path, "ready")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        failing = pool.submit(started, str(program), [str(flag)], **kwargs)
        pump = wait_for(lambda: [p for p in pumps_of(group.directory)
                                 if proc_state(p) == "T"], bool,
                        what="the failing start's pump stopped")[0]
        os.kill(pump, signal.SIGKILL)
        with pytest.raises(immortal.StartError):
            failing.result(timeout=LONG)
    monkeypatch.delenv("IMMORTAL_TEST_PAUSE")
    assert holders(group) == old
    again = started(str(program), [str(flag)], **kwargs)
    lines = wait_for(lambda: texts(out), lambda got: all(line in got for line in theirs),
                     LONG, what="the dead group's lines")
    assert all(lines.count(line) == 1 for line in theirs), lines
    assert "took the pipes" in (again.directory / "daemon.log").read_text()


def pumps_of(directory: Path) -> list[int]:
    """The pumps of the group in ``directory`` alive now, by title."""
    title = f"immortal: pump {directory}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if handle.read().startswith(title):
                        found.append(int(entry))
            except OSError:
                pass
    return found


WORKER = """import os, sys, time
k = os.environ["IMMORTAL_INSTANCE"].encode()
os.write(1, b"".join(b"line %s-%06d\\n" % (k, n) for n in range(3)))
deadline = time.monotonic() + 120
while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
    time.sleep(0.01)
os.write(1, b"".join(b"line %s-%06d\\n" % (k, n) for n in range(3, 6)))
time.sleep(600)
"""


def supervisors_die_and_targets_write_on(group, more: Path) -> list[int]:
    """Kill the daemon and the pump of ``group`` together, then let each of its targets
    (``WORKER``) write its next lines (``more``) with no pump to read them; their pids."""
    targets = [entry.pid for entry in group.status().instances]
    assert all(targets)
    written = {pid: bytes_written(pid) for pid in targets}
    kill_at_once(group.pids["daemon"], group.pids["pump"])
    wait_for(group.status, lambda s: not s.running, what="the group to stop running")
    more.write_text("")
    for pid in targets:
        wait_for(lambda: bytes_written(pid), lambda count: count > written[pid],
                 what="each target's lines written with no pump to read them")
    return targets


def test_a_fresh_start_of_workers_delivers_what_each_dead_instance_left_in_the_holder(
        started, tmp_path):
    # Both supervisors of a group of three die; each worker writes on into its pipes,
    # which the holder keeps. The next start (another command: the workers are ended,
    # none adopted) takes every instance's pipes and journal: no line of any is lost, and
    # none comes twice.
    program = tmp_path / "worker.py"
    program.write_text(WORKER)
    more = tmp_path / "more"
    log, lines = tmp_path / "file.log", tmp_path / "lines.txt"
    monitors = {"file": {"output": str(log)}, "plugins.delivery:Lines": {"path": str(lines)}}
    group = started(str(program), [str(more)], name="workleft", workers=3, monitors=monitors)
    wait_for(lambda: seen(lines), lambda got: len(got) == 9, LONG, what="the first lines")
    workers = supervisors_die_and_targets_write_on(group, more)
    assert len(workers) == 3
    quiet = tmp_path / "quiet.py"
    quiet.write_text("import time\ntime.sleep(600)\n")
    again = started(str(quiet), [], name="workleft", workers=3, monitors=monitors)
    expected = sorted(b"line %d-%06d" % (k, n) for k in range(3) for n in range(6))
    wait_for(lambda: seen(lines), lambda got: len(got) >= 18, LONG,
             what="the dead workers' lines in the line monitor")
    again.stop(timeout=SHORT)
    assert sorted(seen(lines)) == expected
    assert sorted(seen(log)) == expected
    assert not any(is_alive(pid, None) for pid in workers)


def test_a_fresh_start_of_several_programs_delivers_what_each_dead_instance_left(tmp_path, home):
    # The same for a group of two programs (one of two instances): each instance's pipes
    # and journal go to the same instance of the same program.
    import immortal

    program = tmp_path / "worker.py"
    program.write_text(WORKER)
    more = tmp_path / "more"
    quiet = tmp_path / "quiet.py"
    quiet.write_text("import time\ntime.sleep(600)\n")

    def programs(file: Path, args: list[str]) -> dict:
        return {name: {"file": str(file), "args": args, "workers": workers,
                       "monitors": {"file": {"output": str(tmp_path / f"{name}.log")},
                                    "plugins.delivery:Lines":
                                        {"path": str(tmp_path / f"{name}.txt")}}}
                for name, workers in (("a", 2), ("b", 1))}

    made = []
    try:
        group = immortal.start_group("twoleft", programs(program, [str(more)]))
        made.append(group)
        for name, workers in (("a", 2), ("b", 1)):
            wait_for(lambda: seen(tmp_path / f"{name}.txt"),
                     lambda got: len(got) == 3 * workers, LONG, what="the first lines")
        supervisors_die_and_targets_write_on(group, more)
        made.append(immortal.start_group("twoleft", programs(quiet, [])))
        for name, workers in (("a", 2), ("b", 1)):
            expected = sorted(b"line %d-%06d" % (k, n) for k in range(workers)
                              for n in range(6))
            wait_for(lambda: sorted(seen(tmp_path / f"{name}.txt")),
                     lambda got: got == expected, LONG,
                     what=f"program {name}'s dead lines, each once; daemon.log: "
                          + (home / "twoleft" / "daemon.log").read_text()[-2000:])
            assert sorted(seen(tmp_path / f"{name}.log")) == expected
    finally:
        for group in made:
            group.stop(timeout=SHORT)
