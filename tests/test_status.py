"""Figures and following: ``status``, ``list`` and ``logs -f`` against real processes.

The figures the CLI prints are checked against what /proc says for each pid. ``logs -f``
runs as a subprocess whose stdout a thread reads into a queue, so every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import immortal
from immortal.cli import main
from conftest import LONG, SHORT, TALKER, children_of, kill_at_once, proc_state, wait_for

pytestmark = pytest.mark.timeout(120)

ROLES = ("daemon", "pump", "target")


# --- helpers -----------------------------------------------------------------------------

def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().out


def proc_fds(pid: int) -> tuple[int, int]:
    """(open fds, pipes among them) as /proc says."""
    directory = f"/proc/{pid}/fd"
    links = []
    for name in os.listdir(directory):
        try:
            links.append(os.readlink(f"{directory}/{name}"))
        except OSError:
            continue
    return len(links), sum(link.startswith("pipe:") for link in links)


def proc_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def proc_children(pid: int) -> int:
    return len(children_of(pid))


def output_lines(group: immortal.Group) -> list[str]:
    try:
        return Path(group.output).read_text().splitlines()
    except FileNotFoundError:
        return []


def wait_output(group: immortal.Group, text: str, count: int = 1) -> None:
    wait_for(lambda: output_lines(group),
             lambda lines: sum(line.endswith(f"| {text}") for line in lines) >= count,
             SHORT, f"{count} x {text!r} in {group.output}")


class Follower:
    """``immortal logs NAME -f`` as a subprocess; its stdout lines arrive in a queue."""

    def __init__(self, home: Path, name: str, *args: str) -> None:
        env = {**os.environ, "IMMORTAL_HOME": str(home)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "immortal", "logs", name, "-f", *args], env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self._queue.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self._queue.put(None)

    def wait_line(self, predicate, what: str, timeout: float = SHORT) -> str:
        """The first new line that satisfies ``predicate``; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"'logs -f' printed no {what} within {timeout} s; it printed: "
                            f"{self.lines!r}", pytrace=False)
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"'logs -f' ended before printing {what}; it printed: "
                            f"{self.lines!r}", pytrace=False)
            self.lines.append(line)
            if predicate(line):
                return line

    def finish(self, timeout: float = SHORT) -> int:
        """Its exit code, once it exits by itself within ``timeout``; the rest of its
        output goes to ``lines``."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"'logs -f' still ran {timeout} s after the group ended; it printed "
                        f"{self.lines!r}", pytrace=False)
        self._thread.join(SHORT)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return code

    def kill(self) -> None:
        """End it if it still runs, and close its pipes (for a finally: block)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(SHORT)
        self._thread.join(SHORT)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


# --- status ------------------------------------------------------------------------------

def test_status_json_figures_match_proc(started, capsys):
    group = started(TALKER, ["--out", "2", "--grandchild"], name="fig")
    wait_output(group, "ready")
    pids = group.pids

    before = {role: (proc_fds(pid), proc_rss(pid)) for role, pid in pids.items()}
    code, out = cli(capsys, "status", "fig", "--json")
    after = {role: (proc_fds(pid), proc_rss(pid)) for role, pid in pids.items()}
    assert code == 0, out
    data = json.loads(out)
    assert data["state"] == "running" and data["running"] is True
    assert data["pids"] == pids
    assert set(data["figures"]) == set(ROLES)

    for role, pid in pids.items():
        shown = data["figures"][role]
        assert shown["pid"] == pid
        fds = {before[role][0][0], after[role][0][0]}
        pipes = {before[role][0][1], after[role][0][1]}
        assert shown["fds"] in fds, (role, shown, fds)
        assert shown["pipes"] in pipes, (role, shown, pipes)
        low = min(before[role][1], after[role][1])
        high = max(before[role][1], after[role][1])
        slack = max(1 << 20, high // 10)
        assert low - slack <= shown["rss"] <= high + slack, (role, shown["rss"], low, high)
        assert shown["children"] == proc_children(pid), (role, shown)
        assert isinstance(shown["cpu"], float) and shown["cpu"] >= 0
        assert abs(shown["started"] - time.time()) < LONG + 60

    # The target writes to two pipes (stdout, stderr); its stdin is /dev/null.
    assert data["figures"]["target"]["pipes"] >= 2
    # The daemon's children are the pump and the pipe holder, the pump's the target, the
    # target's its grandchild.
    assert data["figures"]["daemon"]["children"] == 2
    assert data["figures"]["pump"]["children"] == 1
    assert data["figures"]["target"]["children"] == 1
    assert data["children"] == 1
    assert data["memory"] == sum(data["figures"][role]["rss"] for role in ROLES)
    assert 0 <= data["uptime"] < LONG + 60
    assert abs(data["now"] - time.time()) < LONG


def test_status_text(started, capsys):
    group = started(TALKER, ["--out", "1"], name="text")
    wait_output(group, "ready")
    pids = group.pids
    code, out = cli(capsys, "status", "text")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "text: running"
    for role in ROLES:
        line = next(line for line in lines if line.split()[:1] == [role])
        assert re.fullmatch(rf"\s+{role}\s+pid {pids[role]}, memory \d+(\.\d)?[KMG], "
                            r"fds \d+ \(\d+ pipes\), cpu \d+\.\d\ds", line), line
    assert "  children 0, spawned 1, restarts 0" in lines
    assert any(re.fullmatch(r"  started  \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", line)
               for line in lines), out
    assert any(line.startswith("  now      ") for line in lines), out
    assert any(re.fullmatch(r"  up       \d+s \(target\)", line) for line in lines), out
    assert f"  output   {group.output}" in lines

    group.stop()
    code, out = cli(capsys, "status", "text")
    assert code == 3
    lines = out.splitlines()
    assert lines[0] == "text: stopped (not running)"
    assert "  reason   stop" in lines
    assert any(line.startswith("  last     killed by SIGTERM") for line in lines), out
    assert not any("pid" in line for line in lines), out


def test_status_in_backoff_shows_the_next_restart(started, capsys):
    policy = {"backoff_initial": 30.0, "backoff_max": 30.0, "jitter": 0.0,
              "min_uptime": 10.0}
    group = started(TALKER, ["--exit", "3"], name="crashy", policy=policy)
    wait_for(group.status, lambda s: s.state == "backoff", SHORT, "the backoff state")
    before = time.time()
    code, out = cli(capsys, "status", "crashy", "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["state"] == "backoff" and data["running"] is True
    assert data["last_exit"]["code"] == 3
    assert "target" not in data["figures"] and set(data["figures"]) == {"daemon", "pump"}
    assert data["uptime"] is None
    assert before < data["next_restart_at"] <= before + 30.0 + 1.0

    code, out = cli(capsys, "status", "crashy")
    assert code == 0, out
    assert out.splitlines()[0] == "crashy: backoff"
    assert "  last     exited with status 3" in out.splitlines()
    shown = re.search(r"^  next     (\S+) \(in (\d+\.\d) s\)$", out, re.M)
    assert shown, out
    from datetime import datetime
    at = datetime.fromisoformat(shown.group(1)).timestamp()
    assert abs(at - data["next_restart_at"]) < 1.0
    assert 0 < float(shown.group(2)) <= 30.0


# --- list --------------------------------------------------------------------------------

def test_list_columns_and_json(started, capsys, home):
    group = started(TALKER, ["--out", "1"], name="listed")
    wait_output(group, "ready")
    pids = group.pids
    code, out = cli(capsys, "list")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "PIDS", "TARGET", "UPTIME", "RESTARTS",
                                "MEMORY"]
    row = next(line.split() for line in lines[1:] if line.split()[0] == "listed")
    name, state, shown_pids, target, uptime, restarts, memory = row
    assert state == "running"
    assert shown_pids == f"{pids['daemon']}/{pids['pump']}/{pids['target']}"
    assert target == str(pids["target"])
    assert re.fullmatch(r"\d+s|\d+m\d\ds", uptime), uptime
    assert restarts == "0"
    assert re.fullmatch(r"\d+\.\d[KMG]", memory), memory

    code, out = cli(capsys, "list", "--json")
    assert code == 0, out
    entry = next(e for e in json.loads(out) if e["name"] == "listed")
    assert entry["state"] == "running" and entry["running"] is True
    assert entry["pids"] == pids and entry["restarts"] == 0
    assert isinstance(entry["uptime"], float) and 0 <= entry["uptime"] < LONG + 60
    total = sum(proc_rss(pid) for pid in pids.values())
    assert isinstance(entry["memory"], int)
    assert abs(entry["memory"] - total) <= max(3 << 20, total // 10), (entry["memory"], total)


def test_list_marks_groups_whose_processes_vanished(started, capsys, home):
    stopped = started(TALKER, ["--out", "1"], name="a-stopped")
    killed = started(TALKER, ["--out", "1"], name="b-killed")
    wait_output(stopped, "ready")
    wait_output(killed, "ready")
    stopped.stop()
    # Killed without a stop: supervisors first, so that nothing records an end.
    pids = killed.pids
    kill_at_once(*(pids[role] for role in ("daemon", "pump", "target")))
    wait_for(lambda: [pid for pid in pids.values() if os.path.exists(f"/proc/{pid}")
                      and proc_state(pid) != "Z"], lambda alive: not alive, SHORT,
             "the killed group's processes to vanish")

    code, out = cli(capsys, "list")
    assert code == 0, out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line.strip()}
    assert rows["a-stopped"][1:3] == ["stopped", "-"]
    assert rows["b-killed"][1] not in ("running", "stopped", "fatal")
    assert rows["b-killed"][1].endswith("*") and rows["b-killed"][2] == "-"
    assert rows["b-killed"][-1] == "-"  # no memory: nothing runs
    assert any(line.startswith("* its processes are gone") for line in out.splitlines())
    assert out.splitlines()[-1] == f"home: {home}"

    code, out = cli(capsys, "list", "--json")
    entries = {e["name"]: e for e in json.loads(out)}
    assert entries["b-killed"]["running"] is False
    assert entries["b-killed"]["memory"] is None and entries["b-killed"]["uptime"] is None


def test_list_keeps_its_columns_aligned_with_long_pids(home):
    """A pid_max of 4194304 gives 7-digit pids: the PIDS cell is then 23 characters, and
    the columns after it must widen with it, not shift row by row. Such pids cannot be had
    here (pid_max is the host's), so the table is drawn from statuses that carry them."""
    from immortal.listview import list_view
    from immortal.state import Status

    beyond = 4194303  # above any pid_max a test machine has: no figures are found for it
    rows = [Status(name="big", state="running", running=True, restarts=3,
                   pids={"daemon": beyond - 2, "pump": beyond - 1, "target": beyond}),
            Status(name="small", state="running", running=True,
                   pids={"daemon": beyond - 5, "pump": beyond - 4}),
            Status(name="done", state="stopped", reason="stop")]
    lines = list_view(rows, home).splitlines()
    header = lines[0]
    for heading in ("TARGET", "UPTIME", "RESTARTS", "MEMORY"):  # right-aligned: their ends
        end = header.index(heading) + len(heading)
        for line in lines[1:4]:
            assert line[end - 1] != " " and line[end:end + 1] in ("", " "), (heading, lines)
    assert lines[1].split()[2:4] == [f"{beyond - 2}/{beyond - 1}/{beyond}", str(beyond)]
    assert header.index("STATE") == lines[1].index("running") == lines[3].index("stopped")


def test_list_shows_no_address_for_a_group_that_does_not_run(started, capsys, home):
    """A stopped group holds no socket: its recorded addresses are not what it listens on."""
    serving = started(TALKER, name="serving", ready="spawn", listen=["tcp://127.0.0.1:0"])
    stopped = started(TALKER, name="stopped", ready="spawn", listen=["tcp://127.0.0.1:0"])
    stopped.stop()
    code, out = cli(capsys, "list")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert code == 0 and out.splitlines()[0].split()[-1] == "LISTEN", out
    assert rows["serving"][-1] == ",".join(serving.status().listen), out
    assert rows["stopped"][1] == "stopped" and rows["stopped"][-1] == "-", out
    serving.stop()
    code, out = cli(capsys, "list")
    assert code == 0 and "LISTEN" not in out and "tcp://" not in out, out


def test_status_shows_no_address_for_a_group_that_does_not_run(started, capsys, home):
    """As 'list': the listen line while the group holds its sockets, none once stopped."""
    group = started(TALKER, name="web", ready="spawn", listen=["tcp://127.0.0.1:0"])
    address = group.status().listen[0]
    code, out = cli(capsys, "status", "web")
    assert code == 0 and f"listen   {address}" in out, out
    group.stop()
    code, out = cli(capsys, "status", "web")
    assert "stopped" in out and "listen" not in out and "tcp://" not in out, out


def test_a_group_without_status_json_is_starting_or_never_ran_not_killed(
        started, capsys, home):
    """spec.json and no status.json: what a start killed before its supervisors wrote
    anything leaves (the lock free), or a start under way (its lock held). Neither is a
    group whose supervisors were killed, and 'list' shows both."""
    import fcntl

    group = started(TALKER, name="early", ready="spawn")
    group.stop()
    (home / "early" / "status.json").unlink()

    code, out = cli(capsys, "status", "early")
    assert code == 3 and out.splitlines()[0] == "early: stopped (not running)", out
    assert "  reason   never ran: its start was cut short" in out, out
    assert "killed" not in out, out
    code, out = cli(capsys, "list")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["early"][1:3] == ["stopped", "-"], out
    assert "*" not in out, out

    fd = os.open(home / "early" / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a start under way holds it
        code, out = cli(capsys, "status", "early")
        assert code == 3, out
        assert out.splitlines()[0] == "early: starting (a start is under way; nothing of it " \
            "runs yet)", out
        code, out = cli(capsys, "list")
        rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
        assert rows["early"][1] == "starting", out
    finally:
        os.close(fd)

    code, out = cli(capsys, "start", "early")  # the record is whole: it starts
    assert code == 0, out
    assert immortal.attach("early").status().running


def test_human_units():
    from immortal.render import human_bytes, human_duration

    assert [human_duration(s) for s in (0, 5, 59.9, 192, 3599, 7440, 86399, 266400)] == \
        ["0s", "5s", "59s", "3m12s", "59m59s", "2h04m", "23h59m", "3d02h"]
    assert [human_bytes(n) for n in (0, 512, 1536, 12.3 * 2**20, 3 * 2**30)] == \
        ["0B", "512B", "1.5K", "12.3M", "3.0G"]


# --- logs -f -----------------------------------------------------------------------------

def test_logs_follow_prints_new_lines_and_ends_with_the_group(started, home):
    group = started(TALKER, ["--out", "3", "--trap", "USR1"], name="follow")
    wait_output(group, "ready")
    follower = Follower(home, "follow", "-n", "2")
    try:
        # The tail comes first; once 'ready' is printed, the follower is at the end.
        follower.wait_line(lambda line: line.endswith("| ready"), "the tail's 'ready'")
        assert follower.lines[0].endswith("| out 3")

        for count in (1, 2):
            group.signal("USR1")
            follower.wait_line(lambda line: line.endswith("| got USR1"),
                               f"'got USR1' number {count}")
        assert follower.process.poll() is None, "it must keep following a running group"

        group.stop()
        assert follower.finish() == 0
        assert follower.lines[-1].endswith("| shutdown: stop"), follower.lines
        # Each line once, in the file's order.
        text = Path(group.output).read_text().splitlines()
        assert follower.lines == text[-len(follower.lines):]
    finally:
        follower.kill()


def test_logs_follow_follows_a_rotation(started, home):
    group = started(TALKER, ["--trap", "USR1"], name="rotate")
    wait_output(group, "ready")
    follower = Follower(home, "rotate", "-n", "1")
    try:
        follower.wait_line(lambda line: line.endswith("| ready"), "the tail's 'ready'")
        group.signal("USR1")
        follower.wait_line(lambda line: line.endswith("| got USR1"), "'got USR1' (old file)")

        output = Path(group.output)
        output.rename(output.with_name(output.name + ".1"))
        code = subprocess.run([sys.executable, "-m", "immortal", "reopen", "rotate"],
                              env={**os.environ, "IMMORTAL_HOME": str(home)},
                              stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=LONG).returncode
        assert code == 0
        wait_for(output.exists, bool, SHORT, f"a new {output}")
        group.signal("USR1")
        follower.wait_line(lambda line: line.endswith("| got USR1"), "'got USR1' (new file)")
        assert output.read_text().count("| got USR1") == 1  # it is the new file's line

        group.stop()
        assert follower.finish() == 0
        assert follower.lines[-1].endswith("| shutdown: stop"), follower.lines
        assert sum(line.endswith("| got USR1") for line in follower.lines) == 2
    finally:
        follower.kill()


NUMBERED = str(Path(TALKER).parent / "numbered.py")
LOGROTATE = shutil.which("logrotate") or shutil.which("/usr/sbin/logrotate")


def rotated(output: Path) -> list[Path]:
    """``output.N`` ... ``output.1``: the rotated files, oldest first."""
    return sorted(output.parent.glob(output.name + ".*"), reverse=True,
                  key=lambda path: int(path.name.rsplit(".", 1)[1]))


def rotate_externally(output: Path, name: str, home: Path, reopen: bool, work: Path) -> None:
    """Rotate ``output`` as logrotate's ``create`` does (rename, then a new empty file),
    with ``immortal reopen NAME`` as its postrotate if ``reopen``: logrotate itself where it
    is installed (its configuration and state in ``work``), else the same steps by hand."""
    if LOGROTATE is None:
        for old in rotated(output):  # output.2 -> output.3, ..., then output -> output.1
            number = int(old.name.rsplit(".", 1)[1])
            old.rename(old.with_name(f"{output.name}.{number + 1}"))
        output.rename(output.with_name(output.name + ".1"))
        output.touch(mode=0o600)  # unless the monitor made it first, at its own check
        if reopen:
            run_cli(home, "reopen", name)
        return
    script = (f"    postrotate\n        IMMORTAL_HOME='{home}' '{sys.executable}' -m immortal "
              f"reopen {name} >/dev/null\n    endscript\n" if reopen else "")
    config = work / "logrotate.conf"
    config.write_text(f'"{output}" {{\n    rotate 20\n    create\n{script}}}\n')
    done = subprocess.run([LOGROTATE, "--force", "--state", str(work / "logrotate.state"),
                           str(config)], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=LONG)
    assert done.returncode == 0, done.stderr


def run_cli(home: Path, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "immortal", *args],
                          env={**os.environ, "IMMORTAL_HOME": str(home)},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=LONG)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("reopen", [True, False], ids=["create+reopen", "create"])
def test_logs_follow_loses_no_line_at_a_logrotate_create(started, home, tmp_path, reopen):
    """logrotate's ``create`` renames the file and makes a new empty one while the monitor
    still writes the old one (until ``immortal reopen``, or its own check a second later):
    the follower prints every line once, the old file's last ones before the new file's."""
    group = started(NUMBERED, ["--interval", "0.002"], name="lograte")
    output = Path(group.output)
    wait_for(lambda: output_lines(group), lambda lines: any("| out " in line for line in lines),
             SHORT, f"a numbered line in {output}")
    follower = Follower(home, "lograte", "-n", "0")
    try:
        follower.wait_line(lambda line: "| err " in line, "a numbered line")
        for _ in range(3):
            rotate_externally(output, "lograte", home, reopen, tmp_path)
            # The monitor writes the new file, and the follower has printed from it: then
            # the next rotation.
            first = wait_for(lambda: [line for line in output_lines(group) if "| out " in line],
                             bool, SHORT, f"a numbered line in the new {output}")[0]
            follower.wait_line(lambda line: line == first, f"the new file's {first!r}")
        group.stop()
        assert follower.finish() == 0
    finally:
        follower.kill()

    files = [line for path in [*rotated(output), output]
             for line in path.read_text().splitlines()]
    numbers = [int(line.rsplit(" ", 1)[1]) for line in files if "| out " in line
               or "| err " in line]
    # stdout's and stderr's lines come through two pipes: in order each, not together
    assert sorted(numbers) == list(range(1, len(numbers) + 1)), \
        "the files themselves miss lines: the test's rotation is not what it should be"
    start = files.index(follower.lines[0])
    lost = len(set(files[start:]) - set(follower.lines))
    doubled = len(follower.lines) - len(set(follower.lines))
    assert (lost, doubled) == (0, 0), f"{lost} lines lost, {doubled} printed twice"
    assert follower.lines == files[start:]
    assert follower.lines[-1].endswith("| shutdown: stop")


def test_the_documented_postrotate_is_no_error_while_the_group_is_stopped(started, home,
                                                                          tmp_path):
    """docs/monitors.md's postrotate: a rotation while the group is stopped is no error
    (reopen exits 3: nothing holds the file), any other failure still is."""
    group = started(TALKER, ["--out", "1"], name="rotated")
    wait_output(group, "ready")
    output = Path(group.output)
    group.stop()
    reopen = (f"IMMORTAL_HOME='{home}' '{sys.executable}' -m immortal reopen rotated "
              f">/dev/null 2>&1 || [ $? -eq 3 ]")
    if LOGROTATE is not None:
        config = tmp_path / "logrotate.conf"
        config.write_text(f'"{output}" {{\n    rotate 2\n    create\n    postrotate\n'
                          f'        {reopen}\n    endscript\n}}\n')
        done = subprocess.run([LOGROTATE, "--force", "--state", str(tmp_path / "state"),
                               str(config)], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=LONG)
        assert done.returncode == 0, done.stderr
        assert rotated(output) and output.stat().st_size == 0
    assert subprocess.run(["sh", "-c", reopen], timeout=LONG).returncode == 0
    failing = reopen.replace("reopen rotated", "reopen --no-such-option rotated")
    assert subprocess.run(["sh", "-c", failing], timeout=LONG).returncode != 0


def test_logs_follow_of_a_stopped_group_prints_the_tail_and_exits(started, home, capsys):
    group = started(TALKER, ["--out", "3"], name="over")
    wait_output(group, "ready")
    group.stop()
    code, out = cli(capsys, "logs", "over", "-f", "-n", "2")
    assert code == 0
    assert out.splitlines() == Path(group.output).read_text().splitlines()[-2:]


def test_logs_follow_ends_on_ctrl_c(started, home):
    group = started(TALKER, ["--out", "1"], name="interrupt")
    wait_output(group, "ready")
    follower = Follower(home, "interrupt", "-n", "1")
    try:
        follower.wait_line(lambda line: line.endswith("| ready"), "the tail's 'ready'")
        follower.process.send_signal(signal.SIGINT)
        assert follower.finish() == 0
        assert group.status().running
    finally:
        follower.kill()


# --- Group.tail and Group.follow (what 'logs' prints) ---------------------------------------

def test_group_tail_and_follow_from_python(started, home):
    group = started(TALKER, ["--out", "3", "--trap", "USR1"], name="py-follow")
    wait_output(group, "ready")
    text = Path(group.output).read_bytes().splitlines(keepends=True)
    assert group.tail(2) == text[-2:]  # a list
    assert group.tail(0) == []
    with pytest.raises(immortal.InvalidSpec, match="'lines' must be 0 or more"):
        group.tail(-1)
    with pytest.raises(TypeError, match="'lines' must be an int"):
        group.follow("3")
    lines = group.follow(1)
    try:
        assert next(lines) == text[-1]
        group.signal("USR1")
        wait_output(group, "got USR1")  # in the file: the next line comes at the next look
        assert next(lines).endswith(b"| got USR1\n")
        group.stop()
        rest = list(lines)  # ends with the group
    finally:
        lines.close()
    assert rest and rest[-1].endswith(b"| shutdown: stop\n"), rest
    assert Path(group.output).read_bytes().endswith(b"".join(rest))


def test_tail_during_a_start_finds_the_file_the_monitor_declared(started, home):
    """``tail`` (``immortal logs``) while another thread starts the group: before the
    group's first status.json, its record names the file; never "declares no output file"
    (the file monitor declares one)."""
    errors: list[str] = []
    looks = 0
    with ThreadPoolExecutor(1) as pool:
        starting = pool.submit(started, sys.executable,
                               ["-c", "import time; time.sleep(0.5); print('up', flush=True)"
                                "; time.sleep(3600)"], name="early", ready="line:^up$")
        while not starting.done() or looks == 0:
            try:
                list(immortal.attach("early").tail(1))
                looks += 1
            except immortal.NotRunning:
                pass  # no directory yet, or no record yet
            except immortal.ImmortalError as exc:
                errors.append(str(exc))
        starting.result(timeout=LONG)
    assert errors == []


def stepping(steps):
    """A follower's ``running()`` that takes the next of ``steps`` at each call, and ends
    after the last."""
    def running() -> bool:
        step = next(steps, None)
        if step is None:
            return False
        step()
        return True

    return running


def test_follow_reads_appends_rotations_truncations_and_holds_an_unended_line(tmp_path):
    from immortal import tailing

    path = tmp_path / "out"
    path.write_bytes(b"1\n2\n3")

    def append(data: bytes) -> None:
        with path.open("ab") as handle:
            handle.write(data)

    steps = iter([
        lambda: append(b"x\n4\n"),
        lambda: (path.rename(tmp_path / "out.1"), path.write_bytes(b"new\npart")),
        lambda: path.write_bytes(b"t\n"),  # truncated in place: read again from its start
    ])

    running = stepping(steps)

    assert list(tailing.tail(str(path), 2)) == [b"2\n", b"3"]
    assert list(tailing.tail(str(tmp_path / "none"), 2)) == []
    followed = list(tailing.follow(str(path), 1, running, poll=0))
    assert followed == [b"3x\n", b"4\n", b"new\n", b"partt\n"]
    (tmp_path / "link").symlink_to(path)
    with pytest.raises(immortal.StateDirError, match="symlink"):
        tailing.tail(str(tmp_path / "link"), 1)


def test_follow_reads_the_old_file_until_the_writer_moves_to_the_new_one(tmp_path):
    """logrotate's ``create``: the new file is there, empty, before the monitor reopens;
    what the monitor still appends to the renamed file is printed, then the new file."""
    from immortal import tailing

    path = tmp_path / "out"
    path.write_bytes(b"1\n")
    writer = path.open("ab", buffering=0)  # the monitor's handle: it follows the rename
    steps = iter([
        lambda: (path.rename(tmp_path / "out.1"), path.write_bytes(b"")),  # create
        lambda: writer.write(b"2\n"),  # before the reopen: into the renamed file
        lambda: writer.write(b"3\n"),
        lambda: (writer.close(), path.write_bytes(b"4\n")),  # reopened, and writing there
        lambda: None,
    ])

    running = stepping(steps)

    try:
        assert list(tailing.follow(str(path), 1, running, poll=0)) == [
            b"1\n", b"2\n", b"3\n", b"4\n"]
    finally:
        writer.close()


def test_follow_takes_back_a_record_the_monitor_cut_without_reading_again(tmp_path):
    """On a full disk the ``file`` monitor's write can stop half-way; it then cuts the part
    it wrote (``ftruncate``). A follower that had read that part saw the file shrink and
    read it all again from its start: every line printed twice."""
    from immortal import tailing

    path = tmp_path / "out"
    path.write_bytes(b"1\n")
    writer = os.open(path, os.O_WRONLY | os.O_APPEND)
    steps = iter([
        lambda: os.write(writer, b"2\n3\n"),
        lambda: os.write(writer, b"event | out"),  # a short write: the follower reads it
        lambda: os.ftruncate(writer, 6),  # and the monitor takes it back
        lambda: os.write(writer, b"4\n"),
        lambda: None,
    ])
    try:
        followed = list(tailing.follow(str(path), 1, stepping(steps), poll=0))
    finally:
        os.close(writer)
    assert followed == [b"1\n", b"2\n", b"3\n", b"4\n"], followed


@pytest.mark.parametrize("midway", [False, True])
def test_follow_reads_the_files_rotated_between_two_looks(tmp_path, midway):
    """The file monitor's ``max_bytes`` under a burst rotates more than once between two
    looks of the follower: it printed the old file and the newest, never those in
    between. ``midway``: the follower looks while a rotation renames (``PATH.1`` gone)."""
    from immortal import tailing

    path = tmp_path / "out"
    path.write_bytes(b"1\n")

    def rotate(text: bytes) -> None:
        for n in (2, 1):
            if (tmp_path / f"out.{n}").exists():
                (tmp_path / f"out.{n}").rename(tmp_path / f"out.{n + 1}")
        path.rename(tmp_path / "out.1")
        path.write_bytes(text)

    def twice() -> None:
        with path.open("ab") as handle:
            handle.write(b"2\n")
        rotate(b"3\n")
        rotate(b"4\n")
        rotate(b"5\n")
        if midway:  # the next rotation has moved out.1 on and not yet out
            (tmp_path / "out.3").rename(tmp_path / "out.4")
            (tmp_path / "out.2").rename(tmp_path / "out.3")
            (tmp_path / "out.1").rename(tmp_path / "out.2")

    steps = iter([twice, lambda: None])
    followed = list(tailing.follow(str(path), 1, stepping(steps), poll=0))
    assert followed == [b"1\n", b"2\n", b"3\n", b"4\n", b"5\n"], followed


def test_tail_and_follow_keep_one_instances_lines(tmp_path):
    """``logs NAME:K``: the last lines of one instance, found however far back they are,
    then its new lines alone."""
    from immortal import tailing

    path = tmp_path / "output.log"
    lines = [b"2026-01-01T00:00:00.000Z stdout:%d | n %d\n" % (n % 3, n) for n in range(300)]
    path.write_bytes(b"".join(lines) + b"2026-01-01T00:00:00.000Z event   | pump start\n")

    def mine(line: bytes) -> bool:
        return b" stdout:2 |" in line

    assert list(tailing.tail(str(path), 2, mine)) == [lines[296], lines[299]]
    assert list(tailing.tail(str(path), 0, mine)) == []
    assert len(list(tailing.tail(str(path), 500, mine))) == 100
    ended = []
    followed = tailing.follow(str(path), 1, lambda: not ended, poll=0.001, keep=mine)
    try:
        assert next(followed) == lines[299]
        with path.open("ab") as out:
            out.write(b"2026-01-01T00:00:01.000Z stdout:1 | other\n"
                      b"2026-01-01T00:00:01.000Z stdout:2 | next\n")
        ended.append(True)
        assert list(followed) == [b"2026-01-01T00:00:01.000Z stdout:2 | next\n"]
    finally:
        followed.close()
