"""The fault model of the instance directory: one group per name, never two targets,
nothing hidden. A start that loses cleans up nothing of the winner's; reads never destroy
what a later start needs; orphans are found by the token in their environment."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import immortal
from immortal import _linux, orphans, prepare, state
from conftest import LONG, SHORT, TALKER, cmdline, descendants, kill_at_once, wait_for


def test_a_start_that_loses_the_lock_race_keeps_the_winners_directory(home, monkeypatch):
    directory = home / "race"
    held: list[int] = []
    real = prepare.ensure_dir

    def ensure_then_lose(path: Path) -> list[Path]:
        created = real(path)  # this start creates the directory...
        fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # ...and another start takes the lock first
        held.append(fd)
        return created

    monkeypatch.setattr(prepare, "ensure_dir", ensure_then_lose)
    try:
        with pytest.raises(immortal.AlreadyRunning):
            immortal.start(TALKER, name="race")
        # The winner's lock file is still the one its directory holds: a third start
        # finds it locked instead of creating a fresh one.
        assert os.path.samestat(os.stat(directory / "lock"), os.fstat(held[0]))
        assert state.try_lock(directory / "lock") is None
    finally:
        for fd in held:
            os.close(fd)


def test_a_failed_start_keeps_the_home_it_created_and_the_lock_file(home, monkeypatch):
    base = home / "new-home"
    monkeypatch.setenv("IMMORTAL_HOME", str(base))
    with pytest.raises(immortal.StartError, match="cannot open the log sink"):
        immortal.start(TALKER, name="fails", monitor="plugins.sample:FailingSetup")
    # Another group may have been created in the new home meanwhile: it stays, and so does
    # the lock file another start may have opened.
    assert os.listdir(base) == ["fails"]
    assert set(os.listdir(base / "fails")) <= {"lock", "target.lock"}


def test_a_start_refused_by_a_command_holding_the_lock_names_no_dead_pid(started, home):
    """A stopped group's lock held by another command (a forget or a start under way): a
    start is refused, naming no pid of the group's last run (long dead, maybe reused by
    now: it named them as the group's running supervisors) but what holds the lock."""
    group = started(TALKER, [], name="held")
    old = group.pids
    group.stop()
    fd = os.open(home / "held" / "lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as 'immortal forget held' holds it while it works
    try:
        with pytest.raises(immortal.AlreadyRunning, match="by another command") as caught:
            immortal.start(TALKER, name="held")
    finally:
        os.close(fd)
    assert not any(str(pid) in str(caught.value) for pid in old.values())
    assert caught.value.pids == {}


QUIET = """\
import os, sys, time
if sys.argv[2] == "close":
    os.closerange(3, 65536)  # as many daemons do: target.lock goes with the rest
open(sys.argv[1], "w").close()
while True:
    time.sleep(3600)  # quiet: never writes to the pipes its dead supervisors held
"""


def quiet_orphan(started, tmp_path: Path, name: str, close: str):
    """A group whose daemon and pump were SIGKILLed while its quiet target runs on."""
    program = tmp_path / "quiet.py"
    program.write_text(QUIET)
    marker = tmp_path / "ready"
    group = started(str(program), [str(marker), close], name=name)
    wait_for(marker.exists, bool, what="the target to be ready")
    pids = group.pids
    target = (pids["target"], _linux.process_start_time(pids["target"]))
    kill_at_once(pids["daemon"], pids["pump"])
    wait_for(lambda: group.status().running, lambda running: not running,
             what="the supervisors to be gone")
    assert _linux.is_alive(*target)
    marker.unlink()
    return group, program, target


def targets(program: Path) -> list[int]:
    return [pid for pid in descendants() if str(program) in cmdline(pid)]


def test_an_orphan_that_closed_its_fds_is_ended_by_a_run_of_another_command(
        started, tmp_path):
    group, program, target = quiet_orphan(started, tmp_path, "closer", "close")
    assert not os.path.exists(f"/proc/{target[0]}/fd/3")
    # Another command: not adopted (immortal/adoption.py), ended though target.lock is
    # closed: found by its token.
    again = started(str(program), [str(tmp_path / "ready"), "keep"], name="closer")
    assert again.adopted is None and not _linux.is_alive(*target)
    assert targets(program) == [again.pids["target"]]


def test_reads_keep_an_orphan_findable_and_list_and_stop_show_and_end_it(
        started, tmp_path, capsys):
    from immortal.cli import main

    group, program, target = quiet_orphan(started, tmp_path, "reads", "keep")
    # Every read: none may erase what the next start or stop needs.
    repr(group)
    assert group.status().stale and group.pids == {}
    assert main(["status", "reads"]) == 3
    shown = capsys.readouterr().out
    assert f"left running: {target[0]}" in shown.splitlines()[0]
    assert main(["list"]) == 0
    row = next(line.split() for line in capsys.readouterr().out.splitlines()
               if line.startswith("reads "))
    assert row[1] == "orphaned" and row[2] == f"-/-/{target[0]}"
    assert group.orphans() == [target[0]]
    assert main(["stop", "reads"]) == 0
    assert f"ended 1 process(es) left running without supervisors: {target[0]}" \
        in capsys.readouterr().out
    assert not _linux.is_alive(*target)
    assert main(["stop", "reads"]) == 3  # nothing left to stop
    assert immortal.attach("reads").status().state == "stopped"


def test_after_a_status_read_the_next_run_adopts_the_orphan(started, tmp_path):
    group, program, target = quiet_orphan(started, tmp_path, "reread", "keep")
    assert not immortal.attach("reread").status().running
    # The read kept what adopting needs: the recorded target and the old spec.
    again = started(str(program), [str(tmp_path / "ready"), "keep"], name="reread")
    assert again.adopted == target[0] and _linux.is_alive(*target)
    assert targets(program) == [again.pids["target"]] == [target[0]]


ESCAPER = """\
import os, sys, time
child = os.fork()
if child == 0:  # a daemonising grandchild: new session, and its parent exits
    os.setsid()
    if os.fork() == 0:
        with open(sys.argv[1] + ".tmp", "w") as handle:
            handle.write(str(os.getpid()))
        os.rename(sys.argv[1] + ".tmp", sys.argv[1])
        while True:
            time.sleep(3600)
    os._exit(0)
os.waitpid(child, 0)
while True:
    time.sleep(3600)
"""


@pytest.mark.parametrize("how", ["stop", "sigterm"])
def test_an_escaped_grandchild_is_ended_by_a_stop_after_a_daemon_restart(
        started, tmp_path, how):
    program = tmp_path / "escaper.py"
    program.write_text(ESCAPER)
    marker = tmp_path / "grandchild"
    group = started(str(program), [str(marker)], name="escaper")
    text = wait_for(lambda: marker.read_text() if marker.exists() else "", bool,
                    what="the grandchild's pid")
    grandchild = (int(text), _linux.process_start_time(int(text)))
    pids = group.pids
    # The grandchild went up to the daemon (the subreaper); the daemon dies, and with it
    # the grandchild goes further up, out of the group's tree.
    os.kill(pids["daemon"], signal.SIGKILL)
    wait_for(group.status, lambda s: s.running and s.pids.get("daemon") == pids["pump"]
             and s.pids.get("pump") not in (None, pids["pump"]), LONG,
             "the pump to take over as the daemon, with a new pump")
    assert _linux.is_alive(*grandchild)
    if how == "stop":
        group.stop()
    else:  # the root ends the group by itself: it ends the leftovers too
        os.kill(pids["pump"], signal.SIGTERM)
        wait_for(group.status, lambda s: not s.running, LONG, "the group to end")
    wait_for(lambda: _linux.is_alive(*grandchild), lambda alive: not alive, SHORT,
             "the grandchild to be gone")


GATED = """\
import os, time
import immortal

class Gated(immortal.Monitor):
    '''Holds the start in 'setup' until the gate file exists.'''

    @classmethod
    def check(cls, options):
        return dict(options)

    def setup(self, why, message):
        deadline = time.monotonic() + 60
        while not os.path.exists(self.options["gate"]) and time.monotonic() < deadline:
            time.sleep(0.01)
"""


def test_a_stop_during_a_start_waits_for_it_then_stops_it(home, tmp_path, monkeypatch):
    (tmp_path / "gated.py").write_text(GATED)
    monkeypatch.syspath_prepend(str(tmp_path))
    gate = tmp_path / "gate"
    results: list[object] = []

    def start() -> None:
        try:
            results.append(immortal.start(TALKER, name="gated", monitor="gated:Gated",
                                          options={"gate": str(gate)}))
        except Exception as exc:  # the test reads it below
            results.append(exc)

    import threading

    thread = threading.Thread(target=start)
    thread.start()
    try:
        # spec.json is written once the start holds the group lock.
        wait_for((home / "gated" / "spec.json").exists, bool,
                 what="the start to hold the group lock")
        stop = subprocess.Popen([sys.executable, "-m", "immortal", "stop", "gated"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(tmp_path)})
        # The stop waits while the start is held in its monitor's setup.
        with pytest.raises(subprocess.TimeoutExpired):
            stop.wait(0.5)
        gate.touch()
        out, err = stop.communicate(timeout=LONG)
        assert stop.returncode == 0, (out, err)
        assert out.startswith("stopped 'gated'")
    finally:
        gate.touch()
        thread.join(LONG)
    group = results[0]
    assert isinstance(group, immortal.Group), group
    final = group.wait(SHORT)
    assert final.state == "stopped" and not final.running


@pytest.mark.parametrize("strategy, how", [("daemon", "remove"), ("unattached", "remove"),
                                           ("daemon", "move")])
def test_a_removed_instance_directory_is_put_back(started, home, strategy, how):
    import shutil

    group = started(TALKER, [], name="removed", strategy=strategy)
    pids = group.pids
    directory = home / "removed"
    if how == "remove":
        shutil.rmtree(directory)  # as a careless clean-up would
    else:
        os.rename(directory, home / "moved-away")
    wait_for(lambda: sorted(os.listdir(directory)) if directory.exists() else [],
             lambda names: {"lock", "control.sock", "spec.json", "status.json"} <= set(names),
             what="the directory and its files to be put back")
    assert state.try_lock(directory / "lock") is None  # the group holds the new lock
    assert immortal.attach("removed").pids == pids
    with pytest.raises(immortal.AlreadyRunning):
        immortal.start(TALKER, name="removed")
    final = group.stop()
    assert final.state == "stopped" and not final.running


@pytest.mark.parametrize("strategy", ["daemon", "unattached"])
def test_a_removed_lock_file_lets_no_second_group_start(started, home, strategy):
    """Only the lock file removed (a clean-up of old files, an ``rm -rf`` that raced the
    group's own writes): the lock the group holds guards a file nobody else opens. The
    supervisor status.json names, alive with its title, still proves the group runs."""
    group = started(TALKER, [], name="nolock", strategy=strategy)
    directory = home / "nolock"
    os.unlink(directory / "lock")
    with pytest.raises(immortal.AlreadyRunning, match="already running"):
        immortal.start(TALKER, name="nolock")
    result = subprocess.run([sys.executable, "-m", "immortal", "run", "--name", "nolock",
                             TALKER], capture_output=True, text=True, timeout=LONG)
    assert result.returncode == 4, result.stderr
    root = "daemon" if strategy == "daemon" else "pump"
    titled = [pid for pid in descendants(os.getpid()) + [*group.pids.values()]
              if orphans.wears_title(pid, root, directory)]
    assert set(titled) == {group.pids[root]}
    final = group.stop()
    assert final.state == "stopped" and not final.running


@pytest.mark.parametrize("how", ["removed", "moved"])
@pytest.mark.parametrize("strategy", ["daemon", "unattached"])
def test_files_removed_from_a_running_groups_directory_are_put_back(started, home, strategy,
                                                                    how, tmp_path):
    """The directory stays, its files go (an ``rm -rf`` that lost a race with the group's own
    writes, a clean-up of old files, an ``mv`` elsewhere): the group puts back its lock,
    socket and JSON files, and stays one group that ``stop NAME`` finds."""
    group = started(TALKER, [], name="nofiles", strategy=strategy)
    pids = group.pids
    directory = home / "nofiles"
    kept = {"lock", "control.sock", "spec.json", "status.json"}
    for name in kept:
        if how == "moved":
            os.rename(directory / name, tmp_path / name)
        else:
            os.unlink(directory / name)
    wait_for(lambda: set(os.listdir(directory)), lambda names: kept <= names,
             what="the group's files to be put back")
    assert state.try_lock(directory / "lock") is None  # the group holds the new lock
    assert immortal.attach("nofiles").pids == pids
    with pytest.raises(immortal.AlreadyRunning):
        immortal.start(TALKER, name="nofiles")
    log = "daemon.log" if strategy == "daemon" else "pump.log"
    assert "put back" in (directory / log).read_text()
    result = subprocess.run([sys.executable, "-m", "immortal", "stop", "nofiles"],
                            capture_output=True, text=True, timeout=LONG)
    assert result.returncode == 0, result.stderr
    assert not any(_linux.is_alive(pid, None) for pid in pids.values())
    assert group.status().state == "stopped"


@pytest.mark.parametrize("strategy", ["daemon", "unattached"])
def test_a_start_before_the_files_are_back_finds_the_group_by_its_titles(
        started, home, strategy):
    """Lock file and status.json both removed, and a start comes before the group puts
    them back (its supervisors are stopped here, so that it cannot): the start takes the
    new lock file, finds no status, and still refuses, for the processes that wear the
    group's supervisors' titles."""
    group = started(TALKER, [], name="bare", strategy=strategy)
    directory = home / "bare"
    roles = [pid for role, pid in group.pids.items() if role in ("daemon", "pump")]
    for pid in roles:
        os.kill(pid, signal.SIGSTOP)
    try:
        for name in ("lock", "control.sock", "spec.json", "status.json"):
            os.unlink(directory / name)
        with pytest.raises(immortal.AlreadyRunning, match="already running"):
            immortal.start(TALKER, name="bare")
    finally:
        for pid in roles:
            os.kill(pid, signal.SIGCONT)
    wait_for(lambda: set(os.listdir(directory)),
             lambda names: {"lock", "status.json", "control.sock"} <= names,
             what="the group's files to be put back")
    assert immortal.attach("bare").pids == group.pids
    final = group.stop()
    assert final.state == "stopped" and not final.running


def test_a_removed_status_file_alone_is_put_back_and_the_socket_kept(started, home):
    """One file removed: that one is written again, and the control socket, which was not
    removed, is the same socket (its clients are not dropped)."""
    group = started(TALKER, [], name="nostatus")
    directory = home / "nostatus"
    sock = os.stat(directory / "control.sock").st_ino
    os.unlink(directory / "status.json")
    wait_for(lambda: (directory / "status.json").exists(), lambda there: there,
             what="status.json to be put back")
    assert os.stat(directory / "control.sock").st_ino == sock
    assert group.status().pids == group.pids


def test_the_home_does_not_move_with_the_environment(tmp_path):
    import pwd

    login = {"XDG_RUNTIME_DIR": str(tmp_path), "HOME": "/elsewhere"}  # a login shell
    cron = {"HOME": "/elsewhere"}  # cron, sudo, a service: no XDG_RUNTIME_DIR
    user = 4242
    try:
        expected = Path(pwd.getpwuid(user).pw_dir) / ".local/state/immortal"
    except KeyError:
        expected = Path.home() / ".local/state/immortal"
    assert state.default_home(login, user) == state.default_home(cron, user) == expected
    assert state.default_home({"XDG_STATE_HOME": "/s"}, user) == Path("/s/immortal")
    assert state.default_home({"XDG_STATE_HOME": "relative"}, user) == expected
    assert state.default_home(login, 0) == state.default_home({}, 0) \
        == Path("/var/lib/immortal")
    assert state.default_home({"IMMORTAL_HOME": "/h", **login}, 0) == Path("/h")


def test_status_and_list_show_where_the_groups_are(started, home, capsys):
    from immortal.cli import main

    started(TALKER, [], name="shown")
    assert main(["status", "shown"]) == 0
    assert f"  dir      {home / 'shown'}" in capsys.readouterr().out.splitlines()
    assert main(["list"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"home: {home}"


@pytest.mark.parametrize("command, shows", [
    (["list"], "kept "), (["metrics"], 'immortal_up{group="kept"} 1'),
    (["save"], "saved 1 group(s)"), (["stop", "--all"], "stopped 'kept'"),
], ids=["list", "metrics", "save", "stop --all"])
def test_a_stray_file_in_the_home_is_no_group(started, home, capsys, command, shows):
    """What else lies in the home (a note, a link to it, a socket) is passed over by the
    commands that walk it, which go on to the groups there."""
    import socket

    from immortal.cli import main

    started(TALKER, [], name="kept")
    (home / "notes.txt").write_text("not a group\n")
    (home / "notes-link").symlink_to(home / "notes.txt")
    stray = socket.socket(socket.AF_UNIX)
    try:
        stray.bind(str(home / "stray.sock"))
        capsys.readouterr()
        code = main(command)
        out, err = capsys.readouterr()
    finally:
        stray.close()
    assert (code, err) == (0, "")
    assert shows in out


def test_a_target_spawned_just_before_both_supervisors_died_is_adopted(started, tmp_path):
    """``status.json`` names a spawn a moment after it: supervisors killed in that moment
    leave it naming the target before. The next run adopts the one that runs (found by the
    group's token, leading its own process group, running the group's command), instead of
    ending it as a stranger."""
    program = tmp_path / "quiet.py"
    program.write_text(QUIET)
    marker = tmp_path / "ready"
    group = started(str(program), [str(marker), "keep"], name="lagged")
    wait_for(marker.exists, bool, what="the target to be ready")
    status_file = Path(group.directory) / "status.json"
    before = status_file.read_text()
    first = group.pids["target"]
    marker.unlink()
    os.kill(first, signal.SIGKILL)
    wait_for(marker.exists, bool, LONG, "the respawned target to be ready")
    pids = wait_for(lambda: group.pids, lambda p: p.get("target") not in (None, first),
                    what="the respawn in the status")
    target = (pids["target"], _linux.process_start_time(pids["target"]))
    kill_at_once(pids["daemon"], pids["pump"])
    wait_for(lambda: group.status().running, lambda running: not running,
             what="the supervisors to be gone")
    status_file.write_text(before)  # as the pump left it had it died before its write
    again = started(str(program), [str(marker), "keep"], name="lagged")
    assert again.adopted == target[0] and _linux.is_alive(*target)
    assert targets(program) == [target[0]]


def test_a_request_to_a_group_whose_supervisors_were_killed_says_so(started):
    """Daemon and pump killed, the target left running: a restart (or scale, signal,
    reopen) says the supervisors were killed, names what they left and how to end it;
    before, it said the group 'is not running (state running)'."""
    group = started(TALKER, [], name="headless")
    pids = group.pids
    kill_at_once(pids["daemon"], pids["pump"])
    wait_for(lambda: group.status().running, lambda running: not running,
             what="the supervisors to be gone")
    for request in (group.restart, lambda: group.scale(2), lambda: group.signal("USR1")):
        with pytest.raises(immortal.NotRunning, match="its supervisors were killed") as caught:
            request()
        assert f"left running: {pids['target']}" in str(caught.value)
        assert "state running" not in str(caught.value)


def test_stop_ends_a_pipe_holder_whose_target_died_after_its_supervisors(
        started, tmp_path, capsys):
    """Daemon and pump killed, then the target: only the holder is left. ``stop`` (one
    name, or ``--all``) ends it, rather than saying the group is not running."""
    from immortal.cli import main

    for argv in (["stop", "holderonly"], ["stop", "--all"]):
        group, program, target = quiet_orphan(started, tmp_path, "holderonly", "keep")
        holders = orphans.holders(group.directory)
        assert holders
        os.kill(target[0], signal.SIGKILL)
        wait_for(lambda: _linux.is_alive(*target), lambda alive: not alive,
                 what="the target to be gone")
        assert main(argv) == 0, capsys.readouterr()
        assert not [h for h in holders if _linux.is_alive(*h)]
        assert orphans.holders(group.directory) == []


DAEMONIZER = """\
import os, sys, time
if os.fork() == 0:  # the program daemonizes itself: its child runs on, the parent exits
    os.setsid()
    while True:
        time.sleep(3600)
"""


def test_a_target_that_daemonizes_itself_is_told_so(started, tmp_path):
    """Its child holds the slot's lock: no new target while it lives. What the group says
    names that, not a program that 'cannot execute'."""
    program = tmp_path / "daemonizer.py"
    program.write_text(DAEMONIZER)
    group = started(str(program), [], name="forks", ready="spawn",
                    policy={"min_uptime": 0.0, "backoff_initial": 0.0, "max_restarts": 2})
    status = wait_for(group.status, lambda s: s.state == "fatal", LONG,
                      what="the restarts given up")
    text = f"{status.reason} {status.last_exit}"
    assert "did it daemonize itself?" in text and "cannot execute" not in text, text
