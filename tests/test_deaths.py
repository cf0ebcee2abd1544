"""A supervisor's death never touches the target, and never leaves two targets.

Each test brings about one death (or two close together) at the worst moment found: a
pump that dies between spawning a target and telling the daemon, a daemon that dies while
it waits to restart a pump, a pump killed while it turns into the daemon, both supervisors
killed while the target writes, and a daemon that cannot fork a new pump.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import immortal
from conftest import (LONG, SHORT, TALKER, children_of, cmdline, descendants, proc_state,
                      wait_for)
from immortal._linux import is_alive
from immortal.state import instance_dir, read_status

pytestmark = pytest.mark.timeout(120)

FAST = {"min_uptime": 0.0, "backoff_initial": 0.05, "backoff_max": 0.2}
# A target that closes every inherited fd, target.lock included, as some daemons do.
CLOSER = "import os, time; os.closerange(3, 65536); print('closer', flush=True); time.sleep(3600)"


def targets(marker: str) -> list[int]:
    """The live processes below us whose command line holds ``marker``."""
    return [pid for pid in descendants() if marker in cmdline(pid)
            and proc_state(pid) not in (None, "Z")]


def logs(group) -> str:
    """The roles' logs, as evidence for a failure."""
    parts = []
    for pid in children_of(os.getpid()):
        if proc_state(pid) == "Z":
            try:
                parts.append(f"reaped {pid}: {os.waitpid(pid, os.WNOHANG)}")
            except ChildProcessError:
                pass
    for name in ("daemon.log", "pump.log.1", "pump.log"):
        try:
            parts.append(f"--- {name}:\n" + (group.directory / name).read_text()[-3000:])
        except OSError:
            pass
    return "\n".join(parts)


def one_known_target(group, marker: str, old: int, old_pump: int | None = None):
    """Wait until the group runs a target other than ``old``, the only one alive (and,
    with ``old_pump``, a pump other than that one: its death has been dealt with)."""
    def settled(status):
        # A target the daemon found half-spawned (its pump killed between fork and exec)
        # may not have exec'd the program yet: settled once it runs it.
        pid = status.pids.get("target")
        return (status.state == "running" and pid not in (None, old)
                and is_alive(pid, status.start_times.get("target"))
                and marker in cmdline(pid)
                and status.pids.get("pump") not in (None, old_pump)
                and is_alive(status.pids["pump"], None))
    deadline = time.monotonic() + SHORT
    status = group.status()
    while not settled(status):
        if time.monotonic() > deadline:
            pytest.fail(f"no running group with a new target in {SHORT} s: {status}\n"
                        + logs(group), pytrace=False)
        time.sleep(0.01)
        status = group.status()
    alive = targets(marker)
    assert alive == [status.pids["target"]], (
        f"live targets {alive}, the group knows {status.pids}\n{logs(group)}")
    return status


@pytest.mark.parametrize("program,args,marker", [
    (TALKER, [], "talker.py"),
    (sys.executable, ["-c", CLOSER], "closerange"),
], ids=["holds-lock", "closes-fds"])
def test_a_pump_dying_in_exit_leaves_its_new_target_known(started, tmp_path, program, args,
                                                          marker):
    group = started(program, args, policy=FAST,
                    monitors={"plugins.deaths:DieInExit": {"once": str(tmp_path / "died")}})
    first = group.pids
    os.kill(first["target"], signal.SIGKILL)  # the pump spawns the next, then dies in exit
    status = one_known_target(group, marker, first["target"])
    assert (tmp_path / "died").exists() and status.pids["pump"] != first["pump"]
    assert status.pids["daemon"] == first["daemon"]


@pytest.mark.parametrize("delay", [0.0, 0.002, 0.005, 0.01])
def test_a_pump_killed_just_after_the_target(started, delay):
    group = started(TALKER, [], policy=FAST)
    pids = group.pids
    os.kill(pids["target"], signal.SIGKILL)
    time.sleep(delay)  # pacing: the pump is somewhere in its respawn
    os.kill(pids["pump"], signal.SIGKILL)
    one_known_target(group, "talker.py", pids["target"], pids["pump"])


def pause_at_the_answer(monkeypatch, tmp_path, point: str = "answer") -> Path:
    """The first pump stops itself at ``point`` (the test hook ``holder.PAUSE``): "ready",
    its targets ready, before it tells its daemon; "answer", once it has told its daemon
    the start is over and written so in the status, before it answers the caller. The
    flag is gone once it has."""
    flag = tmp_path / f"pause-{point}"
    flag.write_text("")
    monkeypatch.setenv("IMMORTAL_TEST_PAUSE", f"{point} {flag}")
    return flag


def paused_pump(directory: Path, flag: Path):
    """The status once the first pump has stopped itself at its answer."""
    return wait_for(lambda: read_status(directory),
                    lambda s: s is not None and not flag.exists() and not s.starting
                    and proc_state(s.pids.get("pump", 0)) == "T",
                    what="the pump stopped before its answer")


def test_no_status_says_ready_before_the_daemon_knows_the_start_is_over(
        started, tmp_path, monkeypatch):
    """Ready at the spawn: the pump, stopped before it tells its daemon, has written no
    status that says ready (before, it had: a reader could take the group for started and
    kill the pump, which failed the start)."""
    flag = pause_at_the_answer(monkeypatch, tmp_path, "ready")
    directory = instance_dir("early")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        starting = pool.submit(started, TALKER, [], name="early", ready="spawn")
        pump = wait_for(lambda: [p for p in descendants() if "immortal: pump" in cmdline(p)
                                 and proc_state(p) == "T"], bool,
                        what="the pump stopped before it tells its daemon")[0]
        assert not flag.exists()
        status = read_status(directory)
        assert status is None or not status.ready, status
        os.kill(pump, signal.SIGKILL)  # during the start: the start fails, nothing is left
        with pytest.raises(immortal.StartError):
            starting.result(timeout=LONG)
    assert targets("talker.py") == []


def test_a_pump_killed_once_the_status_says_the_start_is_over_is_replaced(
        started, tmp_path, monkeypatch):
    """Whoever reads in the status that the start is over may kill the pump: the group
    goes on with a new one and the same target, and the start's caller is answered (by
    the daemon: the pump died before its answer)."""
    flag = pause_at_the_answer(monkeypatch, tmp_path)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        starting = pool.submit(started, TALKER, [], name="answered")
        status = paused_pump(instance_dir("answered"), flag)
        os.kill(status.pids["pump"], signal.SIGKILL)
        group = starting.result(timeout=LONG)
    whole_again(group, status.pids["target"], {status.pids["pump"]})


def test_a_foreground_pump_killed_once_the_status_says_the_start_is_over_is_replaced(
        home, tmp_path, monkeypatch):
    flag = pause_at_the_answer(monkeypatch, tmp_path)
    command = subprocess.Popen(
        [sys.executable, "-m", "immortal", "run", "--foreground", "-n", "answered", TALKER],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        status = paused_pump(home / "answered", flag)
        os.kill(status.pids["pump"], signal.SIGKILL)
        whole_again(immortal.attach("answered"), status.pids["target"], {status.pids["pump"]})
    finally:
        command.send_signal(signal.SIGTERM)
        _, err = command.communicate(timeout=LONG)
    assert command.returncode == 0, err
    assert "started 'answered' (foreground" in err and "error" not in err


def poll(get, predicate, timeout: float):
    """``get()`` once ``predicate`` holds, or None after ``timeout`` (no failure)."""
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if predicate(value):
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(0.001)


def whole_again(group, target: int, gone: set[int]):
    """Wait until a live daemon and pump (none of ``gone``) run ``target``, still alive."""
    def whole(status):
        pids = status.pids
        return (status.state == "running" and pids.get("target") == target
                and all(pids.get(role) and pids[role] not in gone
                        and is_alive(pids[role], status.start_times.get(role))
                        for role in ("daemon", "pump")))
    deadline = time.monotonic() + SHORT
    status = group.status()
    while not whole(status):
        if time.monotonic() > deadline:
            pytest.fail(f"the group is not whole again in {SHORT} s: {status}\n"
                        + logs(group), pytrace=False)
        time.sleep(0.01)
        status = group.status()
    assert is_alive(target, None)
    return status


def new_pump(group, old: int):
    return wait_for(group.status, lambda s: s.pids.get("pump") not in (None, old)
                    and is_alive(s.pids["pump"], s.start_times.get("pump")),
                    what="a new pump")


def test_the_daemon_killed_while_a_pump_restart_waits(started):
    group = started(TALKER, [], policy=FAST)
    pids = group.pids
    gone = {pids["pump"]}
    status = group.status()
    for _ in range(6):  # quick pump deaths in a row: a daemon that waits waits longer each
        os.kill(status.pids["pump"], signal.SIGKILL)
        status = new_pump(group, status.pids["pump"])
        gone.add(status.pids["pump"])
    killed = status.pids["pump"]
    os.kill(killed, signal.SIGKILL)
    daemon = status.pids["daemon"]
    # A target lives, so the next pump comes at once (a daemon that waits has none yet).
    poll(lambda: [p for p in children_of(daemon)
                  if p != killed and "immortal: pump" in cmdline(p)], bool, 0.5)
    os.kill(daemon, signal.SIGKILL)
    gone.add(daemon)
    whole_again(group, pids["target"], gone)


def pump_killed_into_setup(started, tmp_path, delay):
    """A group whose pump was killed, once the new pump is in its monitors' setup (which
    takes ``delay`` seconds): the group and its pids from before the kill."""
    mark = tmp_path / "in-setup"
    group = started(TALKER, [], policy=FAST, monitors={
        "plugins.deaths:SlowSetup": {"mark": str(mark), "delay": delay}})
    pids = group.pids
    os.kill(pids["pump"], signal.SIGKILL)
    wait_for(mark.exists, bool, what="the new pump in its setup")
    return group, pids


def test_the_daemon_killed_while_a_new_pump_is_in_its_setup(started, tmp_path):
    """The new pump finds its daemon dead once its monitors' setup returns: it becomes the
    daemon, rather than taking that for a failed setup and leaving the target to nobody."""
    group, pids = pump_killed_into_setup(started, tmp_path, 1.0)
    os.kill(pids["daemon"], signal.SIGKILL)
    whole_again(group, pids["target"], {pids["pump"], pids["daemon"]})
    assert "setup failed" not in (group.directory / "pump.log").read_text()


def test_status_names_a_new_pump_while_it_is_in_its_setup(started, tmp_path):
    """A pump's successor wrote its status only after its monitors' setup and the lines
    its predecessor left: all that while, ``status`` named the dead pump."""
    group, pids = pump_killed_into_setup(started, tmp_path, 3.0)
    status = group.status()
    assert status.running and status.pids["pump"] != pids["pump"], status.pids
    assert status.pids["daemon"] == pids["daemon"] and "immortal: pump" in cmdline(
        status.pids["pump"])


def test_the_pump_killed_while_it_execs_into_the_daemon(started):
    # A monitor's thread: the pump cannot become the daemon in place, it execs.
    group = started(TALKER, [], policy=FAST, monitors={"plugins.deaths:Threaded": {}})
    pids = group.pids
    os.kill(pids["daemon"], signal.SIGKILL)
    # Once it has exec'd and before it is ready: a fresh interpreter's argv names the role.
    assert poll(lambda: cmdline(pids["pump"]), lambda c: "immortal._role" in c, SHORT), \
        "the pump never exec'd into the daemon"
    os.kill(pids["pump"], signal.SIGKILL)
    whole_again(group, pids["target"], {pids["daemon"], pids["pump"]})


def syscalls_written(pid: int) -> int:
    with open(f"/proc/{pid}/io") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("syscw"))


def test_the_target_outlives_both_supervisors_while_it_writes(started):
    numbered = str(Path(TALKER).parent / "numbered.py")
    group = started(numbered, ["--interval", "0.002"], policy=FAST)
    pids = group.pids
    target = pids["target"]
    wait_for(lambda: syscalls_written(target), lambda n: n >= 20, what="the target writing")
    for role in ("daemon", "pump"):
        os.kill(pids[role], signal.SIGKILL)
    wait_for(lambda: [is_alive(pids[r], None) for r in ("daemon", "pump")], lambda a: not any(a),
             what="both supervisors gone")
    try:
        written = syscalls_written(target)
        # Alive and still writing: no reader left but its own, yet no EPIPE.
        wait_for(lambda: syscalls_written(target) if is_alive(target, None) else None,
                 lambda n: n is None or n >= written + 50, what="the target to go on writing")
        assert is_alive(target, None), "the target died when its readers did"
    finally:
        os.kill(target, signal.SIGKILL)
        wait_for(lambda: is_alive(target, None), lambda alive: not alive)


def test_a_pump_that_cannot_be_forked_is_retried(started, pids_cgroup):
    group = started(TALKER, [], policy=FAST)
    pids = group.pids
    (pids_cgroup / "cgroup.procs").write_text(str(pids["daemon"]))
    (pids_cgroup / "pids.max").write_text("1")  # the daemon alone: fork() fails, EAGAIN
    os.kill(pids["pump"], signal.SIGKILL)
    refused = lambda: int((pids_cgroup / "pids.events").read_text().split()[1])  # noqa: E731
    wait_for(refused, lambda n: n >= 3, what="three refused forks")
    assert is_alive(pids["daemon"], None) and is_alive(pids["target"], None)
    (pids_cgroup / "pids.max").write_text("max")
    whole_again(group, pids["target"], {pids["pump"]})
    assert "Resource temporarily unavailable" in (group.directory / "daemon.log").read_text()


def test_a_stop_between_two_pumps_still_stops_the_target(started, pids_cgroup, recorder):
    group = started(TALKER, [], policy=FAST, monitor="recorder", options=recorder.options)
    pids = group.pids
    (pids_cgroup / "cgroup.procs").write_text(str(pids["daemon"]))
    (pids_cgroup / "pids.max").write_text("1")  # the daemon cannot start the next pump
    os.kill(pids["pump"], signal.SIGKILL)
    wait_for(lambda: (group.directory / "daemon.log").read_text(),
             lambda text: "cannot start a pump" in text, what="a refused pump start")
    os.kill(pids["daemon"], signal.SIGTERM)  # the stop finds no pump to carry it out
    assert is_alive(pids["target"], None)
    (pids_cgroup / "pids.max").write_text("max")
    events = recorder.wait_for(lambda es: any(e["hook"] == "shutdown" for e in es))
    exits = [e for e in events if e["hook"] == "exit"]
    assert [e["pid"] for e in exits] == [pids["target"]] and exits[0]["signal"] == signal.SIGTERM
    wait_for(group.status, lambda s: not s.running, what="the group to end")


def test_a_pump_forked_by_a_pump_turned_daemon_keeps_its_lifeline(started, tmp_path):
    """A pump that became the daemon keeps what its monitors hold in global state (the
    ``logging`` monitor's configured handlers, with their open files). The pump it forks
    reconfigures logging, which closes those handlers' fds: they must not be numbers the
    new pump reuses for its own lifeline, or it takes its daemon for dead and becomes a
    second daemon beside the first (and two pumps deliver every line twice)."""
    log = tmp_path / "logging.txt"
    config = tmp_path / "logging.json"
    config.write_text(json.dumps({
        "version": 1, "disable_existing_loggers": False,
        "handlers": {"f": {"class": "logging.FileHandler", "filename": str(log)}},
        "loggers": {"immortal": {"handlers": ["f"], "level": "DEBUG", "propagate": False}}}))
    group = started(TALKER, ["--trap", "USR1"], monitors={
        "file": {"output": str(tmp_path / "out.log")},
        "jsonl": {"output": str(tmp_path / "o.jsonl")},
        "logging": {"config": str(config)}, "console": {}})
    wait_for(lambda: log.read_text() if log.exists() else "", lambda t: "ready" in t,
             what="the first line through the logging monitor")
    for _ in range(5):  # each time the pump becomes the daemon and forks a new pump
        old = group.pids["daemon"]
        pump = group.pids["pump"]
        os.kill(old, signal.SIGKILL)
        wait_for(group.status, lambda s: s.running and s.pids.get("daemon") == pump
                 and s.pids.get("pump") not in (None, pump), what="the pump turned daemon")

        def daemons():
            title = f"immortal: daemon {group.directory}"
            return [pid for pid in descendants() if cmdline(pid).startswith(title)
                    and proc_state(pid) not in (None, "Z")]

        # The new pump's monitor setup is what closed the fds: give it time to, then look.
        wait_for(lambda: (group.status().state, daemons()),
                 lambda v: v[0] == "running" and len(v[1]) == 1,
                 what=f"one daemon and a running group\n{logs(group)}")
    os.kill(group.pids["target"], signal.SIGUSR1)
    wait_for(lambda: log.read_text(), lambda t: "got USR1" in t,
             what=f"a line through the logging monitor after the hand-overs\n{logs(group)}")
    assert "Logging error" not in logs(group)


def test_a_daemon_killed_again_and_again_keeps_as_many_files(started):
    # Each pump that became the daemon used to run it nested in the frames of the daemon it
    # was forked from, whose files (on /dev/null in the pump) stayed open: a few fds more
    # at each daemon death, until a group whose daemon kept dying ran out of them.
    group = started(TALKER, [])
    pids = group.pids
    target = pids["target"]
    gone: set[int] = set()

    def kill_the_daemon() -> dict[str, int]:
        gone.add(pids["daemon"])
        os.kill(pids["daemon"], signal.SIGKILL)
        return whole_again(group, target, gone).pids

    # From here on each daemon was a pump forked by a daemon that was a pump itself.
    pids = kill_the_daemon()
    pids = kill_the_daemon()
    first = len(os.listdir(f"/proc/{pids['daemon']}/fd"))
    for _ in range(12):
        pids = kill_the_daemon()
    # A new daemon's files settle once its pump is forked (counted after, never before).
    wait_for(lambda: len(os.listdir(f"/proc/{pids['daemon']}/fd")),
             lambda count: count <= first, what=f"the daemon's fds to settle at {first}")
