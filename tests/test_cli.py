"""The command line end to end: real ``immortal`` processes, real groups, real files.

Every command runs in a subprocess, both as ``python -m immortal`` and as the installed
``immortal`` console script, with the test's private IMMORTAL_HOME in its environment. Every
wait is bounded (subprocess timeouts, polls with deadlines), and every test stops what it
starts with ``immortal stop NAME`` in a ``finally``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import LONG, SHORT, TALKER, wait_for

pytestmark = pytest.mark.timeout(120)

SCRIPT = shutil.which("immortal", path=os.path.dirname(sys.executable))
COMMANDS = {
    "module": [sys.executable, "-m", "immortal"],
    "script": [SCRIPT or "immortal-console-script-not-found"],
}
VIAS = sorted(COMMANDS)

# One line of the default file monitor: "<ISO time>Z <kind> | <text>", kind padded to 6.
LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z (stdout|stderr|event ) \| (.*)$")


# --- helpers -----------------------------------------------------------------------------

def immortal(home: Path, *args: str, via: str = "module",
             timeout: float = LONG) -> subprocess.CompletedProcess[str]:
    """Run one CLI command to completion (bounded by ``timeout``)."""
    env = {**os.environ, "IMMORTAL_HOME": str(home)}
    return subprocess.run([*COMMANDS[via], *args], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def cleanup(home: Path, name: str, via: str = "module") -> None:
    """``immortal stop NAME`` for a finally: block (exit 3 is fine: already gone).

    A hang here must not mask the test's own failure; the ``no_leftovers`` fixture still
    kills and reports whatever survives.
    """
    try:
        immortal(home, "stop", name, via=via, timeout=LONG)
    except subprocess.TimeoutExpired:
        pass


def described(result: subprocess.CompletedProcess[str]) -> str:
    return (f"exit {result.returncode}\n--- stdout ---\n{result.stdout}"
            f"--- stderr ---\n{result.stderr}")


def start_time(pid: int) -> int | None:
    """The kernel start time of ``pid``; None if it does not exist or is a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    if fields[0] == b"Z":
        return None
    return int(fields[19])


class Started:
    """What ``immortal run`` printed: the name, the pids by role and the output file."""

    def __init__(self, result: subprocess.CompletedProcess[str]) -> None:
        self.result = result
        # A development run says it on stderr (its stdout is the target's).
        lines = result.stdout.splitlines() + result.stderr.splitlines()
        first = next((line for line in lines if line.startswith("started ")), "")
        found = re.match(r"started '([^']+)'", first)
        self.name = found.group(1) if found else None
        self.pids = {role: int(pid) for role, pid in
                     re.findall(r"\b(daemon|pump|target) (\d+)", first)}
        outputs = [line[len("output: "):] for line in lines if line.startswith("output: ")]
        self.output = outputs[0] if len(outputs) == 1 else None
        # Taken at once, so "gone" later cannot be fooled by a reused pid.
        self.start_times = {role: start_time(pid) for role, pid in self.pids.items()}

    def alive(self, role: str) -> bool:
        pid = self.pids[role]
        return self.start_times[role] is not None and start_time(pid) == self.start_times[role]


def run(home: Path, name: str, file: str, args: list[str], *options: str,
        via: str = "module") -> Started:
    """``immortal run [OPTIONS] --name NAME FILE -- ARGS`` that must detach and succeed."""
    began = time.monotonic()
    result = immortal(home, "run", "--name", name, *options, file, "--", *args, via=via,
                      timeout=LONG)
    elapsed = time.monotonic() - began
    assert result.returncode == 0, described(result)
    assert elapsed < LONG
    started = Started(result)
    assert started.name == name, described(result)
    assert set(started.pids) == {"daemon", "pump", "target"}, described(result)
    for role in started.pids:
        assert started.alive(role), f"{role} {started.pids[role]} is not running\n" \
            + described(result)
    assert started.output, f"no single 'output: PATH' line\n{described(result)}"
    return started


def read_lines(path: str | Path) -> list[str]:
    try:
        return Path(path).read_bytes().decode("utf-8", "replace").splitlines()
    except FileNotFoundError:
        return []


def parsed(path: str | Path) -> list[tuple[str, str, str]]:
    """The file monitor's lines as (time, kind, text); a line of another form fails."""
    entries = []
    for line in read_lines(path):
        found = LINE.match(line)
        assert found, f"line of unexpected form in {path}: {line!r}"
        entries.append((found.group(1), found.group(2).strip(), found.group(3)))
    return entries


def texts(path: str | Path, kind: str) -> list[str]:
    return [text for _, k, text in parsed(path) if k == kind]


def wait_for_text(path: str | Path, kind: str, predicate, what: str,
                  timeout: float = SHORT) -> list[str]:
    return wait_for(lambda: texts(path, kind), predicate, timeout, what)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    stderr = result.stderr
    assert stderr.endswith("\n") and stderr.count("\n") == 1, described(result)
    assert stderr.startswith("immortal: error: "), described(result)
    return stderr


# --- tests -------------------------------------------------------------------------------

def test_console_script_is_installed():
    assert SCRIPT is not None, f"no 'immortal' script next to {sys.executable}"
    assert os.access(SCRIPT, os.X_OK)


@pytest.mark.parametrize("via", VIAS)
def test_run_list_status_stop(home, via):
    name = f"life-{via}"
    # Words that look like immortal's own options, quoting hazards, an empty string.
    args = ["--args", "two words", "", "-n", "other", "--name", "x", "-s", "development",
            "-o", "output=/nowhere", "ünïcødé", "$HOME", "*", "'\"", "-"]
    started = None
    try:
        started = run(home, name, TALKER, args, via=via)
        pids = started.pids
        assert started.output == str(home / name / "output.log")
        assert name in started.result.stdout

        # The arguments after "--" reach the target verbatim.
        lines = wait_for_text(started.output, "stdout",
                              lambda out: any(t.startswith("args ") for t in out),
                              "the target's 'args' line")
        seen = [json.loads(t[len("args "):]) for t in lines if t.startswith("args ")]
        assert seen == [args]

        listed = immortal(home, "list", via=via)
        assert listed.returncode == 0, described(listed)
        rows = [line.split() for line in listed.stdout.splitlines()]
        row = next((r for r in rows if r and r[0] == name), None)
        assert row is not None, described(listed)
        assert "running" in row and str(pids["target"]) in row, described(listed)

        listed = immortal(home, "list", "--json", via=via)
        assert listed.returncode == 0, described(listed)
        entries = json.loads(listed.stdout)
        entry = next(e for e in entries if e["name"] == name)
        assert entry["state"] == "running" and entry["running"] is True
        assert entry["pids"] == {role: pid for role, pid in pids.items()}

        status = immortal(home, "status", name, via=via)
        assert status.returncode == 0, described(status)
        assert "running" in status.stdout.splitlines()[0], described(status)
        shown = re.search(r"target\s+pid (\d+)", status.stdout)
        assert shown and int(shown.group(1)) == pids["target"], described(status)

        status = immortal(home, "status", name, "--json", via=via)
        assert status.returncode == 0, described(status)
        data = json.loads(status.stdout)
        assert data["name"] == name and data["state"] == "running" and data["running"]
        assert data["pids"] == pids
        assert data["output"] == started.output

        stopped = immortal(home, "stop", name, via=via)
        assert stopped.returncode == 0, described(stopped)
        assert name in stopped.stdout
        alive = {role: pid for role, pid in pids.items() if started.alive(role)}
        assert not alive, f"still running after 'stop' returned: {alive}"

        status = immortal(home, "status", name, via=via)
        assert status.returncode == 3, described(status)
        assert "running" not in status.stdout.splitlines()[0].replace("not running", "")

        again = immortal(home, "stop", name, via=via)
        assert again.returncode == 3, described(again)
        one_error_line(again)
    finally:
        cleanup(home, name, via)


@pytest.mark.parametrize("via", VIAS)
def test_status_and_stop_of_unknown_group(home, via):
    status = immortal(home, "status", "nosuch", via=via)
    assert status.returncode == 3, described(status)
    one_error_line(status)
    stop = immortal(home, "stop", "nosuch", via=via)
    assert stop.returncode == 3, described(stop)
    one_error_line(stop)


# What a command that only talks to a running group must not import: the starting side
# (the launcher, the monitors, pluggy and its entry points) costs tens of milliseconds at
# every run. A guard against regressions, not a timing test (timings live in bench/).
NOT_FOR_CONTROL = ("pluggy", "importlib.metadata", "immortal.launcher", "immortal.monitoring",
                   "immortal.groupstart", "immortal.prepare", "immortal.firstrole",
                   "immortal.monitorload", "difflib",
                   # dataclasses imports inspect (ast, dis, tokenize); the status and exit
                   # records are plain classes instead (immortal/records.py).
                   "dataclasses", "inspect",
                   # nothing else these commands import imports typing (bench/notes.md)
                   "typing",
                   # the configuration file is for the commands that read it
                   "tomllib", "immortal.config", "immortal.configfile")


def imported(home: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``python -X importtime ARGS``: the result, and the modules it imported."""
    env = {**os.environ, "IMMORTAL_HOME": str(home)}
    result = subprocess.run([sys.executable, "-X", "importtime", *args], env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=LONG)
    prefix = "import time:"
    rows = [line for line in result.stderr.splitlines() if line.startswith(prefix)]
    return result, {row.rsplit("|", 1)[1].strip() for row in rows[1:]}  # [0]: the header


def test_stop_and_status_import_only_what_they_use(home):
    name = "lean"
    try:
        run(home, name, TALKER, [])
        _, start_up = imported(home, "-c", "pass")  # whatever site imports is not ours
        # status and list of a running group, stop (its status then has a last exit), the
        # same once it is stopped (status exits 3: not running), and of a group that does
        # not exist.
        commands = [("status", name, 0), ("list", None, 0), ("stop", name, 0),
                    ("status", name, 3), ("list", None, 0), ("stop", "nothing", 3),
                    ("status", "nothing", 3)]
        for command, group, code in commands:
            args = [command] if group is None else [command, group]
            result, modules = imported(home, "-m", "immortal", *args)
            assert result.returncode == code, described(result)
            assert "immortal.state" in modules, "no -X importtime output read"
            # A name that no group has: its message suggests a close one (difflib, on
            # that error's path alone).
            allowed = {"difflib"} if group == "nothing" else set()
            extra = sorted(m for m in modules - start_up - allowed
                           if any(m == n or m.startswith(f"{n}.") for n in NOT_FOR_CONTROL))
            assert not extra, f"'immortal {' '.join(args)}' imported {extra}"
            if command == "stop" and code == 0:
                assert "immortal.events" in modules, "the stopped status has no last exit"
    finally:
        cleanup(home, name)


def test_run_passes_double_dash_verbatim(home):
    """Only the first "--" belongs to immortal; a later one is the target's argument."""
    name = "dashes"
    args = ["--args", "--", "after", "--"]
    try:
        started = run(home, name, TALKER, args, via="script")
        lines = wait_for_text(started.output, "stdout",
                              lambda out: any(t.startswith("args ") for t in out),
                              "the target's 'args' line")
        seen = [json.loads(t[len("args "):]) for t in lines if t.startswith("args ")]
        assert seen == [args]
    finally:
        cleanup(home, name)


@pytest.mark.parametrize("via", VIAS)
def test_second_run_with_same_name_is_refused(home, via, tmp_path):
    name = f"twice-{via}"
    try:
        first = run(home, name, TALKER, ["--out", "1"], via=via)
        wait_for_text(first.output, "stdout", lambda out: "ready" in out, "'ready'")

        other = tmp_path / "other.log"
        second = immortal(home, "run", "--name", name, "-o", f"output={other}", TALKER,
                          "--", "--out", "7", via=via)
        assert second.returncode == 4, described(second)
        assert "already running" in one_error_line(second)
        assert "started" not in second.stdout, described(second)

        # The first group is untouched: same processes, same state, nothing respawned.
        for role in first.pids:
            assert first.alive(role), f"{role} {first.pids[role]} died"
        status = immortal(home, "status", name, "--json", via=via)
        assert status.returncode == 0, described(status)
        data = json.loads(status.stdout)
        assert data["pids"] == first.pids and data["state"] == "running"
        assert data["spawned"] == 1 and data["restarts"] == 0
        assert data["output"] == first.output
        events = texts(first.output, "event")
        assert [e for e in events if "spawn pid" in e] == [f"spawn pid {first.pids['target']}"]
        assert not other.exists()
    finally:
        cleanup(home, name, via)


def test_restart_changes_the_target(home):
    name = "again"
    try:
        started = run(home, name, TALKER, ["--out", "1"], via="script")
        wait_for_text(started.output, "stdout", lambda out: "ready" in out, "'ready'")
        old = started.pids["target"]

        restarted = immortal(home, "restart", name, via="script")
        assert restarted.returncode == 0, described(restarted)
        shown = re.search(r"target pid (\d+)", restarted.stdout)
        assert shown, described(restarted)
        new = int(shown.group(1))
        assert new != old

        status = immortal(home, "status", name, "--json", via="module")
        assert status.returncode == 0, described(status)
        data = json.loads(status.stdout)
        assert data["state"] == "running"
        assert data["pids"]["target"] == new
        assert data["pids"]["daemon"] == started.pids["daemon"]
        assert data["pids"]["pump"] == started.pids["pump"]
        assert started.alive("daemon") and started.alive("pump")
        assert not started.alive("target"), f"old target {old} still runs"
        assert start_time(new) is not None

        wait_for_text(started.output, "stdout", lambda out: out.count("ready") == 2,
                      "the new target's 'ready'")
        events = texts(started.output, "event")
        assert any(e.startswith(f"exit pid {old}: ") for e in events), events
        assert f"respawn pid {new}" in events
    finally:
        cleanup(home, name)


def test_logs_prints_the_last_lines(home):
    name = "tail"
    try:
        started = run(home, name, TALKER, ["--out", "5"], via="module")
        wait_for_text(started.output, "stdout", lambda out: "ready" in out, "'ready'")
        # Nothing more is written until the stop: the file is stable now.
        content = Path(started.output).read_bytes().splitlines(keepends=True)
        assert len(content) > 2

        logs = immortal(home, "logs", name, "-n", "2", via="script")
        assert logs.returncode == 0, described(logs)
        assert logs.stdout.encode() == b"".join(content[-2:])
        assert [LINE.match(line).group(3) for line in logs.stdout.splitlines()] == \
            ["out 5", "ready"]
    finally:
        cleanup(home, name)


def test_development_whose_pump_is_killed_fails_naming_what_it_left(home):
    """The command's supervisor died, its target runs on unsupervised: exit 1 and say so
    (before: exit 0, "ended: running")."""
    name = "devkill"
    env = {**os.environ, "IMMORTAL_HOME": str(home)}
    command = subprocess.Popen(
        [*COMMANDS["module"], "run", "-s", "development", "-n", name, TALKER, "--",
         "--out", "1"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    try:
        def pids() -> dict[str, int]:
            shown = immortal(home, "status", name, "--json")
            return json.loads(shown.stdout)["pids"] if shown.returncode == 0 else {}

        running = wait_for(pids, lambda found: "target" in found, LONG,
                           what="the development group running")
        os.kill(running["pump"], signal.SIGKILL)
        _, err = command.communicate(timeout=LONG)
        assert command.returncode == 1, err
        assert (f"'{name}' lost its pump: left running without a supervisor: "
                f"{running['target']} ") in err, err
    finally:
        if command.poll() is None:
            command.kill()
            command.wait(LONG)
        cleanup(home, name)


def _counting(tmp_path: Path) -> str:
    script = tmp_path / "counting.py"
    script.write_text("import itertools, time\n"
                      "for n in itertools.count():\n"
                      "    print('line', n, flush=True)\n"
                      "    time.sleep(0.05)\n")
    return str(script)


def test_development_whose_reader_goes_away_ends_quietly(home, tmp_path):
    """'immortal run -s development app.py | head -3': once head has gone, the group stops
    and the command exits 0, saying nothing (as 'python app.py | head -3' does)."""
    name = "devhead"
    env = {**os.environ, "IMMORTAL_HOME": str(home)}
    command = subprocess.Popen(
        [*COMMANDS["module"], "run", "-s", "development", "-n", name, _counting(tmp_path)],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert command.stdout is not None and command.stderr is not None
        lines = [command.stdout.readline() for _ in range(3)]
        assert lines == [b"line 0\n", b"line 1\n", b"line 2\n"], lines
        command.stdout.close()  # head has what it wanted
        assert command.wait(LONG) == 0
        err = command.stderr.read().decode()
        assert "ended" not in err and "error" not in err, err
        status = json.loads(immortal(home, "status", name, "--json").stdout)
        assert (status["running"], status["state"], status["reason"]) == (
            False, "stopped", "the reader of its output went away"), status
    finally:
        if command.poll() is None:
            command.kill()
            command.wait(LONG)
        for pipe in (command.stdout, command.stderr):
            if pipe is not None:
                pipe.close()
        cleanup(home, name)


def test_development_whose_reader_goes_away_before_it_is_ready_ends_quietly(home, tmp_path):
    """'... | true': the reader gone before the group is ready; the start ends, quietly,
    exit 0, nothing left."""
    name = "devtrue"
    env = {**os.environ, "IMMORTAL_HOME": str(home)}
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    try:
        result = subprocess.run(
            [*COMMANDS["module"], "run", "-s", "development", "-n", name, "--ready",
             "line:^never", _counting(tmp_path)], env=env, stdin=subprocess.DEVNULL,
            stdout=write, stderr=subprocess.PIPE, text=True, timeout=LONG)
    finally:
        os.close(write)
        cleanup(home, name)
    assert result.returncode == 0 and "error" not in result.stderr, result.stderr


def test_development_ended_by_sigterm_stops_as_ctrl_c_does(home, tmp_path):
    """A SIGTERM to the command (kill, a service manager): the group stopped, 'ended:
    stopped (stop)' said, exit 0, as Ctrl-C gives (not 143 with the group ended by the
    pump as its caller's death)."""
    name = "devterm"
    env = {**os.environ, "IMMORTAL_HOME": str(home)}
    command = subprocess.Popen(
        [*COMMANDS["module"], "run", "-s", "development", "-n", name, _counting(tmp_path)],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        assert command.stdout is not None
        assert command.stdout.readline() == "line 0\n"  # the group runs: the command waits
        command.send_signal(signal.SIGTERM)
        out, err = command.communicate(timeout=LONG)
        assert command.returncode == 0, err
        assert f"'{name}' ended: stopped (stop)" in err, err
    finally:
        if command.poll() is None:
            command.kill()
            command.wait(LONG)
        cleanup(home, name)


def test_development_stays_in_the_foreground_and_echoes(home):
    name = "dev"
    try:
        began = time.monotonic()
        result = immortal(home, "run", "--strategy", "development", "--name", name,
                          "--max-restarts", "1", "--window", "60", TALKER,
                          "--", "--out", "2", "--exit", "1", timeout=LONG)
        elapsed = time.monotonic() - began
        # A group that gave up is a failure that CI and service managers must see.
        assert result.returncode == 1, described(result)
        assert elapsed < LONG
        started = Started(result)
        assert started.name == name, described(result)
        assert "pump" in started.pids and "daemon" not in started.pids, described(result)

        # Two runs of the target (the first and the one restart), each echoed to our stdout.
        lines = result.stdout.splitlines()
        assert lines.count("out 1") == 2 and lines.count("out 2") == 2, described(result)
        # Its stdout is the target's alone: the command's own words are on stderr.
        assert not [line for line in lines if line.startswith(("started ", "output: "))], \
            described(result)
        assert "ended: fatal" in result.stderr, described(result)

        # The group is over when the command returns.
        alive = {r: pid for r, pid in started.pids.items() if start_time(pid) is not None}
        assert not alive, f"still running after the command returned: {alive}"
        status = immortal(home, "status", name, "--json")
        assert status.returncode == 3, described(status)
        data = json.loads(status.stdout)
        assert data["state"] == "fatal" and data["running"] is False

        # The monitor got the same lines.
        output = started.output or str(home / name / "output.log")
        assert texts(output, "stdout") == ["out 1", "out 2"] * 2
        assert texts(output, "event")[-1].startswith("shutdown: ")
    finally:
        cleanup(home, name)


def test_file_monitor_lines_are_timestamped(home):
    name = "stamps"
    before = datetime.now(timezone.utc)
    try:
        started = run(home, name, TALKER, ["--out", "1", "--err", "1"], via="script")
        target = started.pids["target"]
        wait_for_text(started.output, "stdout", lambda out: "ready" in out, "'ready'")
        wait_for_text(started.output, "stderr", lambda err: "err 1" in err, "'err 1'")
        stopped = immortal(home, "stop", name, via="script")
        assert stopped.returncode == 0, described(stopped)
    finally:
        cleanup(home, name)
    after = datetime.now(timezone.utc)

    raw = read_lines(started.output)
    entries = parsed(started.output)  # every line has the form "<ISO time>Z kind | text"
    assert any(line.endswith("Z stdout | out 1") for line in raw), raw
    assert any(line.endswith("Z stderr | err 1") for line in raw), raw
    assert any(line.endswith(f"Z event  | spawn pid {target}") for line in raw), raw

    stamps = [datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc)
              for t, _, _ in entries]
    slack = timedelta(seconds=2)
    assert all(before - slack <= s <= after + slack for s in stamps), (before, stamps, after)
    assert stamps == sorted(stamps)

    events = [text for _, kind, text in entries if kind == "event"]
    assert events[0] == "pump start"
    assert events[1] == f"spawn pid {target}"
    exits = [e for e in events if e.startswith("exit pid ")]
    assert len(exits) == 1 and re.fullmatch(rf"exit pid {target}: \S.*", exits[0]), events
    assert events[-1].startswith("shutdown: ")
    assert [t for _, k, t in entries if k == "stdout"] == ["out 1", "ready"]
    assert [t for _, k, t in entries if k == "stderr"] == ["err 1"]


def test_output_option_and_env(home, tmp_path):
    name = "opts"
    path = tmp_path / "custom.log"
    try:
        started = run(home, name, TALKER, ["--env", "GREETING", "--env", "OTHER"],
                      "-o", f"output={path}", "-e", "GREETING=hello=world, you",
                      "-e", "OTHER=2", via="module")
        assert started.output == str(path)
        lines = wait_for_text(path, "stdout", lambda out: "ready" in out, "'ready'")
        assert lines == ["env GREETING=hello=world, you", "env OTHER=2", "ready"]
        assert not (home / name / "output.log").exists()

        status = immortal(home, "status", name, "--json", via="script")
        assert status.returncode == 0, described(status)
        assert json.loads(status.stdout)["output"] == str(path)

        logs = immortal(home, "logs", name, "-n", "1", via="script")
        assert logs.returncode == 0, described(logs)
        assert logs.stdout.endswith("Z stdout | ready\n"), described(logs)
    finally:
        cleanup(home, name)


@pytest.mark.parametrize("via", VIAS)
def test_run_without_a_file_names_only_the_file(home, via):
    result = immortal(home, "run", via=via)
    assert result.returncode == 2, described(result)
    assert result.stderr.strip().endswith("the following arguments are required: FILE"), \
        described(result)
    assert not list(home.iterdir())  # nothing created, and no standby left (see conftest)


def test_messages_name_the_interpreter_align_long_names_and_quote_once(home):
    name = "a-group-name-longer-than-twenty"
    try:
        started = run(home, name, TALKER, ["--trap", "USR1"])
        first = started.result.stdout.splitlines()[0]
        # A .py FILE runs with the interpreter that runs immortal: say which.
        assert sys.executable in first, described(started.result)
        assert re.findall(r"\b(daemon|pump|target) \d+", first) == ["daemon", "pump", "target"]
        status = immortal(home, "status", name)
        assert status.returncode == 0, described(status)
        assert f"  exec     {sys.executable}" in status.stdout.splitlines(), described(status)
        data = json.loads(immortal(home, "status", name, "--json").stdout)
        assert data["exec"] == sys.executable

        sent = immortal(home, "signal", name, "USR1")
        assert sent.returncode == 0, described(sent)
        assert sent.stdout == f"sent USR1 to the target of '{name}'\n", described(sent)
        assert "''" not in sent.stdout

        listed = immortal(home, "list")
        header, *rows = listed.stdout.splitlines()
        row = next(r for r in rows if r.startswith(name))
        assert row[len(name)] == " " and row.index(row.split()[1]) == header.index("STATE"), \
            listed.stdout
        for column in ("PIDS", "TARGET", "RESTARTS"):
            # Each later column starts at the same place in the header and the row.
            at = header.index(column)
            assert row[at - 1] == " " and header[at - 1] == " ", listed.stdout
        assert len(row) == len(header), listed.stdout
    finally:
        cleanup(home, name)


def test_a_file_without_a_slash_is_looked_up_on_path(home, tmp_path):
    name = "sleeper"
    sleep = shutil.which("sleep")
    assert sleep is not None
    try:
        # Run from a directory with no 'sleep' in it: the name is found on PATH, as a shell,
        # supervisord and subprocess find it.
        env = {**os.environ, "IMMORTAL_HOME": str(home)}
        result = subprocess.run([*COMMANDS["module"], "run", "--name", name, "sleep", "--",
                                 "100"], env=env, cwd=tmp_path, stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=LONG)
        assert result.returncode == 0, described(result)
        started = Started(result)
        assert os.path.realpath(f"/proc/{started.pids['target']}/exe") == \
            os.path.realpath(sleep)
    finally:
        cleanup(home, name)


@pytest.mark.parametrize("command", ["run", "status", "stop", "logs"])
def test_an_unusable_home_is_one_line_and_exit_2(home, tmp_path, command):
    afile = tmp_path / "afile"
    afile.write_bytes(b"")
    args = ["run", TALKER] if command == "run" else [command, "talker"]
    # A home that does not exist is no error for the commands that only read: no such group.
    missing = 2 if command == "run" else 3
    # (A home of another user's: test_bad_input, as 'nobody'; this interpreter may not be
    # nobody's to run.)
    for place, code in [("/proc/immortal-home", missing), (str(afile / "home"), 2)]:
        env = {**os.environ, "IMMORTAL_HOME": place}
        result = subprocess.run([*COMMANDS["module"], *args], env=env,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=LONG)
        assert result.returncode == code, described(result)
        assert place in one_error_line(result)


@pytest.mark.parametrize("args", [["list"], ["save"], ["metrics"], ["stop", "--all"]])
def test_an_unusable_home_is_one_line_and_exit_2_for_the_commands_over_all_groups(
        home, tmp_path, args):
    """Those that walk the home: a file in its path, or the home a file itself, is no
    empty home."""
    afile = tmp_path / "afile"
    afile.write_bytes(b"")
    for place in (str(afile / "home"), str(afile)):
        env = {**os.environ, "IMMORTAL_HOME": place}
        result = subprocess.run([*COMMANDS["module"], *args], env=env,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=LONG)
        assert result.returncode == 2, described(result)
        assert place in one_error_line(result) and "Not a directory" in result.stderr


def test_a_reader_that_goes_away_is_no_error(home):
    """'immortal status NAME | head' with head gone: no traceback, the command's own code."""
    name = "piped"
    try:
        run(home, name, TALKER, [])
        env = {**os.environ, "IMMORTAL_HOME": str(home)}
        for args in (["status", name], ["status", name, "--json"], ["list"], ["list", "--json"],
                     ["monitors"], ["monitors", "--json"]):
            read, write = os.pipe()
            os.close(read)  # the reader is gone before the first write
            try:
                result = subprocess.run([*COMMANDS["module"], *args], env=env,
                                        stdin=subprocess.DEVNULL, stdout=write,
                                        stderr=subprocess.PIPE, text=True, timeout=LONG)
            finally:
                os.close(write)
            assert (result.returncode, result.stderr) == (0, ""), (args, result.stderr)
    finally:
        cleanup(home, name)


def test_ctrl_c_during_stop_says_what_the_group_is_left_in(home):
    name = "stubborn"
    try:
        # Ready once it says so: by then it ignores TERM (at the spawn it may not yet, and
        # the stop would end it at once).
        run(home, name, TALKER, ["--ignore-term"], "--stop-timeout", "60",
            "--ready", "line:^ready")
        env = {**os.environ, "IMMORTAL_HOME": str(home)}
        stop = subprocess.Popen([*COMMANDS["module"], "stop", name], env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            status = home / name / "status.json"
            wait_for(lambda: json.loads(status.read_text()).get("state"),
                     lambda state: state == "stopping", SHORT, "the group stopping")
            stop.send_signal(signal.SIGINT)
            out, err = stop.communicate(timeout=LONG)
        finally:
            if stop.poll() is None:
                stop.kill()
                stop.wait()
        result = subprocess.CompletedProcess(stop.args, stop.returncode, out, err)
        assert stop.returncode == 130, described(result)
        line = one_error_line(result)
        assert "interrupted" in line and "stopping" in line, line
    finally:
        immortal(home, "stop", name, "--timeout", "0")


@pytest.mark.parametrize("strategy", ["daemon", "unattached"])
def test_signal_during_backoff_is_not_running(home, strategy):
    """No target runs during a backoff wait: nothing can be sent, and the command says so
    (the daemon used to forward the request and answer 'sent' before the pump refused)."""
    from immortal.launcher import start

    name = f"waiting-{strategy}"
    try:
        # A backoff far longer than a command's start on a loaded machine (the CLI's
        # first one, 0.5 s, could end before 'signal' asked, and a new target got it).
        start(TALKER, ["--exit", "1"], name=name, strategy=strategy,
              policy={"min_uptime": 10, "backoff_initial": 60, "backoff_max": 60})
        status = home / name / "status.json"
        wait_for(lambda: json.loads(status.read_text()).get("state"),
                 lambda state: state == "backoff", SHORT, "the backoff wait")
        sent = immortal(home, "signal", name, "USR1")
        assert sent.returncode == 1, described(sent)  # the group runs, and refuses
        assert "no target is running" in one_error_line(sent)
        assert sent.stdout == ""
    finally:
        cleanup(home, name)


def test_every_command_parsed_has_a_handler():
    """The parsers (cliargs.py) and what runs each command (cli.py) name the same commands."""
    from immortal import cli, cliargs

    assert list(cli.HANDLERS) == list(cliargs.COMMANDS)


@pytest.mark.parametrize("via", VIAS)
def test_a_monitor_of_the_working_directory_is_found_by_script_and_module(home, tmp_path,
                                                                          via):
    """'immortal run -m mypackage.alert:Alert' in the project that holds mypackage: the
    console script finds it as 'python -m immortal' does, and so does its pump."""
    package = tmp_path / "mypackage"
    package.mkdir()
    (package / "__init__.py").write_text("")
    seen = tmp_path / "seen.txt"
    (package / "alert.py").write_text(
        "from immortal import Monitor\n"
        "class Alert(Monitor):\n"
        "    def stdout(self, line):\n"
        f"        open({str(seen)!r}, 'ab').write(line)\n")
    env = {**os.environ, "IMMORTAL_HOME": str(home)}
    env.pop("PYTHONPATH", None)
    try:
        result = subprocess.run([*COMMANDS[via], "run", "--name", "alerted", "-m",
                                 "mypackage.alert:Alert", TALKER], env=env, cwd=tmp_path,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=LONG)
        assert result.returncode == 0, described(result)
        wait_for(lambda: seen.read_bytes() if seen.exists() else b"", bool, LONG,
                 what="a line through the monitor of the working directory")
    finally:
        cleanup(home, "alerted", via=via)
