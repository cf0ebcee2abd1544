"""``foreground.start_group``: a group of several programs run in the foreground.

The caller's process becomes the group's daemon, as ``immortal run --foreground`` does for
a group of one: real processes, real signals, a datagram socket standing in for systemd's
``NOTIFY_SOCKET``, and a PID namespace for the PID 1 cases. ``READY=1`` waits for every
instance of every program; an apply is a reload (``RELOADING=1``, then ``READY=1`` once its
programs are rolled); exit codes as for a group of one (a target's own code aside).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import (LONG, SHORT, TALKER, children_of, descendants, proc_state, wait_for,
                      without_holder)
from immortal.group import attach
from immortal.state import read_status
from test_foreground import INIT_CHILD, UNSHARE, Foreground, _namespaces_usable, described
from test_sdnotify import Manager

pytestmark = pytest.mark.timeout(150)

FG_GROUP = str(Path(__file__).resolve().parent / "programs" / "fg_group.py")
#: the same environment in the test and in the group's caller: an apply from here leaves a
#: program whose definition it repeats untouched
ENV = {"PATH": os.environ.get("PATH", os.defpath)}


def program(*args: str, **options: Any) -> dict[str, Any]:
    return {"file": TALKER, "args": list(args), "env": ENV, "ready": "spawn", **options}


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Manager]:
    found = Manager(tmp_path / "notify")
    yield found
    found.sock.close()


@pytest.fixture
def run(home: Path) -> Iterator[Callable[..., Foreground]]:
    """``run(name, programs, start_timeout=..., env=..., prefix=...)``: a caller of
    ``foreground.start_group``; at teardown, a SIGTERM (then a KILL) to what still runs."""
    started: list[Foreground] = []

    def start(name: str, programs: dict[str, Any], *, start_timeout: float = 30.0,
              env: dict[str, str] | None = None,
              prefix: list[str] | None = None) -> Foreground:
        popen = subprocess.Popen(
            [*(prefix or []), sys.executable, FG_GROUP, name, json.dumps(programs),
             str(start_timeout)],
            env={**os.environ, "IMMORTAL_HOME": str(home), **(env or {})},
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        fg = Foreground(popen, home, name)
        started.append(fg)
        return fg

    yield start
    for fg in started:
        if fg.popen.poll() is None:
            for pid in [fg.popen.pid, *children_of(fg.popen.pid)]:
                os.kill(pid, signal.SIGTERM)
            try:
                fg.popen.communicate(timeout=LONG)
            except subprocess.TimeoutExpired:
                for pid in [fg.popen.pid, *descendants(fg.popen.pid)]:
                    os.kill(pid, signal.SIGKILL)
                fg.popen.communicate(timeout=LONG)


def output(fg: Foreground, name: str) -> str:
    path = fg.directory / "programs" / name / "output.log"
    return path.read_text() if path.exists() else ""


def readies(messages: list[str]) -> int:
    return sum(1 for m in messages if m.split("\n")[0] == "READY=1")


def test_ready_once_every_instance_of_every_program_is_then_a_stop_exits_0(run, manager):
    fg = run("pair", {"web": program("--trap", "USR1", workers=2),
                      "jobs": program("--trap", "USR1", "--out", "1",
                                      ready="line:^got USR1")},
             env={"NOTIFY_SOCKET": str(manager.path)})
    # Its trap is set once it printed: the only instance not ready yet.
    wait_for(lambda: output(fg, "jobs"), lambda text: "out 1" in text, LONG, "'out 1'")
    manager.wait_for("2/3 instances ready")
    status = read_status(fg.directory)
    assert status.pids["daemon"] == fg.popen.pid  # no fork: the caller itself
    assert readies(manager.heard()) == 0
    jobs = next(entry.pid for entry in status.instances if entry.program == "jobs")
    os.kill(jobs, signal.SIGUSR1)
    manager.wait_for("READY=1")
    assert all(e.ready for e in read_status(fg.directory).instances)
    fg.popen.send_signal(signal.SIGTERM)
    manager.wait_for("STOPPING=1")
    assert fg.wait() == 0, described(fg)
    assert "started 'pair' (foreground" in fg.err and "'pair' ended: stopped" in fg.err
    assert "pair/web:1" in fg.err  # every instance named


def test_an_apply_is_one_reload_until_the_programs_it_changed_are_rolled(run, manager):
    fg = run("applied", {"web": program(), "jobs": program()},
             env={"NOTIFY_SOCKET": str(manager.path)})
    manager.wait_for("READY=1")
    web = read_status(fg.directory).programs()["web"][0].pid
    done: list[object] = []
    # jobs changes (rolled: its replacement ready once told), extra is added, web stays.
    apply = threading.Thread(target=lambda: done.append(attach("applied").apply(
        {"web": program(), "jobs": program("--trap", "USR1", "--out", "2",
                                           ready="line:^got USR1"),
         "extra": program()}, timeout=LONG)))
    apply.start()
    try:
        reloading = manager.wait_for("RELOADING=1", LONG)
        begun = next(i for i, m in enumerate(reloading) if m.startswith("RELOADING=1"))
        # Settled on its programs (extra running and ready), the roll of jobs under way.
        status = wait_for(lambda: read_status(fg.directory),
                          lambda s: "extra" in s.programs() and s.programs()["extra"][0].ready
                          and (s.roll or {}).get("state") == "rolling"
                          and (s.roll or {}).get("replacements"), LONG, "the roll of jobs")
        replacement = next(iter(status.roll["replacements"].values()))[0]
        wait_for(lambda: output(fg, "jobs"), lambda text: "out 2" in text, LONG, "'out 2'")
        assert readies(manager.heard()[begun:]) == 0  # not over: jobs is not rolled yet
        os.kill(replacement, signal.SIGUSR1)
        apply.join(LONG)
        assert not apply.is_alive()
    finally:
        apply.join(LONG)
    assert done and done[0].actions() == {"web": "unchanged", "jobs": "rolled",
                                          "extra": "added"}, done
    heard = wait_for(lambda: manager.heard()[begun:], lambda got: readies(got) == 1, SHORT,
                     "READY=1 after the apply")
    assert not any(m.startswith("RELOADING=1") for m in heard[1:])  # one reload, one pair
    status = read_status(fg.directory)
    assert status.programs()["web"][0].pid == web  # untouched
    assert status.programs()["jobs"][0].pid == replacement
    fg.popen.send_signal(signal.SIGTERM)
    assert fg.wait() == 0, described(fg)


def test_an_apply_that_changes_nothing_is_over_at_once(run, manager):
    fg = run("same", {"web": program(), "jobs": program()},
             env={"NOTIFY_SOCKET": str(manager.path)})
    before = manager.wait_for("READY=1")
    applied = attach("same").apply({"web": program(), "jobs": program()}, timeout=LONG)
    assert set(applied.actions().values()) == {"unchanged"}
    wait_for(lambda: manager.heard()[len(before):],
             lambda got: any(m.startswith("RELOADING=1") for m in got) and readies(got) == 1,
             SHORT, "RELOADING=1 then READY=1")
    fg.popen.send_signal(signal.SIGTERM)
    assert fg.wait() == 0, described(fg)


#: an apply's caller in a process of its own: ``Group.apply`` of the programs argv[2] (JSON)
#: to the group argv[1]
APPLY = ("import json, sys\nfrom immortal.group import attach\n"
         "attach(sys.argv[1]).apply(json.loads(sys.argv[2]), timeout=60)\n")


def test_an_apply_whose_caller_goes_away_before_its_rolls_ends_the_reload(run, manager,
                                                                          home):
    """The apply's caller killed while it waits for the group to take its programs (extra,
    added, is not ready yet), before it asked for the roll of jobs: nobody will ask for
    it, and the reload ends there (READY=1, a STATUS= that says so), not at systemd's
    reload timeout. jobs keeps its old process; extra runs."""
    fg = run("gone", {"web": program(), "jobs": program()},
             env={"NOTIFY_SOCKET": str(manager.path)})
    manager.wait_for("READY=1")
    jobs = read_status(fg.directory).programs()["jobs"][0].pid
    programs = {"web": program(), "jobs": program("--out", "2"),
                "extra": program("--trap", "USR1", ready="line:^got USR1")}
    caller = subprocess.Popen([sys.executable, "-c", APPLY, "gone", json.dumps(programs)],
                              env={**os.environ, "IMMORTAL_HOME": str(home)},
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        reloading = manager.wait_for("RELOADING=1", LONG)
        begun = next(i for i, m in enumerate(reloading) if m.startswith("RELOADING=1"))
        wait_for(lambda: read_status(fg.directory).programs().get("extra"),
                 lambda extra: extra and extra[0].pid and not extra[0].ready, LONG,
                 "extra running, not ready: its caller waits for it, jobs not rolled yet")
        assert readies(manager.heard()[begun:]) == 0
        caller.kill()
    finally:
        if caller.poll() is None:
            caller.kill()
        caller.communicate(timeout=LONG)
    heard = wait_for(lambda: manager.heard()[begun:], lambda got: readies(got) == 1, SHORT,
                     "READY=1 once the apply's caller is gone")
    ready = next(m for m in heard if m.split("\n")[0] == "READY=1")
    assert f"STATUS=reload abandoned: the apply's caller (pid {caller.pid}) went away " \
           "before rolling jobs" in ready, heard
    status = read_status(fg.directory)
    assert status.programs()["jobs"][0].pid == jobs  # never rolled: nobody asked
    assert status.programs()["extra"][0].pid
    fg.popen.send_signal(signal.SIGTERM)
    assert fg.wait() == 0, described(fg)


def test_sighup_rolls_every_program_and_is_a_reload(run, manager):
    fg = run("hup", {"web": program(workers=2), "jobs": program()},
             env={"NOTIFY_SOCKET": str(manager.path)})
    before = manager.wait_for("READY=1")
    old = {e.pid for e in read_status(fg.directory).instances}
    fg.popen.send_signal(signal.SIGHUP)
    heard = wait_for(lambda: manager.heard()[len(before):],
                     lambda got: any(m.startswith("RELOADING=1") for m in got)
                     and readies(got) == 1, LONG, "RELOADING=1 then READY=1")
    reloading = next(i for i, m in enumerate(heard) if m.startswith("RELOADING=1"))
    assert readies(heard[reloading:]) == 1  # READY=1 after it
    status = read_status(fg.directory)
    assert (status.roll or {}).get("state") == "done"
    now = {e.pid for e in status.instances}
    assert len(now) == 3 and not now & old  # every instance of every program replaced
    fg.popen.send_signal(signal.SIGTERM)
    assert fg.wait() == 0, described(fg)


def test_exit_codes_of_a_group_of_several(run):
    finals = {"policy": {"final_exit_codes": [7]}}
    done = run("done", {"a": program("--exit", "7", **finals),
                        "b": program("--exit", "7", **finals)})
    gave_up = run("gaveup", {"a": program("--exit", "3", policy={"max_restarts": 1,
                                                                 "min_uptime": 5}),
                             "b": program("--exit", "3", policy={"max_restarts": 1,
                                                                 "min_uptime": 5})})
    broken = run("broken", {"a": program(), "b": program("--err", "1", "--exit", "2",
                                                         ready="uptime:3")})
    # Every instance ended on a final exit code: 0 (no one target's code to pass on).
    assert done.wait() == 0, described(done)
    assert "'done' ended: stopped" in done.err
    assert gave_up.wait() == 1, described(gave_up)
    assert "ended: fatal" in gave_up.err
    assert broken.wait() == 1, described(broken)
    assert "immortal: error: group 'broken' failed to start" in broken.err
    assert "err 1" in broken.err


def test_bad_input_is_refused_before_anything(run, home):
    bad = run("bad", {"a": program(), "b": program(channel=True)})
    assert bad.wait() == 2, described(bad)
    assert "program 'b': 'channel' works in a group of one program only" in bad.err
    unknown = run("unknown", {"a": program(strategy="daemon")})
    assert unknown.wait() == 2, described(unknown)
    assert "'strategy' is the group's" in unknown.err
    assert not (home / "bad").exists() and not (home / "unknown").exists()


# --- as PID 1, in a PID namespace (a container's init) -------------------------------------

def test_as_pid_1_orphans_are_reaped_and_sigterm_stops_every_program(run, home):
    reason = _namespaces_usable(home)
    if reason is not None:
        pytest.skip(reason)
    fg = run("init", {"init": {"file": INIT_CHILD, "args": ["20"], "ready": "line:^ready",
                               "stop_timeout": 2},
                      "web": program("--trap", "USR1", workers=2, stop_timeout=2)},
             prefix=UNSHARE)
    wait_for(lambda: output(fg, "init"), lambda text: "ready" in text, LONG, "'ready'")
    # Each web instance's trap is set once it says 'ready'.
    wait_for(lambda: output(fg, "web"), lambda text: "stdout:0 | ready" in text
             and "stdout:1 | ready" in text, LONG, "each web instance's 'ready'")
    daemon = wait_for(lambda: children_of(fg.popen.pid), lambda kids: len(kids) == 1,
                      SHORT, "unshare's child")[0]
    with open(f"/proc/{daemon}/status") as handle:
        assert [line.split()[-1] for line in handle if line.startswith("NSpid:")] == ["1"]
    wait_for(lambda: without_holder(children_of(daemon)), lambda kids: len(kids) == 21, SHORT,
             "the 20 orphans among PID 1's children")
    pump = next(kid for kid in children_of(daemon) if children_of(kid))
    os.kill(daemon, signal.SIGUSR1)  # to every target: init lets its orphans go
    wait_for(lambda: output(fg, "web"), lambda text: text.count("got USR1") == 2, SHORT,
             "each web instance's 'got USR1'")
    left = wait_for(lambda: without_holder(children_of(daemon)), lambda kids: kids == [pump],
                    SHORT, "every orphan reaped")
    assert proc_state(left[0]) != "Z"
    targets = children_of(pump)
    assert len(targets) == 3
    began = time.monotonic()
    os.kill(daemon, signal.SIGTERM)
    assert fg.wait() == 0, described(fg)
    assert time.monotonic() - began < 2 + SHORT
    assert "shutdown: stop" in output(fg, "init")
