"""A group of several programs (``start_group``): one daemon and one pump for every
program's instances, each program with its own monitors, restart machines and readiness;
``GROUP/PROGRAM[:K]`` addressing; the fault model held for all of them (no line lost to a
killed pump or daemon); ``Group.apply`` (added, removed, rolled, untouched programs); and
the caller's checks of it all."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import immortal
from conftest import LONG, PROGRAMS, SHORT, children_of, cmdline, wait_for
from immortal import orphans
from immortal.holder import ENV as HOLDER_ENV
from immortal._linux import is_alive
from immortal.cli import main
from immortal.render import status_view
from test_privileges import NOBODY, PYTHON, needs_python, needs_root, proc_ids

pytestmark = pytest.mark.timeout(180)

# Each instance says who it is (its program, its number, its first argument), then writes
# numbered lines (as many as its second argument says) and waits; USR1 makes it say so.
PROGRAM = """\
import os, signal, sys, time
k = os.environ["IMMORTAL_INSTANCE"]
p = os.environ.get("IMMORTAL_PROGRAM", "-")
signal.signal(signal.SIGUSR1, lambda *_: os.write(1, b"usr1 %s %s\\n" % (p.encode(), k.encode())))
os.write(1, b"i=%s p=%s %s\\n" % (k.encode(), p.encode(), " ".join(sys.argv[1:2]).encode()))
count = int(sys.argv[2]) if len(sys.argv) > 2 else 0
for n in range(count):
    os.write(1, b"w %s %s %06d\\n" % (p.encode(), k.encode(), n))
    time.sleep(0.001)
while True:
    time.sleep(3600)
"""
LINE = re.compile(rb" stdout(?::(\d+))? \| w (\w+) (\d+) (\d+)$")


def worker(*args: str, **options: Any) -> dict[str, Any]:
    """A program of PROGRAM's, ready once it said who it is."""
    return {"file": sys.executable, "args": ["-c", PROGRAM, *args], "ready": "line:^i=",
            "stop_timeout": 5.0, **options}


@pytest.fixture
def group_started() -> Iterator[Callable[..., immortal.Group]]:
    """``group_started(name, programs, **kw)``: start_group, with a stop at teardown."""
    made: list[immortal.Group] = []

    def start(name: str, programs: dict[str, Any], **kwargs: Any) -> immortal.Group:
        group = immortal.start_group(name, programs, **kwargs)
        made.append(group)
        return group

    yield start
    for group in made:
        group.stop(timeout=LONG)


def pids(status: immortal.Status) -> dict[tuple[str | None, int], int | None]:
    return {(e.program, e.instance): e.pid for e in status.instances}


def running(group: immortal.Group, counts: dict[str, int]) -> immortal.Status:
    """The status once each program runs that many live, ready instances."""
    def whole(status: immortal.Status) -> bool:
        found = defaultdict(int)
        for e in status.instances:
            if e.state == "running" and e.ready and e.pid and is_alive(e.pid, e.start_time):
                found[e.program] += 1
        return status.running and dict(found) == counts and len(status.instances) == sum(
            counts.values())
    return wait_for(group.status, whole, LONG, what=f"instances running {counts}")


def output(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return b""


def outputs(group: immortal.Group) -> dict[str, str]:
    spec = json.loads((group.directory / "spec.json").read_text())
    return {p["name"]: p["log_path"] for p in spec["programs"]}


def logging_config(tmp_path: Path, log: Path) -> Path:
    config = tmp_path / "logging.json"
    config.write_text(json.dumps({
        "version": 1,
        "formatters": {"plain": {"format": "%(program)s|%(stream)s|%(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(log),
                              "formatter": "plain", "encoding": "utf-8"}},
        "root": {"level": "DEBUG", "handlers": ["file"]}}))
    return config


def get(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=SHORT) as answer:
        return json.loads(answer.read())


def held(group: immortal.Group) -> dict[int, int]:
    """The group's live pipe holders, each with the count of the files it holds (its fds
    from 3 on: each instance's journal and two read ends)."""
    found = {}
    for pid, _ in orphans.holders(group.directory):
        try:
            found[pid] = len(os.listdir(f"/proc/{pid}/fd")) - 3
        except OSError:
            continue
    return found


def titled(directory: Path) -> list[str]:
    """The titles of the processes that are a role of the group in ``directory``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text.startswith("immortal: ") and text.rstrip().endswith(str(directory)):
            found.append(text.split()[1])
    return sorted(found)


def test_three_programs_run_under_one_daemon_and_one_pump(group_started, tmp_path,
                                                          monkeypatch):
    monkeypatch.setenv(HOLDER_ENV, "1")  # the pipe holder, off by default: checked here
    log = tmp_path / "log.txt"
    group = group_started("site", {
        "web": {"file": str(PROGRAMS / "listener.py"), "workers": 4,
                "listen": ["tcp://127.0.0.1:0"], "ready": "line:^serving",
                "stop_timeout": 5.0},
        "worker": worker("job"),
        "log": worker("logged", monitor="logging",
                      options={"config": str(logging_config(tmp_path, log))}),
    })
    status = running(group, {"web": 4, "worker": 1, "log": 1})
    assert group.programs == ["web", "worker", "log"]
    # One daemon and one pump, the targets the pump's children.
    daemon, pump = status.pids["daemon"], status.pids["pump"]
    # Beside the pump, the daemon's pipe holder: every program's instances' files.
    holder = wait_for(lambda: held(group), lambda found: list(found.values()) == [3 * 6],
                      SHORT, what="one holder of the six instances' files")
    assert sorted(children_of(daemon)) == sorted([pump, *holder])
    assert sorted(children_of(pump)) == sorted(e.pid for e in status.instances)
    assert titled(group.directory) == ["daemon", "pump"]
    # Each program's lines in its own monitors, each program's files in its directory.
    files = outputs(group)
    assert files["web"] == str(group.directory / "programs" / "web" / "output.log")
    wait_for(lambda: output(files["worker"]), lambda out: b"stdout | i=0 p=worker job" in out,
             SHORT, what="the worker's line in its own file")
    wait_for(lambda: output(log), lambda out: b"log|stdout|i=0 p=log logged" in out, SHORT,
             what="the logged program's line in the logging monitor")
    web = wait_for(lambda: output(files["web"]), lambda out: out.count(b"| serving ") == 4,
                   SHORT, what="the four servers' lines")
    assert b"p=worker" not in web and b"p=log" not in web
    assert b"serving" not in output(files["worker"]) + output(log)
    assert b"p=log" not in output(files["worker"])
    assert files["log"] is None or not os.path.exists(files["log"])
    assert sorted(os.listdir(group.directory / "programs" / "web")) == [
        "output.log", "target.1.lock", "target.2.lock", "target.3.lock", "target.lock"]
    # The web program's servers share the one socket, and know their program.
    port = int(status.listen[0].rsplit(":", 1)[1])
    seen = get(port)
    assert seen["env"]["IMMORTAL_PROGRAM"] == "web" and seen["env"]["LISTEN_FDS"] == "1"
    # One instance of one program killed: it alone restarts.
    before = pids(status)
    os.kill(before[("web", 2)], signal.SIGKILL)
    after = wait_for(group.status, lambda s: pids(s).get(("web", 2)) not in (
        None, before[("web", 2)]) and all(e.state == "running" for e in s.instances),
        LONG, what="web:2 again")
    assert {key: pid for key, pid in pids(after).items() if key != ("web", 2)} == {
        key: pid for key, pid in before.items() if key != ("web", 2)}
    assert [(e.program, e.instance, e.restarts) for e in after.instances if e.restarts] == [
        ("web", 2, 1)]
    assert "site/web:2" in str(after) and "site/web: running" in str(after)


def numbered(path: str) -> dict[int, list[int]]:
    """Each instance's numbered lines in a file monitor's output, in order."""
    found: dict[int, list[int]] = defaultdict(list)
    for line in output(path).split(b"\n"):
        match = LINE.search(line)
        if match:
            found[int(match.group(3))].append(int(match.group(4)))
    return found


def test_the_pump_and_the_daemon_killed_lose_no_line_of_any_program(group_started):
    count = 2000
    group = group_started("pair", {"a": worker("steady", str(count), workers=2),
                                   "b": worker("steady", str(count))})
    status = running(group, {"a": 2, "b": 1})
    before = pids(status)
    files = outputs(group)
    wait_for(lambda: (numbered(files["a"]), numbered(files["b"])),
             lambda seen: len(seen[0]) == 2 and min(map(len, seen[0].values())) >= 200
             and len(seen[1].get(0, ())) >= 200, LONG, what="lines flowing")

    def whole(gone: set[int]) -> immortal.Status:
        return wait_for(group.status, lambda s: s.running and pids(s) == before and all(
            s.pids.get(role) not in (None, *gone)
            and is_alive(s.pids[role], s.start_times.get(role))
            for role in ("daemon", "pump")), LONG, what="the group whole again")

    first = group.status().pids
    os.kill(first["pump"], signal.SIGKILL)
    second = whole({first["pump"]})
    os.kill(second.pids["daemon"], signal.SIGKILL)
    whole({first["pump"], second.pids["daemon"]})
    for program, instances in (("a", 2), ("b", 1)):
        lines = wait_for(lambda: numbered(files[program]), lambda seen: all(
            len(set(seen[k])) == count for k in range(instances)), LONG,
            what=f"every line of {program}")
        for k in range(instances):
            assert lines[k] == list(range(count)), f"{program}:{k}: lost, repeated or reordered"
    assert all(e.restarts == 0 for e in group.status().instances)
    assert all(is_alive(pid, None) for pid in before.values() if pid)


def test_apply_rolls_the_changed_adds_and_removes_and_leaves_the_others(
        group_started, monkeypatch):
    monkeypatch.setenv(HOLDER_ENV, "1")  # the pipe holder, off by default: checked here
    programs = {"a": worker("one", workers=2), "b": worker("two"), "c": worker("three")}
    group = group_started("shop", programs)
    before = pids(running(group, {"a": 2, "b": 1, "c": 1}))
    # a changed (its args), c removed, d added; b as it was.
    new = {"a": worker("one-more", workers=2), "b": worker("two"), "d": worker("four")}
    applied = group.apply(new)
    assert applied.actions() == {"a": "rolled", "b": "unchanged", "d": "added",
                                 "c": "removed"}
    now = pids(running(group, {"a": 2, "b": 1, "d": 1}))
    assert now[("b", 0)] == before[("b", 0)]
    assert now[("a", 0)] != before[("a", 0)] and now[("a", 1)] != before[("a", 1)]
    assert not is_alive(before[("c", 0)], None)
    assert group.programs == ["a", "b", "d"]
    files = outputs(group)
    wait_for(lambda: output(files["a"]), lambda out: b"p=a one-more" in out, SHORT,
             what="the rolled program's new line")
    wait_for(lambda: output(files["d"]), lambda out: b"i=0 p=d four" in out, SHORT,
             what="the added program's line")
    c_log = group.directory / "programs" / "c" / "output.log"
    assert b"shutdown: removed from the group" in output(c_log)
    # A count alone: scaled, the others untouched.
    applied = group.apply({**new, "b": worker("two", workers=3)})
    assert applied.actions() == {"a": "unchanged", "b": "scaled", "d": "unchanged"}
    later = pids(running(group, {"a": 2, "b": 3, "d": 1}))
    assert {key: later[key] for key in now} == now
    # The pipe holder was replaced by one that holds the new instances' files too.
    wait_for(lambda: held(group), lambda found: list(found.values()) == [3 * 6], SHORT,
             what="one holder of the six instances' files")
    # The daemon, then the pump, killed: their successors run the applied programs, the
    # same processes.
    for role in ("daemon", "pump"):
        dead = group.status().pids[role]
        os.kill(dead, signal.SIGKILL)
        wait_for(group.status, lambda s: s.running and pids(s) == later and all(
            s.pids.get(r) not in (None, dead) and is_alive(s.pids[r], s.start_times.get(r))
            for r in ("daemon", "pump")), LONG, what=f"the group whole after its {role} died")
    os.kill(later[("d", 0)], signal.SIGKILL)
    again = wait_for(group.status, lambda s: pids(s).get(("d", 0)) not in (
        None, later[("d", 0)]), LONG, what="the added program restarted by the new pump")
    assert [e.restarts for e in again.instances if e.program == "d"] == [1]


def test_apply_with_a_broken_change_keeps_the_old_definition(group_started, tmp_path):
    group = group_started("safe", {"a": worker("fine"), "b": worker("other")})
    before = pids(running(group, {"a": 1, "b": 1}))
    broken = {"file": sys.executable, "args": ["-c", "import sys; sys.exit(3)"],
              "ready": "line:^i=", "ready_timeout": 5.0, "stop_timeout": 5.0}
    with pytest.raises(immortal.StartError, match="keeps its old definition") as caught:
        group.apply({"a": broken, "b": worker("other")})
    assert pids(running(group, {"a": 1, "b": 1})) == before
    spec = json.loads((group.directory / "spec.json").read_text())
    assert [p["args"][-1] for p in spec["programs"]] == ["fine", "other"]
    assert "; done:" not in str(caught.value) and "not rolled" not in str(caught.value)


def test_a_change_with_more_instances_rolls_only_the_old_ones(group_started, tmp_path):
    """A new definition and a higher count: the instances the apply adds are spawned with
    the new definition, once; the roll replaces the old instance alone (before, it rolled
    the new ones too, spawning each twice)."""
    out = tmp_path / "a.log"
    group = group_started("grown", {"a": worker("one", options={"output": str(out)}),
                                    "b": worker("other")})
    old = pids(running(group, {"a": 1, "b": 1}))
    applied = group.apply({"a": worker("two", workers=3, options={"output": str(out)}),
                           "b": worker("other")})
    assert applied.actions()["a"] == "rolled"
    status = running(group, {"a": 3, "b": 1})
    now = pids(status)
    assert now[("a", 0)] != old[("a", 0)] and now[("b", 0)] == old[("b", 0)]
    assert status.roll["slots"] == ["a:0"], status.roll
    for k in (0, 1, 2):
        assert Path(f"/proc/{now[('a', k)]}/cmdline").read_bytes().endswith(b"\0two\0")
    spawns = [line for line in out.read_text().splitlines() if "spawn pid" in line]
    assert len(spawns) == 4, spawns  # the first, two added, one replacement


def test_a_failed_apply_says_what_it_did_and_what_it_left(group_started):
    """The roll of the first changed program fails: the error says which programs the
    apply did change (one added) and which changed one it left unrolled, for the next."""
    group = group_started("told", {"a": worker("fine"), "b": worker("other")})
    running(group, {"a": 1, "b": 1})
    broken = {"file": sys.executable, "args": ["-c", "import sys; sys.exit(3)"],
              "ready": "line:^i=", "ready_timeout": 5.0, "stop_timeout": 5.0}
    with pytest.raises(immortal.StartError) as caught:
        group.apply({"a": broken, "b": worker("changed"), "c": worker("new")})
    said = str(caught.value)
    assert said.endswith("program 'a' keeps its old definition; done: c added; not rolled "
                         "yet (the next apply rolls them): b"), said


GATED = """\
import os, sys, time
while not os.path.exists(sys.argv[1] + os.environ["IMMORTAL_INSTANCE"]):
    time.sleep(0.05)
print("i=gated", flush=True)
while True:
    time.sleep(3600)
"""


def test_an_apply_while_another_is_in_progress_is_refused(group_started, tmp_path):
    """Two applies at once (two ``reload``s): the second is refused while the first runs,
    until its instances are ready. Before, it went through: each compared the programs
    with what the other was changing, the last to write won, and each reported its own
    file as applied (the first waited out its patience for a count no longer asked)."""
    gate = tmp_path / "gate"
    Path(f"{gate}0").touch()
    gated = {"file": sys.executable, "args": ["-c", GATED, str(gate)], "ready": "line:^i=",
             "stop_timeout": 5.0}
    group = group_started("twice", {"a": gated, "b": worker("two")})
    running(group, {"a": 1, "b": 1})
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(group.apply, {"a": {**gated, "workers": 2}, "b": worker("two")})
        wait_for(group.status, lambda s: len(s.instances) == 3, LONG,
                 what="the first apply's new instance")
        with pytest.raises(immortal.NotRunning, match="another change of its programs"):
            immortal.attach("twice").apply({"a": gated, "b": worker("three")})
        Path(f"{gate}1").touch()
        assert first.result(timeout=LONG).actions() == {"a": "scaled", "b": "unchanged"}
    spec = json.loads((group.directory / "spec.json").read_text())
    assert [p["args"][-1] for p in spec["programs"]] == [str(gate), "two"]


# An apply from another process (as ``immortal reload`` is), which prints what it did; with
# "die", its caller dies where it would ask for its first roll (a reload killed there).
APPLIES = """\
import json, os, signal, sys
import immortal
from immortal.group import Group
if sys.argv[3:] == ["die"]:
    Group._roll = lambda *_, **__: os.kill(os.getpid(), signal.SIGKILL)
print(json.dumps(immortal.attach(sys.argv[1]).apply(json.loads(sys.argv[2])).actions()))
"""


def test_a_change_whose_apply_died_before_its_roll_is_rolled_by_the_next(group_started):
    """A reload killed between the group taking the new definition and its roll: the old
    processes run on, and the next apply of the same file rolls them (before, it found
    the definition unchanged, and they ran the old one until they died)."""
    group = group_started("halfway", {"a": worker("one"), "b": worker("two")})
    before = pids(running(group, {"a": 1, "b": 1}))
    new = json.dumps({"a": worker("one-more"), "b": worker("two")})

    def apply(*how: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", APPLIES, "halfway", new, *how],
                              capture_output=True, text=True, timeout=LONG)

    assert apply("die").returncode == -signal.SIGKILL
    halfway = group.status()
    assert pids(halfway) == before
    # Shown: 'a' runs the definition before the apply (and 'b', by its environment).
    assert halfway.unrolled[0] == "a"
    assert f"  unrolled {', '.join(halfway.unrolled)}: changed by the last apply and not " \
        "rolled yet" in str(halfway)
    # (b differs by the environment of the caller: this process's, then the other's.)
    assert json.loads(apply().stdout)["a"] == "rolled"
    now = pids(running(group, {"a": 1, "b": 1}))
    assert now[("a", 0)] != before[("a", 0)]
    assert Path(f"/proc/{now[('a', 0)]}/cmdline").read_bytes().endswith(b"\0one-more\0")
    assert json.loads(apply().stdout) == {"a": "unchanged", "b": "unchanged"}
    assert group.status().unrolled == []


def test_a_new_start_leaves_nothing_for_a_dead_apply_to_roll(group_started):
    """A reload killed before its roll, then the group stopped and started anew on the
    new file (``down``, ``up``): every program runs its new definition, and the next
    apply finds nothing to roll (before, it rolled what the dead reload had left)."""
    group = group_started("anew", {"a": worker("one"), "b": worker("two")})
    running(group, {"a": 1, "b": 1})
    new = {"a": worker("one-more"), "b": worker("two")}
    died = subprocess.run([sys.executable, "-c", APPLIES, "anew", json.dumps(new), "die"],
                          capture_output=True, text=True, timeout=LONG)
    assert died.returncode == -signal.SIGKILL, died.stderr
    assert (group.directory / "apply.unrolled.json").exists()
    group.stop()
    again = group_started("anew", new)
    before = pids(running(again, {"a": 1, "b": 1}))
    assert not (again.directory / "apply.unrolled.json").exists()
    assert again.apply(new).actions() == {"a": "unchanged", "b": "unchanged"}
    assert pids(again.status()) == before


def test_addresses_on_the_command_line(group_started, capsys):
    group = group_started("cli", {"web": worker("w", workers=2), "job": worker("j")})
    status = running(group, {"web": 2, "job": 1})
    before = pids(status)
    files = outputs(group)
    assert main(["signal", "cli/job", "USR1"]) == 0
    wait_for(lambda: output(files["job"]), lambda out: b"usr1 job 0" in out, SHORT,
             what="the job's USR1 line")
    assert b"usr1" not in output(files["web"])
    assert main(["signal", "cli/web:1", "USR1"]) == 0
    wait_for(lambda: output(files["web"]), lambda out: b"stdout:1 | usr1 web 1" in out,
             SHORT, what="web:1's USR1 line")
    assert b"usr1 web 0" not in output(files["web"])
    assert main(["restart", "cli/web:0"]) == 0
    after = pids(running(group, {"web": 2, "job": 1}))
    assert after[("web", 0)] != before[("web", 0)]
    assert {k: v for k, v in after.items() if k != ("web", 0)} == {
        k: v for k, v in before.items() if k != ("web", 0)}
    capsys.readouterr()
    assert main(["logs", "cli/job", "-n", "50"]) == 0
    shown = capsys.readouterr().out
    assert "i=0 p=job j" in shown and "p=web" not in shown
    assert main(["scale", "cli/web", "3"]) == 0
    assert "cli/web:2" in capsys.readouterr().out
    running(group, {"web": 3, "job": 1})
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert all(row in listed for row in ("cli/web ", "cli/web:2", "cli/job:0"))
    assert main(["status", "cli"]) == 0
    assert "cli/job: running" in capsys.readouterr().out
    assert main(["stop", "cli/web:1"]) == 2
    assert "it stops the whole group, or that program" in capsys.readouterr().err
    assert main(["signal", "cli/nosuch", "USR1"]) == 2
    assert "has no program 'nosuch'" in capsys.readouterr().err
    assert main(["signal", "cli:0", "USR1"]) == 2
    assert "name the one of instance 0" in capsys.readouterr().err
    assert main(["stop", "cli/web"]) == 0  # that program alone; the group runs on
    assert capsys.readouterr().out == "stopped cli/web\n"
    assert main(["status", "cli"]) == 0
    shown = capsys.readouterr().out
    assert "cli/job: running" in shown and "cli/web" not in shown


def test_a_program_not_ready_fails_the_start_naming_it_and_leaves_nothing(home):
    with pytest.raises(immortal.StartError, match=r"instance b:0|program 'b'") as caught:
        immortal.start_group("broken", {
            "a": worker("fine"),
            "b": {"file": sys.executable, "args": ["-c", "import sys; print('bad', "
                                                         "file=sys.stderr); sys.exit(5)"],
                  "ready": "uptime:1"}})
    assert caught.value.status is not None and caught.value.status.code == 5
    assert caught.value.stderr == ["bad"]
    assert not (home / "broken" / "spec.json").exists()
    assert not (home / "broken" / "status.json").exists()


def test_an_unattached_group_of_programs_scales_and_applies(group_started):
    group = group_started("loose", {"a": worker("x"), "b": worker("y")},
                          strategy="unattached")
    status = running(group, {"a": 1, "b": 1})
    assert "daemon" not in status.pids
    group.scale(2, program="a")
    running(group, {"a": 2, "b": 1})
    kept = pids(group.status())[("a", 1)]
    applied = group.apply({"a": worker("x", workers=2), "c": worker("z")})
    assert applied.actions() == {"a": "unchanged", "c": "added", "b": "removed"}
    assert pids(running(group, {"a": 2, "c": 1}))[("a", 1)] == kept


@pytest.mark.parametrize("strategy", ["daemon", "unattached"])
def test_an_apply_that_sets_a_count_ends_the_scale_asked_before(
        group_started, strategy, capsys):
    """A scale done, then an apply back to the file's count: the status shows no scale
    "not done yet" (before, it showed the scale's count beside what ran, for ever)."""
    group = group_started("counted", {"a": worker("x"), "b": worker("y")}, strategy=strategy)
    running(group, {"a": 1, "b": 1})
    group.scale(2, program="a")
    group.scale(2, program="b")
    applied = group.apply({"a": worker("x"), "b": worker("y", workers=2)})
    assert applied.actions() == {"a": "scaled", "b": "unchanged"}
    status = running(group, {"a": 1, "b": 2})
    assert set(status.scales) == {"b"}  # the scale the apply left as it was
    assert main(["status", "counted"]) == 0
    assert "  scale " not in capsys.readouterr().out


# Bad input: one clear error in the caller, naming the program and the field; nothing made.
BAD = [
    ("not a mapping", ["web"], immortal.InvalidType, "'programs' must be a mapping"),
    ("empty", {}, immortal.InvalidSpec, "names no program"),
    ("bad name", {"we/b": worker()}, immortal.InvalidSpec, "a program's name must be"),
    ("options not a mapping", {"web": "server.py"}, immortal.InvalidType,
     "program 'web': its options must be a mapping"),
    ("no file", {"web": {"workers": 2}}, immortal.InvalidSpec,
     "program 'web': 'file' is missing"),
    ("unknown keyword", {"web": {**worker(), "wrkers": 2}}, immortal.UnknownName,
     "program 'web': unknown keyword argument 'wrkers' (did you mean 'workers'?)"),
    ("a group keyword", {"web": {**worker(), "strategy": "daemon"}}, immortal.InvalidSpec,
     "program 'web': 'strategy' is the group's"),
    ("missing file", {"web": {"file": "/nonexistent/server.py"}}, immortal.TargetNotFound,
     "program 'web': "),
    ("bad workers", {"web": {**worker(), "workers": 0}}, immortal.InvalidSpec,
     "program 'web': 'workers' must be"),
    ("bad ready", {"a": worker(), "web": {**worker(), "ready": "lines:x"}},
     immortal.UnknownName, "program 'web': "),
    ("channel", {"web": {**worker(), "channel": True}}, immortal.InvalidSpec,
     "program 'web': 'channel' works in a group of one program only"),
    ("shared address", {"a": {**worker(), "listen": ["tcp://127.0.0.1:8123"]},
                        "b": {**worker(), "listen": ["tcp://127.0.0.1:8123"]}},
     immortal.InvalidSpec, "program 'b': 'listen' 'tcp://127.0.0.1:8123' is program 'a'"),
    ("bad monitor option", {"web": {**worker(), "options": {"outptu": "x"}}},
     immortal.MonitorOptionsError, "program 'web': the file monitor has no option 'outptu'"),
]


@pytest.mark.parametrize("programs, kind, words", [case[1:] for case in BAD],
                         ids=[case[0] for case in BAD])
def test_bad_programs_are_refused_in_the_caller(home, programs, kind, words):
    with pytest.raises(kind) as caught:
        immortal.start_group("bad", programs)
    assert words in str(caught.value)
    assert not (home / "bad").exists()


def test_bad_group_arguments_and_bad_applies(group_started, started, home):
    with pytest.raises(immortal.InvalidSpec, match="'name' must be"):
        immortal.start_group("a/b", {"x": worker()})
    with pytest.raises(immortal.UnknownName, match="strategy"):
        immortal.start_group("g", {"x": worker()}, strategy="daemonic")
    plain = started(sys.executable, ["-c", PROGRAM], name="plain")
    with pytest.raises(immortal.InvalidSpec, match="runs one program"):
        plain.apply({"x": worker()})
    with pytest.raises(immortal.InvalidSpec, match="runs one program"):
        plain.restart(program="x")
    group = group_started("apply", {"a": worker(), "b": worker()})
    running(group, {"a": 1, "b": 1})
    with pytest.raises(immortal.UnknownName, match="program 'a': unknown keyword"):
        group.apply({"a": {**worker(), "wokers": 2}})
    with pytest.raises(immortal.InvalidSpec, match="cannot be added to a running group"):
        group.apply({"a": worker(), "c": {**worker(), "listen": ["tcp://127.0.0.1:0"]}})
    with pytest.raises(immortal.InvalidSpec, match="needs the group's notify socket"):
        group.apply({"a": {**worker(), "ready": "notify"}, "b": worker()})
    with pytest.raises(immortal.InvalidSpec, match="name the one of instance 0"):
        group.restart(instance=0)
    with pytest.raises(immortal.InvalidSpec, match="name the one to scale"):
        group.scale(2)
    with pytest.raises(immortal.InvalidSpec, match="has no program 'c'"):
        group.signal("USR1", program="c")
    with pytest.raises(immortal.InvalidSpec, match="runs several programs, each with its own"):
        list(group.tail())
    assert group.programs == ["a", "b"]


def test_two_listening_programs_each_get_their_own_socket_at_fd_3(group_started):
    server = {"file": str(PROGRAMS / "listener.py"), "ready": "line:^serving",
              "stop_timeout": 5.0}
    group = group_started("ports", {
        "a": {**server, "listen": ["tcp://127.0.0.1:0"]},
        "b": {**server, "workers": 2, "listen": ["tcp://127.0.0.1:0", "tcp://127.0.0.1:0"]},
    })
    status = running(group, {"a": 1, "b": 2})
    ports = [int(address.rsplit(":", 1)[1]) for address in status.listen]
    spec = json.loads((group.directory / "spec.json").read_text())
    assert [p["listen"] for p in spec["programs"]] == [status.listen[:1], status.listen[1:]]
    a, b, b2 = get(ports[0]), get(ports[1]), get(ports[2])
    assert a["env"]["IMMORTAL_PROGRAM"] == "a" and a["env"]["LISTEN_FDS"] == "1"
    assert [s["fd"] for s in a["sockets"]] == [3]
    for seen in (b, b2):
        assert seen["env"]["IMMORTAL_PROGRAM"] == "b" and seen["env"]["LISTEN_FDS"] == "2"
        assert seen["env"]["LISTEN_PID"] == str(seen["pid"])
        assert [(s["fd"], s["address"][1]) for s in seen["sockets"]] == [
            (3, ports[1]), (4, ports[2])]
        assert a["fds"]["3"] not in seen["fds"].values()  # a's socket is not b's
    assert b2["fd"] == 4 and b["fd"] == 3


def test_a_development_group_of_programs_runs_and_stops(home):
    group = immortal.start_group("dev", {"a": worker("x"), "b": worker("y", workers=2)},
                                 strategy="development")
    try:
        status = running(group, {"a": 1, "b": 2})
        assert "daemon" not in status.pids
        assert sorted(children_of(status.pids["pump"])) == sorted(
            e.pid for e in status.instances)
    finally:
        final = group.stop(timeout=LONG)
    assert final.state == "stopped" and not final.running


@pytest.mark.parametrize("backpressure", ["block", "drop"])
def test_apply_replaces_a_programs_monitors(group_started, tmp_path, backpressure):
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    group = group_started("mon", {
        "a": worker("x", options={"output": str(first)}, backpressure=backpressure),
        "b": worker("y")})
    before = pids(running(group, {"a": 1, "b": 1}))
    applied = group.apply({"a": worker("x", options={"output": str(second)},
                                       backpressure=backpressure), "b": worker("y")})
    assert applied.actions() == {"a": "rolled", "b": "unchanged"}
    now = pids(running(group, {"a": 1, "b": 1}))
    assert now[("b", 0)] == before[("b", 0)] and now[("a", 0)] != before[("a", 0)]
    wait_for(lambda: output(second), lambda out: b"event  | pump start" in out
             and b"stdout | i=0 p=a x" in out, SHORT, what="the new monitor's lines")
    assert b"shutdown: its monitors were changed" in output(first)
    assert outputs(group)["a"] == str(second)
    assert group.status().monitors == {"a/file": {"dropped": 0}, "b/file": {"dropped": 0}}


# The operator's options are each program's own.
def environ(pid: int) -> dict[str, str]:
    data = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in data.decode().split("\0") if "=" in item)


def quiet(seconds: float) -> None:
    begun = time.monotonic()
    wait_for(lambda: time.monotonic() - begun, lambda t: t >= seconds, LONG,
             what="a quiet while")


def test_each_program_watches_its_own_files_and_has_its_own_comment(group_started, tmp_path):
    first, second = tmp_path / "a.cfg", tmp_path / "b.cfg"
    first.write_text("1")
    second.write_text("1")
    group = group_started("ops", {
        "a": worker("x", watch=[str(first)], watch_delay=0.2, comment="front"),
        "b": worker("y", comment="back"),
        "c": worker("z")})
    before = pids(running(group, {"a": 1, "b": 1, "c": 1}))
    assert {p: environ(before[(p, 0)]).get("IMMORTAL_COMMENT") for p in "abc"} == {
        "a": "front", "b": "back", "c": None}
    status = group.status()
    assert status.comment == "a: front, b: back"
    assert "comment  a: front, b: back" in status_view(status)
    title = f"immortal: daemon {group.directory} [front, back]"
    wait_for(lambda: cmdline(status.pids["daemon"]), lambda line: line.startswith(title),
             SHORT, what="the daemon's title with the programs' comments")
    # a's file changed: a alone restarts, for that reason.
    first.write_text("2")
    after = wait_for(group.status, lambda s: pids(s).get(("a", 0)) not in (
        None, before[("a", 0)]) and all(e.state == "running" for e in s.instances), LONG,
        what="a restarted by its watch")
    assert {k: v for k, v in pids(after).items() if k[0] != "a"} == {
        k: v for k, v in before.items() if k[0] != "a"}
    entry = next(e for e in after.instances if e.program == "a")
    assert (entry.last_exit.decision, entry.last_exit.reason) == ("restart", "watch")
    # An apply moves the watch from a to b: b's file restarts b, a's nothing any more.
    applied = group.apply({"a": worker("x", comment="front"),
                           "b": worker("y", comment="back", watch=[str(second)],
                                       watch_delay=0.2),
                           "c": worker("z")})
    assert applied.actions() == {"a": "rolled", "b": "rolled", "c": "unchanged"}
    now = pids(running(group, {"a": 1, "b": 1, "c": 1}))
    first.write_text("3")
    second.write_text("2")
    wait_for(group.status, lambda s: pids(s).get(("b", 0)) not in (None, now[("b", 0)]),
             LONG, what="b restarted by its new watch")
    quiet(1.0)
    later = pids(running(group, {"a": 1, "b": 1, "c": 1}))
    assert later[("a", 0)] == now[("a", 0)] and later[("c", 0)] == now[("c", 0)]


def test_a_programs_memory_limit_restarts_its_own_targets_only(group_started):
    group = group_started("mem", {"small": worker("s", memory_limit="1M", memory_window=0.3),
                                  "free": worker("f")})
    before = pids(running(group, {"small": 1, "free": 1}))
    status = wait_for(group.status, lambda s: any(
        e.program == "small" and e.last_exit is not None and e.last_exit.reason == "memory"
        for e in s.instances), LONG, what="small restarted for its memory")
    assert pids(status)[("free", 0)] == before[("free", 0)]
    assert [e.restarts for e in status.instances if e.program == "free"] == [0]


@needs_root
@needs_python
def test_a_program_runs_as_its_own_user(group_started):
    assert NOBODY is not None
    low = {"file": PYTHON, "args": ["-c", PROGRAM, "low"], "ready": "line:^i=",
           "stop_timeout": 5.0, "user": "nobody", "cwd": "/"}
    group = group_started("users", {"low": low, "high": worker("high")})
    now = pids(running(group, {"low": 1, "high": 1}))
    assert proc_ids(now[("low", 0)])["Uid"] == [NOBODY.pw_uid] * 4
    assert proc_ids(now[("high", 0)])["Uid"] == [0] * 4
    assert environ(now[("low", 0)])["USER"] == "nobody"
    status = group.status()
    assert status.user == "low: nobody"
    for role in ("daemon", "pump"):
        assert proc_ids(status.pids[role])["Uid"] == [0] * 4


@pytest.mark.parametrize("role", ["pump", "daemon"])
def test_a_programs_roll_survives_a_supervisors_death(group_started, tmp_path, role):
    """A roll of one program's instances, its slots ``web:K``: the supervisor killed while
    a replacement waits to be ready, its successor takes the replacement over and ends the
    roll; the other program's target is untouched."""
    server = {"file": str(PROGRAMS / "listener.py"), "workers": 2,
              "args": ["--graceful", "--state", str(tmp_path / "pids"), "--delay", "1"],
              "listen": ["tcp://127.0.0.1:0"], "ready": "line:^serving",
              "ready_timeout": LONG, "stop_timeout": SHORT}
    group = group_started("rolled", {"web": server, "job": worker("j")})
    before = pids(running(group, {"web": 2, "job": 1}))
    outcome: list[BaseException | None] = []

    def restart() -> None:
        try:
            group.restart(program="web")
            outcome.append(None)
        except BaseException as exc:  # what the caller of a roll sees
            outcome.append(exc)

    caller = threading.Thread(target=restart)
    caller.start()
    rolling = wait_for(group.status, lambda s: (s.roll or {}).get("replacements"), SHORT,
                       what="a replacement spawned")
    (slot, (replacement, _)), = rolling.roll["replacements"].items()
    assert slot == "web:0"
    assert status_view(rolling).count(f"replacing rolled/web:0 pid {replacement}") == 1
    os.kill(rolling.pids[role], signal.SIGKILL)
    caller.join(LONG)
    assert outcome == [None]
    status = group.status()
    assert status.roll["state"] == "done" and status.roll["replaced"] == ["web:0", "web:1"]
    after = pids(status)
    assert after[("web", 0)] == replacement  # taken over, not spawned again
    assert after[("job", 0)] == before[("job", 0)]
    assert after[("web", 1)] not in (None, before[("web", 1)])


def test_a_group_of_one_started_by_a_program_is_no_program(started):
    """A target of a group of one does not inherit its starter's IMMORTAL_PROGRAM (a
    resumed roll, among others, tells a program's instances by it)."""
    group = started(sys.executable, ["-c", PROGRAM, "inner"], name="inner",
                    env={**os.environ, "IMMORTAL_PROGRAM": "outer"}, ready="line:^i=")
    log = group.directory / "output.log"
    wait_for(lambda: output(log), lambda out: b"i=0 p=- inner" in out, SHORT,
             what="the target's line, with no program")


# A job: says it ran, and exits 0, which its policy takes as done (a final exit code).
JOB = {"file": sys.executable, "args": ["-c", "print('ran', flush=True)"], "ready": "spawn",
       "policy": {"final_exit_codes": [0]}}


def finished_job(group: immortal.Group, runs: int = 1) -> immortal.Status:
    """The status once the job has run ``runs`` times and finished."""
    return wait_for(group.status, lambda s: [(e.finished, e.spawned) for e in s.instances
                                             if e.program == "job"] == [(True, runs)],
                    LONG, what=f"the job finished after {runs} run(s)")


def test_restarting_a_group_of_programs_of_one_instance_each_returns_at_once(group_started):
    """Two programs of one instance each: a restart of the group restarts both, all at
    once, as its pump does it (no roll), and returns once they run again."""
    group = group_started("twoplain", {"a": worker("a"), "b": worker("b")})
    before = running(group, {"a": 1, "b": 1})
    begun = time.monotonic()
    group.restart()
    took = time.monotonic() - begun
    now = running(group, {"a": 1, "b": 1})
    assert set(pids(now).values()).isdisjoint(pids(before).values())
    assert took < 5.0 + SHORT, f"the restart took {took:.1f} s"


def test_a_job_that_finished_is_done_not_failing(group_started):
    """A program that exits with a final exit code (a job) in a group that runs on: the
    group is ready, an apply of the same programs settles at once, a restart of the group
    runs the job again, and so does a restart of the job alone."""
    group = group_started("withjob", {"web": worker("web"), "job": JOB})
    finished_job(group)
    status = group.status()
    assert status.ready and status.running, status
    with ThreadPoolExecutor(1) as pool:  # an apply that changes nothing returns at once
        applied = pool.submit(group.apply, {"web": worker("web"), "job": JOB}).result(SHORT)
    assert applied.unchanged == ("web", "job")
    web = pids(group.status())[("web", 0)]
    group.restart(timeout=5.0)
    status = finished_job(group, 2)
    assert pids(status)[("web", 0)] not in (None, web)
    group.restart(program="job")
    finished_job(group, 3)
    out = output(outputs(group)["job"])
    assert out.count(b"ran") == 3, out


def test_an_apply_does_not_wait_for_a_program_it_leaves_that_gave_up(group_started):
    """A program whose restarts were given up (fatal) and that the apply leaves as it is:
    the apply of the others returns at once; a restart of it runs it again."""
    failing = {"file": sys.executable, "args": ["-c", "import sys; sys.exit(3)"],
               "ready": "spawn", "policy": {"max_restarts": 1, "backoff_initial": 0.01}}
    group = group_started("withfatal", {"web": worker("web"), "bad": failing})
    wait_for(group.status, lambda s: [e.state for e in s.instances if e.program == "bad"]
             == ["fatal"], LONG, what="the failing program fatal")
    with ThreadPoolExecutor(1) as pool:
        applied = pool.submit(group.apply, {"web": worker("web", "2"), "bad": failing}
                              ).result(LONG)
    assert (applied.changed, applied.unchanged) == (("web",), ("bad",))
    spawned = next(e.spawned for e in group.status().instances if e.program == "bad")
    try:  # it runs again (and fails again: the restart may see it running, or ended)
        group.restart(program="bad", timeout=1.0)
    except immortal.ImmortalError:
        pass
    wait_for(group.status, lambda s: [e.spawned for e in s.instances if e.program == "bad"]
             > [spawned], LONG, what="the failing program run again")


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[BaseException | None]]:
    """``call`` started on a thread of its own; the list gets what it raised (None if
    nothing) once it returns."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # what the test reports
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def gated(gate: Path, **options: Any) -> dict[str, Any]:
    """A program whose instance 0 is ready at once, and every other once ``gate`` exists."""
    return {"file": sys.executable, "ready": "line:^go", "stop_timeout": 5.0, "args": [
        "-c", "import os, time\n"
              "first = os.environ['IMMORTAL_INSTANCE'] == '0'\n"
              f"while not first and not os.path.exists({str(gate)!r}):\n"
              "    time.sleep(0.01)\n"
              "print('go', flush=True)\n"
              "time.sleep(3600)\n"], **options}


def test_a_scale_waiting_when_an_apply_sets_the_count_fails_at_once_saying_so(
        group_started, tmp_path):
    """A scale up waits for its new instances (they are slow to be ready) when an apply
    (a reload) sets the program's count back to the file's: the scale fails at once,
    naming the apply, not after its whole patience with 'scaled back', nor blaming its new
    instances' deaths, which the apply caused."""
    gate = tmp_path / "gate"
    slow = gated(gate)
    group = group_started("raced", {"a": slow, "b": worker("b")})
    caller, outcome = in_thread(lambda: group.scale(3, program="a"))
    try:
        wait_for(group.status, lambda s: "a" in s.scales and len(
            [e for e in s.instances if e.program == "a"]) == 3, LONG,
            what="the scale under way, its new instances not ready")
        applied = group.apply({"a": slow, "b": worker("b")})
        assert applied.actions()["a"] == "scaled"
        caller.join(SHORT)
        assert not caller.is_alive(), "the scale still waits"
        assert isinstance(outcome[0], immortal.ImmortalError), outcome
        assert "by an apply" in str(outcome[0]) and "scaled back" not in str(outcome[0])
    finally:
        gate.touch()
        caller.join(LONG)


def test_a_stop_during_an_applys_roll_is_what_the_apply_says(group_started, tmp_path):
    """The group stopped while an apply rolls a changed program: the apply fails saying
    the roll was aborted by the stop, not that the group refused to take the old
    definition back."""
    gate = tmp_path / "gate"
    group = group_started("stopped-apply", {"a": worker("one"), "b": worker("b")})
    changed = {**worker("two"), "args": [
        "-c", f"import os, time\nwhile not os.path.exists({str(gate)!r}):\n"
              "    time.sleep(0.01)\nprint('i=', flush=True)\ntime.sleep(3600)\n"]}
    caller, outcome = in_thread(lambda: group.apply({"a": changed, "b": worker("b")}))
    try:
        wait_for(group.status, lambda s: (s.roll or {}).get("state") == "rolling", LONG,
                 what="the roll of the changed program under way")
        group.stop()
        caller.join(LONG)
        assert isinstance(outcome[0], immortal.StartError), outcome
        assert "the group was stopped" in str(outcome[0]) and "refused" not in str(outcome[0])
    finally:
        gate.touch()
        caller.join(LONG)


def test_an_apply_with_a_bad_timeout_changes_nothing(group_started):
    group = group_started("badtimeout", {"a": worker("a"), "b": worker("b")})
    before = pids(running(group, {"a": 1, "b": 1}))
    for bad, kind in ((-1, immortal.InvalidSpec), ("5", immortal.InvalidType)):
        with pytest.raises(kind, match="'timeout'"):
            group.apply({"a": worker("changed")}, timeout=bad)
    status = group.status()
    assert pids(status) == before and status.unrolled == []


def test_a_finished_job_is_run_again_not_rolled(group_started):
    """Beside a program that rolls (two instances): a restart of the group, and an apply
    that changes the job, run the finished job again (with its new definition) rather
    than roll it, whose replacement would end before it is ready and abort the roll."""
    job = {key: value for key, value in JOB.items() if key != "ready"}  # ready once up 1 s
    group = group_started("jobroll", {"web": worker("web", workers=2), "job": job})
    finished_job(group)
    before = pids(group.status())
    group.restart()
    status = finished_job(group, 2)
    assert status.roll["state"] == "done" and status.roll["slots"] == ["web:0", "web:1"]
    assert not set(pids(status).values()) & {before[("web", 0)], before[("web", 1)]}
    changed = {**job, "args": ["-c", "print('ran again', flush=True)"]}
    applied = group.apply({"web": worker("web", workers=2), "job": changed})
    assert applied.actions() == {"web": "unchanged", "job": "rolled"}
    finished_job(group, 3)
    assert b"ran again" in output(outputs(group)["job"])


def test_an_apply_waiting_when_a_scale_sets_the_count_fails_at_once_saying_so(
        group_started, tmp_path):
    """An apply that raises a program's count waits for its new instances (slow to be
    ready) when a scale sets the count back: the apply fails at once naming the scale,
    not after its whole patience."""
    gate = tmp_path / "gate"
    group = group_started("raced2", {"a": gated(gate), "b": worker("b")})
    caller, outcome = in_thread(
        lambda: group.apply({"a": gated(gate, workers=3), "b": worker("b")}))
    try:
        wait_for(group.status, lambda s: len([e for e in s.instances if e.program == "a"])
                 == 3, LONG, what="the apply's new instances, not ready")
        group.scale(1, program="a")
        caller.join(SHORT)
        assert not caller.is_alive(), "the apply still waits"
        assert isinstance(outcome[0], immortal.ImmortalError), outcome
        assert "was scaled to 1 instance(s) by another command while this apply waited" \
            in str(outcome[0])
    finally:
        gate.touch()
        caller.join(LONG)
