"""The processman-style library layer, and 20 concurrent runs of one name."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import immortal
from conftest import LONG, SHORT, TALKER, cmdline, descendants, kill_at_once, wait_for

pytestmark = pytest.mark.timeout(120)


def test_manager_starts_lists_and_stops_all():
    with immortal.Manager() as manager:
        a = manager.start(TALKER, [], name="a", stop_timeout=5)
        b = manager.start(TALKER, ["--ignore-term"], name="b", stop_timeout=0.5)
        listed = manager.processes()
        assert set(listed) == {"a", "b"}
        listed.clear()  # a copy: the manager keeps its own
        assert set(manager.processes()) == {"a", "b"}
        pids = {**{f"a-{k}": v for k, v in a.pids.items()},
                **{f"b-{k}": v for k, v in b.pids.items()}}
        assert a.pid == a.pids["target"]
        log = b.directory / "output.log"
        wait_for(lambda: log.read_text() if log.exists() else "", lambda t: "ready" in t)
        final = manager.stop_all()
        assert final["a"].last_exit.signal == signal.SIGTERM
        assert final["b"].last_exit.signal == signal.SIGKILL
        assert not set(pids.values()) & set(descendants())
        assert a.status().state == "stopped"  # and no restart after a programmatic stop


def test_kill_all_and_shutdown():
    manager = immortal.Manager()
    try:
        a = manager.start(TALKER, [], name="a")
        final = manager.kill_all()
        assert not final["a"].running
        b = manager.start(TALKER, ["--ignore-term"], name="b", stop_timeout=60)
        log = b.directory / "output.log"
        wait_for(lambda: log.read_text() if log.exists() else "", lambda t: "ready" in t)
        final = manager.shutdown(timeout=0.2)  # not the group's 60 s
        assert final["b"].last_exit.signal == signal.SIGKILL and not final["b"].running
        assert a.pid is None
    finally:
        manager.kill_all()
        manager.close()


@pytest.mark.parametrize("strategy", ["daemon", "unattached", "development"])
def test_kill_records_the_targets_end_and_tells_the_monitors(home, strategy):
    """Group.kill(): the targets KILLed by their pump, which records it ('last killed by
    SIGKILL') and tells the monitors (exit, shutdown), as a stop does; nothing is left."""
    group = immortal.start(TALKER, [], name="killed", strategy=strategy, workers=2,
                           ready="line:^ready")
    try:
        targets = [entry.pid for entry in group.status().instances]
        final = group.kill()
        assert not final.running and final.state == "stopped", final
        assert [entry.last_exit.signal for entry in final.instances] == [signal.SIGKILL] * 2
        assert not set(targets) & set(descendants())
        log = (group.directory / "output.log").read_text()
        assert all(f"exit pid {pid}: killed by SIGKILL" in log for pid in targets), log
        assert "shutdown: killed" in log.splitlines()[-1], log.splitlines()[-3:]
    finally:
        group.kill()


def test_development_output_as_iterators(home):
    group = immortal.start(TALKER, ["--out", "3", "--err", "2", "--exit", "0"],
                           strategy="development", capture=True,
                           policy={"final_exit_codes": [0]})
    try:
        out = list(group.stdout)
        err = list(group.stderr)
        assert out == [b"out 1\n", b"out 2\n", b"out 3\n"]
        assert err == [b"err 1\n", b"err 2\n"]
        assert group.wait(LONG).state == "stopped"
    finally:
        group.stop()


def test_a_captured_stream_left_early_does_not_hold_the_stop(home, tmp_path):
    """A loop over group.stdout left after ten lines of a target that writes on: the stop
    ends the group itself within its grace (the pump no longer waits for that reader),
    and the monitors get its end."""
    flood = tmp_path / "flood.py"
    flood.write_text("import itertools\nfor n in itertools.count():\n"
                     "    print('line', n, flush=True)\n")
    group = immortal.start(str(flood), strategy="development", capture=True, ready="spawn",
                           stop_timeout=1.0)
    try:
        for n, _ in enumerate(group.stdout):
            if n == 10:
                break
        log = group.directory / "output.log"
        seen: list[int] = []

        def held(count: int) -> bool:  # the same count twice, a poll apart: held
            seen.append(count)
            return len(seen) > 1 and count > 1000 and seen[-2] == count

        # The reader's buffer full, then the pipe to this process: the pump waits on it.
        wait_for(lambda: log.read_bytes().count(b"\n") if log.exists() else 0, held, LONG,
                 what="the flood held by the reader that stopped reading")
        begun = time.monotonic()
        final = group.stop()
        took = time.monotonic() - begun
        assert (final.state, final.reason) == ("stopped", "stop"), final
        assert took < 1.0 + SHORT, f"the stop took {took:.1f} s"
        assert "shutdown: stop" in (group.directory / "output.log").read_text()
    finally:
        group.kill()


def test_capture_needs_development():
    with pytest.raises(immortal.InvalidSpec, match="development"):
        immortal.start(TALKER, capture=True)


def test_sigterm_to_a_manager_program_stops_its_groups(home):
    program = (
        "import sys, time, immortal\n"
        "m = immortal.Manager()\n"
        f"g = m.start({TALKER!r}, [], name='child', stop_timeout=5)\n"
        "print(g.pids['target'], g.pids['daemon'], flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "IMMORTAL_HOME": str(home)})
    try:
        target, daemon = map(int, proc.stdout.readline().split())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(LONG) == -signal.SIGTERM
        assert not {target, daemon} & set(descendants())
        assert immortal.attach("child").status().state == "stopped"
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_twenty_concurrent_runs_make_one_group(home):
    env = {**os.environ, "IMMORTAL_HOME": str(home)}
    barrier = threading.Barrier(20)
    results: list[subprocess.CompletedProcess[str]] = []

    def run() -> None:
        barrier.wait(SHORT)
        results.append(subprocess.run(
            [sys.executable, "-m", "immortal", "run", "--name", "x", TALKER],
            capture_output=True, text=True, env=env, timeout=LONG))

    threads = [threading.Thread(target=run) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(LONG + SHORT)
    try:
        codes = sorted(r.returncode for r in results)
        assert codes == [0] + [4] * 19, [(r.returncode, r.stderr) for r in results]
        refused = [r for r in results if r.returncode == 4]
        # Refused by the winner's supervisors, or by its lock before they are known.
        assert all("already running" in r.stderr or "being started" in r.stderr
                   for r in refused)
        talkers = [p for p in descendants() if TALKER in cmdline(p)]
        assert len(talkers) == 1
    finally:
        immortal.attach("x").stop()


def test_reading_stdout_alone_never_waits_for_unread_stderr(started):
    """The README's loop reads web.stdout only: 20,000 lines on stderr first must not stall
    it (a bounded queue per stream, the unread one full, made the pump and the target wait)."""
    group = started(TALKER, ["--err", "20000", "--out", "3"], strategy="development",
                    capture=True)
    seen: list[bytes] = []

    def read() -> None:
        for line in group.stdout:
            seen.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_for(lambda: list(seen), lambda got: b"out 3\n" in got, SHORT,
             "'out 3' on stdout while stderr is not read")
    group.stop()
    reader.join(SHORT)
    assert not reader.is_alive(), "the stdout iterator did not end with the group"
    # The unread stream kept its latest lines, within its bound; the rest were dropped.
    kept = list(group.stderr)
    assert kept and kept[-1] == b"err 20000\n"
    assert len(kept) <= 1000 and group.dropped["stderr"] == 20000 - len(kept)


def test_a_start_out_of_time_leaves_nothing_to_come_up_later(home):
    """start_timeout shorter than the roles take to start: StartError, and the roles that
    report after it are killed too; no group comes up behind the caller's back."""
    with pytest.raises(immortal.StartError, match="did not start within"):
        immortal.start(TALKER, [], name="late", start_timeout=0.02, ready="spawn")
    begun = time.monotonic()
    while time.monotonic() - begun < 3.0:  # a quiet while, watched throughout
        talkers = [pid for pid in descendants() if "talker.py" in cmdline(pid)]
        assert not talkers, f"a target of the failed start runs: {talkers}"
        with pytest.raises(immortal.NotRunning):
            immortal.attach("late").status()
        time.sleep(0.05)


def test_a_handles_arguments_are_checked_and_a_stale_group_reads_so(started):
    group = started(TALKER, [], name="handled", ready="spawn")
    with pytest.raises(immortal.InvalidType, match="'timeout'"):
        group.wait(timeout="1")
    with pytest.raises(immortal.InvalidSpec, match="'timeout'"):
        group.wait(timeout=-1)
    with pytest.raises(immortal.InvalidType, match="'all_at_once'"):
        group.restart(all_at_once="yes")
    pids = group.pids
    kill_at_once(pids["daemon"], pids["pump"])
    wait_for(group.status, lambda s: not s.running, LONG, what="the supervisors gone")
    assert repr(group) == "<Group 'handled' stale: its supervisors were killed, not running>"


def test_an_unknown_keyword_of_exec_and_start_group_is_named_as_starts_are(home):
    with pytest.raises(immortal.UnknownName, match="'tmeout' \\(did you mean 'timeout'"):
        immortal.exec("/bin/true", tmeout=1)
    with pytest.raises(immortal.UnknownName, match="start_group\\(\\) 'nme'"):
        immortal.start_group("x", {"a": {"file": TALKER}}, nme="x")
    with immortal.Manager() as manager:
        with pytest.raises(immortal.UnknownName, match="'tmeout'"):
            manager.exec("/bin/true", tmeout=1)
    assert os.listdir(home) == []
