"""A monitor that takes output and cannot tell what it received (no ``delivered``) runs in
a process of its own, forked by the pump (immortal/monitorprocess.py): a pump's death never
cuts one of its calls in half, so it too gets each line exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import LONG, wait_for
from immortal._linux import children, process_start_time, shown_title

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux")]

# Numbered lines, a few at a time, until the file argv[1] exists; then "end N".
TARGET = ["-c", "import os, sys, time\n"
          "n = 0\n"
          "while not os.path.exists(sys.argv[1]):\n"
          "    os.write(1, b''.join(b'line %06d\\n' % i for i in range(n, n + 3)))\n"
          "    n += 3\n"
          "    time.sleep(0.002)\n"
          "os.write(1, b'end %d\\n' % n)\n"
          "time.sleep(3600)\n"]


def stored(path: Path) -> list[bytes]:
    try:
        return [line.partition(b" ")[2] for line in path.read_bytes().split(b"\n")[:-1]]
    except FileNotFoundError:
        return []


def finished(path: Path, stop: Path) -> list[bytes]:
    """Every line the monitor stored, once the target said how many it wrote."""
    stop.touch()
    return wait_for(lambda: stored(path), lambda got: any(x.startswith(b"end ") for x in got),
                    LONG, what="the target's last line at the monitor")


def check_once(lines: list[bytes]) -> None:
    count = int(next(x for x in lines if x.startswith(b"end ")).split()[1])
    numbers = [int(x.split()[1]) for x in lines if x.startswith(b"line ")]
    twice = sorted(n for n, k in Counter(numbers).items() if k > 1)
    assert not twice, f"{len(twice)} lines stored twice: {twice[:10]}"
    assert numbers == list(range(count))


def monitor_processes(pump: int) -> list[int]:
    return [pid for pid in children(pump)
            if (shown_title(pid) or "").startswith("immortal: monitor ")]


def test_a_pump_killed_just_after_a_line_monitor_wrote_repeats_it_nothing(started, tmp_path):
    """The one instant a monitor without ``delivered`` could not be told about: its line
    written, the journal's record of it not yet. Its call outlives the pump."""
    out, stop, once = tmp_path / "lines.txt", tmp_path / "stop", tmp_path / "once"
    group = started(sys.executable, [*TARGET, str(stop)], monitors={
        "plugins.lines:KillsItsPump": {"path": str(out), "at": "line 000300",
                                       "once": str(once)}})
    pump = group.pids["pump"]
    wait_for(lambda: group.pids.get("pump"), lambda pid: pid and pid != pump, LONG,
             what="a new pump after the monitor killed the first")
    wait_for(lambda: len(stored(out)), lambda count: count > 600, LONG, what="more lines")
    lines = finished(out, stop)
    group.stop()
    assert lines.count(b"line 000300") == 1
    check_once(lines)


def test_the_monitor_runs_in_a_process_of_its_own_that_ends_with_its_pump(started, tmp_path):
    out, stop = tmp_path / "lines.txt", tmp_path / "stop"
    group = started(sys.executable, [*TARGET, str(stop)], monitors={
        "plugins.lines:LineByLine": {"path": str(out)}, "file": {}})
    pump = group.pids["pump"]
    wait_for(lambda: len(stored(out)), lambda count: count > 30, LONG, what="lines")
    hosted = monitor_processes(pump)
    assert len(hosted) == 1, "one process: the line monitor's; `file` runs in the pump"
    assert shown_title(hosted[0]) == \
        f"immortal: monitor plugins.lines:LineByLine {group.directory}"
    started_at = process_start_time(hosted[0])
    group.stop()
    assert process_start_time(hosted[0]) is None or process_start_time(hosted[0]) != \
        started_at, "the monitor's process outlived its group"
    assert stored(out)[-1:] != []


def test_a_monitor_process_killed_takes_its_pump_with_it_and_the_group_goes_on(
        started, tmp_path):
    """As when the monitor ran in the pump and died: the pump dies with it, the target
    does not, and the successor's own monitor process takes the lines on, none twice but
    the one of the call it was killed in, if any."""
    out, stop = tmp_path / "lines.txt", tmp_path / "stop"
    group = started(sys.executable, [*TARGET, str(stop)], monitors={
        "plugins.lines:LineByLine": {"path": str(out)}})
    pids = group.pids
    wait_for(lambda: len(stored(out)), lambda count: count > 30, LONG, what="lines")
    hosted = monitor_processes(pids["pump"])
    os.kill(hosted[0], signal.SIGKILL)
    new = wait_for(lambda: group.pids.get("pump"), lambda pid: pid and pid != pids["pump"],
                   LONG, what="a new pump")
    wait_for(lambda: monitor_processes(new), bool, LONG, what="its monitor's process")
    assert group.pids["target"] == pids["target"]
    count = len(stored(out))
    wait_for(lambda: len(stored(out)), lambda now: now > count + 30, LONG,
             what="lines through the new monitor process")
    lines = finished(out, stop)
    group.stop()
    numbers = [int(x.split()[1]) for x in lines if x.startswith(b"line ")]
    assert sorted(set(numbers)) == list(range(int(lines[-1].split()[1])))
    assert len(numbers) - len(set(numbers)) <= 1


def test_a_scaled_group_hands_the_new_instances_lines_to_the_monitor_process(
        started, tmp_path):
    out = tmp_path / "lines.txt"
    program = tmp_path / "worker.py"
    program.write_text("import os, time\n"
                       "number = os.environ['IMMORTAL_INSTANCE'].encode()\n"
                       "os.write(1, b'hello from %s\\n' % number)\n"
                       "time.sleep(3600)\n")
    group = started(str(program), [], workers=2, monitors={
        "plugins.lines:LineByLine": {"path": str(out)}})
    wait_for(lambda: sorted(stored(out)), lambda got: len(got) == 2, LONG,
             what="both workers' lines")
    group.scale(3)
    got = wait_for(lambda: sorted(stored(out)), lambda got: len(got) == 3, LONG,
                   what="the third worker's line")
    assert got == [b"hello from 0", b"hello from 1", b"hello from 2"]
    group.scale(1)
    group.stop()


def test_a_monitor_process_hanging_when_its_pump_dies_ends_after_its_grace(started, tmp_path):
    """Its call has ``FINISH_GRACE`` once the pump is gone, whatever the monitor does;
    then the next pump's process for it starts, and is handed that call again."""
    from immortal.monitorchild import FINISH_GRACE

    release, hanging = tmp_path / "release", tmp_path / "hanging"
    group = started(sys.executable, ["-c", "import os, time\nos.write(1, b'one\\n')\n"
                                     "time.sleep(3600)\n"],
                    monitors={"plugins.delivery:Hang": {"release": str(release),
                                                        "hanging": str(hanging)}})
    pump = group.pids["pump"]
    hosted = wait_for(lambda: monitor_processes(pump), bool, LONG,
                      what="the monitor's process")[0]
    wait_for(hanging.exists, bool, LONG, what="the monitor in its call")
    os.kill(pump, signal.SIGKILL)
    began = time.monotonic()
    wait_for(lambda: process_start_time(hosted), lambda start: start is None,
             FINISH_GRACE + LONG, what="the hanging monitor's process to end")
    assert time.monotonic() - began >= FINISH_GRACE * 0.9, "ended before its grace"
    # The new pump hangs in the same call before it writes the status: found as the
    # daemon's child.
    daemon, title = group.pids["daemon"], f"immortal: pump {group.directory}"
    new = wait_for(lambda: [pid for pid in children(daemon) if shown_title(pid) == title],
                   lambda pids: pids and pids != [pump], LONG, what="a new pump")[0]
    wait_for(lambda: monitor_processes(new), bool, LONG, what="its monitor's process")
    release.touch()
    group.stop()


@pytest.mark.parametrize("strategy", ["daemon", "unattached"])
def test_a_stop_ends_a_hanging_monitor_process_with_the_rest_of_its_group(
        started, tmp_path, strategy):
    """The pump hangs in the monitor's call and is killed at the stop's end; its monitor's
    process, in its grace, is ended with the group: none outlives the stop."""
    release, hanging = tmp_path / "release", tmp_path / "hanging"
    group = started(sys.executable, ["-c", "import os, time\nos.write(1, b'one\\n')\n"
                                     "time.sleep(3600)\n"], strategy=strategy,
                    stop_timeout=1.0,
                    monitors={"plugins.delivery:Hang": {"release": str(release),
                                                        "hanging": str(hanging)}})
    hosted = wait_for(lambda: monitor_processes(group.pids["pump"]), bool, LONG,
                      what="the monitor's process")[0]
    began = process_start_time(hosted)
    wait_for(hanging.exists, bool, LONG, what="the monitor in its call")
    try:
        group.stop()
        assert process_start_time(hosted) != began, "the monitor's process outlived the stop"
    finally:
        release.touch()


def test_a_hanging_monitor_process_with_sigalrm_handled_ends_with_no_successor(
        started, tmp_path):
    """Both supervisors killed: no successor's process takes the slot (and kills the one
    before it). The hanging monitor has handled SIGALRM, the signal of the timer of its
    grace: it ends all the same."""
    release, hanging = tmp_path / "release", tmp_path / "hanging"
    group = started(sys.executable, ["-c", "import os, time\nos.write(1, b'one\\n')\n"
                                     "time.sleep(3600)\n"],
                    monitors={"plugins.delivery:Hang": {"release": str(release),
                                                        "hanging": str(hanging),
                                                        "alarm": True}})
    pids = group.pids
    hosted = wait_for(lambda: monitor_processes(pids["pump"]), bool, LONG,
                      what="the monitor's process")[0]
    wait_for(hanging.exists, bool, LONG, what="the monitor in its call")
    os.kill(pids["daemon"], signal.SIGKILL)
    os.kill(pids["pump"], signal.SIGKILL)
    try:
        wait_for(lambda: process_start_time(hosted), lambda start: start is None, LONG,
                 what="the hanging monitor's process to end")
    finally:
        release.touch()
    group.stop()  # the orphaned target


def test_a_stopped_monitor_process_is_killed_by_the_next_one_for_its_slot(started, tmp_path):
    """A monitor process frozen (SIGSTOP) when its pump dies cannot end itself: the next
    pump's process for the slot kills it (proven by the start time its lock file holds)
    once it has waited ``TAKE_OVER``, and the lines go on."""
    out, stop = tmp_path / "lines.txt", tmp_path / "stop"
    group = started(sys.executable, [*TARGET, str(stop)], monitors={
        "plugins.lines:LineByLine": {"path": str(out)}})
    pids = group.pids
    wait_for(lambda: len(stored(out)), lambda count: count > 30, LONG, what="lines")
    frozen = monitor_processes(pids["pump"])[0]
    began = process_start_time(frozen)
    os.kill(frozen, signal.SIGSTOP)
    try:
        os.kill(pids["pump"], signal.SIGKILL)
        wait_for(lambda: process_start_time(frozen), lambda start: start != began, LONG,
                 what="the frozen monitor process killed")
        count = len(stored(out))
        wait_for(lambda: len(stored(out)), lambda now: now > count + 30, LONG,
                 what="lines through the next monitor process")
    finally:
        if process_start_time(frozen) == began:
            os.kill(frozen, signal.SIGCONT)
    lines = finished(out, stop)
    group.stop()
    numbers = [int(x.split()[1]) for x in lines if x.startswith(b"line ")]
    assert sorted(set(numbers)) == list(range(int(lines[-1].split()[1])))


def test_a_pump_killed_leaves_its_monitor_process_to_end_as_at_a_stop(started, tmp_path):
    """The monitor's process ends as at the group's end once its pump is gone: what its
    monitor left in a buffer is written and its exit functions run. In the pump, a SIGKILL
    lost that buffer, lines the journal had recorded as delivered."""
    buffered, mark, out = tmp_path / "buffered.txt", tmp_path / "atexit", tmp_path / "out"
    group = started(sys.executable, ["-c", "import os, time\n"
                                     "os.write(1, b''.join(b'line %06d\\n' % i "
                                     "for i in range(50)))\ntime.sleep(3600)\n"],
                    monitors={"plugins.outputs:Unclosed": {"path": str(buffered),
                                                           "mark": str(mark)},
                              "file": {"output": str(out)}})
    pump = group.pids["pump"]
    hosted = wait_for(lambda: monitor_processes(pump), bool, LONG,
                      what="the monitor's process")[0]
    # `file` is called after it: once `file` has the lines, the monitor has had them.
    wait_for(lambda: out.read_bytes().count(b"line ") if out.exists() else 0,
             lambda count: count == 50, LONG, what="the lines at `file`")
    os.kill(pump, signal.SIGKILL)
    wait_for(lambda: process_start_time(hosted), lambda start: start is None, LONG,
             what="the monitor's process to end")
    wait_for(mark.exists, bool, LONG, what="its exit function")
    assert [line for line in buffered.read_bytes().split(b"\n") if line] == \
        [b"line %06d" % i for i in range(50)]
    group.stop()


def test_a_monitor_process_that_cannot_be_forked_leaves_the_monitor_in_the_pump(
        started, tmp_path, pids_cgroup):
    """A process limit (here a pids cgroup that holds the daemon and its next pump alone)
    refuses the fork: the monitor runs in the pump, as it did before it had a process of
    its own, rather than the pump failing for want of it."""
    out, stop = tmp_path / "lines.txt", tmp_path / "stop"
    group = started(sys.executable, [*TARGET, str(stop)], monitors={
        "plugins.lines:LineByLine": {"path": str(out)}})
    pids = group.pids
    wait_for(lambda: len(stored(out)), lambda count: count > 30, LONG, what="lines")
    (pids_cgroup / "cgroup.procs").write_text(str(pids["daemon"]))
    (pids_cgroup / "pids.max").write_text("2")  # the daemon and a pump: no third
    os.kill(pids["pump"], signal.SIGKILL)
    log = group.directory / "pump.log"
    wait_for(lambda: log.read_text() if log.exists() else "",
             lambda text: "no process of its own" in text, LONG,
             what="the pump saying where its monitor runs")
    new = wait_for(lambda: group.pids.get("pump"), lambda pid: pid and pid != pids["pump"],
                   LONG, what="a new pump")
    count = len(stored(out))
    wait_for(lambda: len(stored(out)), lambda now: now > count + 30, LONG,
             what="lines through the monitor in the pump")
    assert monitor_processes(new) == []
    (pids_cgroup / "pids.max").write_text("max")
    lines = finished(out, stop)
    group.stop()
    numbers = [int(x.split()[1]) for x in lines if x.startswith(b"line ")]
    assert sorted(set(numbers)) == list(range(int(lines[-1].split()[1])))


def test_a_monitor_sends_to_the_target_from_a_thread_of_its_own_while_lines_come_in(
        started, tmp_path):
    """``send`` outside any call, beside the calls of its process: every message reaches
    the target, every line the monitor, once."""
    out, stop, got = tmp_path / "lines.txt", tmp_path / "stop", tmp_path / "got"
    count = 500
    target = ["-c", "import json, os, sys, time\n"
              "from immortal import channel\n"
              "n = 0\n"
              "got = open(sys.argv[2], 'a')\n"
              "while not os.path.exists(sys.argv[1]):\n"
              "    os.write(1, b''.join(b'line %06d\\n' % i for i in range(n, n + 3)))\n"
              "    n += 3\n"
              "    message = channel.receive(timeout=0.002)\n"
              "    while message is not None:\n"
              "        got.write(json.dumps(message) + '\\n')\n"
              "        got.flush()\n"
              "        message = channel.receive(timeout=0)\n"
              "os.write(1, b'end %d\\n' % n)\n"
              "time.sleep(3600)\n", str(stop), str(got)]
    group = started(sys.executable, target, channel=True, monitors={
        "plugins.lines:SendsFromAThread": {"path": str(out), "count": count}})
    messages = wait_for(lambda: got.read_text().splitlines() if got.exists() else [],
                        lambda lines: len(lines) >= count, LONG,
                        what="every message at the target")
    assert messages == [f'{{"n": {n}}}' for n in range(count)]
    lines = finished(out, stop)
    assert group.status().restarts == 0
    group.stop()
    check_once(lines)


def test_what_a_monitor_process_writes_on_its_stderr_keeps_the_pump_log_bounded(
        started, tmp_path):
    """Its stderr is the pump's log, and as bounded as the pump's own writes there."""
    from immortal.rolelog import CAP

    out, size = tmp_path / "lines.txt", 1000
    count = 3 * CAP // size
    group = started(sys.executable, ["-c", "import os, time\n"
                                     f"for i in range({count}):\n"
                                     "    os.write(1, b'line %06d\\n' % i)\n"
                                     "time.sleep(3600)\n"],
                    monitors={"plugins.lines:Noisy": {"path": str(out), "size": size}})
    wait_for(lambda: len(stored(out)), lambda got: got == count, LONG,
             what="every line at the monitor")
    group.stop()
    log = group.directory / "pump.log"
    sizes = [path.stat().st_size for path in (log, log.with_name("pump.log.1"))
             if path.exists()]
    assert sizes[0] <= CAP and sum(sizes) <= 2 * CAP, sizes


def test_a_monitor_process_whose_stderr_is_a_closed_pipe_goes_on(tmp_path):
    """``immortal run -s development ... 2>&1 | head``: the pump's stderr, its monitors'
    too, is a pipe nobody reads any more. Their writes there are dropped: no monitor's
    process dies of them, and so no pump."""
    out, name = tmp_path / "lines.txt", f"noisy-{os.getpid()}"
    program = tmp_path / "writer.py"
    program.write_text("import itertools, os, time\n"
                       "for n in itertools.count():\n"
                       "    os.write(1, b'line %06d\\n' % n)\n"
                       "    time.sleep(0.002)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parent), *filter(None, [os.environ.get("PYTHONPATH")])])}
    cli = subprocess.Popen(
        [sys.executable, "-m", "immortal", "run", "-s", "development", "--name", name,
         "-m", "plugins.lines:Noisy", "-o", f"path={out}", "-o", "size=100", str(program)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        assert cli.stderr is not None
        for _ in range(100):  # the command's own lines may come first
            if cli.stderr.readline().startswith(b"noisy "):
                break
        else:
            pytest.fail("no line of the monitor's on the pump's stderr")
        cli.stderr.close()  # as head does once it has its lines
        count = len(stored(out))
        wait_for(lambda: len(stored(out)), lambda now: now > count + 300, LONG,
                 what="lines at the monitor after its stderr closed")
        assert cli.poll() is None, "the group ended"
        from immortal.state import instance_dir, read_status

        status = read_status(instance_dir(name))
        assert status is not None and status.running and status.restarts == 0, status
    finally:
        subprocess.run([sys.executable, "-m", "immortal", "stop", name], env=env,
                       timeout=LONG, capture_output=True)
        try:
            cli.wait(LONG)
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.wait()
