"""Faults that must not kill a role: signals it inherits, writes that fail (a closed pipe,
a file-size limit, a full disk), its own logs, and a control socket under attack."""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import LONG, SHORT, TALKER, proc_state, wait_for
from immortal import control, orphans
from immortal._linux import is_alive, process_start_time

pytestmark = pytest.mark.timeout(120)

WRITER = """\
import sys, time
n = 0
while True:
    n += 1
    print(f"line {n} " + "x" * 100, flush=True)
    time.sleep(0.001)
"""


# The target whose signal dispositions are read: not a Python program, which ignores SIGPIPE
# and SIGXFSZ itself once its interpreter has started (a read would race that start).
SLEEP = shutil.which("sleep") or "/bin/sleep"


def signal_mask(pid: int, field: str) -> set[int]:
    """The signals of /proc/PID/status's ``field`` (SigIgn, SigBlk...)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                bits = int(line.split()[1], 16)
                return {n for n in range(1, 65) if bits & (1 << (n - 1))}
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def read(path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


# ----------------------------------------------------------------- A: signals
def test_roles_ignore_sigpipe_and_sigxfsz_and_the_target_gets_defaults(started):
    previous = signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # the caller's, inherited
    try:
        group = started(SLEEP, ["3600"])
    finally:
        signal.signal(signal.SIGUSR2, previous)
    pids = group.pids
    for role in ("daemon", "pump"):
        ignored = signal_mask(pids[role], "SigIgn")
        assert {signal.SIGPIPE, signal.SIGXFSZ} <= ignored, (role, ignored)
        assert signal.SIGUSR2 not in ignored, role
    assert signal_mask(pids["target"], "SigIgn") == set()
    assert signal_mask(pids["target"], "SigBlk") == set()


def freeze(pid: int, number: int) -> None:
    """Stop ``pid`` with ``number`` and wait until it is stopped."""
    os.kill(pid, number)
    wait_for(lambda: proc_state(pid), lambda state: state == "T", SHORT,
             what=f"process {pid} stopped")


@pytest.mark.parametrize("strategy", ["daemon", "unattached"])
def test_a_client_gone_before_its_answer_does_not_kill_the_root(started, strategy):
    group = started(TALKER, [], strategy=strategy)
    pids = group.pids
    root = pids["daemon" if strategy == "daemon" else "pump"]
    # So that the client is gone when the answer is written: the daemon stopped as a job
    # (a SIGSTOP's SIGCONT would restart its group), the pump by SIGSTOP.
    freeze(root, signal.SIGTSTP if strategy == "daemon" else signal.SIGSTOP)
    try:
        for _ in range(3):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(str(group.directory / "control.sock"))
                sock.sendall(b'{"cmd": "status"}\n' * 50)
    finally:
        os.kill(root, signal.SIGCONT)
    answer = control.request(group.directory / "control.sock", {"cmd": "status"})
    assert answer["ok"]
    assert group.pids == pids


# Writes the name of each USR1 or USR2 it gets to LOG, one a line.
NAMER = """
import signal, sys, time
def got(number, frame):
    with open(sys.argv[1], "a") as handle:
        handle.write(signal.Signals(number).name + "\\n")
signal.signal(signal.SIGUSR1, got)
signal.signal(signal.SIGUSR2, got)
print("ready", flush=True)
while True:
    time.sleep(60)
"""


def test_a_request_its_client_gave_up_on_is_not_carried_out_later(started, tmp_path):
    """A root frozen past a client's wait: the client signals the target itself, and the
    root, once it runs again, does not send the signal a second time (``expires``)."""
    program, log = tmp_path / "namer.py", tmp_path / "signals.log"
    program.write_text(NAMER)
    group = started(str(program), [str(log)], ready="line:^ready")
    daemon = group.pids["daemon"]
    freeze(daemon, signal.SIGTSTP)  # as a job: its SIGCONT restarts nothing
    try:
        group.signal("USR1")  # no answer within 5 s: sent to the target's group directly
    finally:
        os.kill(daemon, signal.SIGCONT)
    wait_for(lambda: read(group.directory / "daemon.log"),
             lambda text: "not carried out" in text, SHORT, what="the late request read")
    group.signal("USR2")
    lines = wait_for(lambda: read(log).split(), lambda got: "SIGUSR2" in got, SHORT,
                     what="SIGUSR2 in the target")
    assert lines == ["SIGUSR1", "SIGUSR2"]


@pytest.mark.parametrize("monitors", [[], ["-m", "console"]], ids=["echo", "console"])
def test_a_development_pump_ends_the_group_itself_when_its_stdout_closes(tmp_path, monitors):
    """`immortal run -s development ... | head`: the pipe closes; the pump does not die of
    it (SIGPIPE), it stops the group itself, which ends as stopped with that reason. So it
    does when `console` shows the output (the pump echoes nothing then: before, the group
    ran on)."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    cli = subprocess.Popen(
        [sys.executable, "-m", "immortal", "run", "-s", "development", "--name", "piped",
         *monitors, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert cli.stdout is not None
        for _ in range(20):  # the command's own "started ..." lines may come first
            if b"line " in cli.stdout.readline():
                break
        else:
            pytest.fail("no line of the target's on the pump's stdout")
        cli.stdout.close()  # as head does once it has its lines
        assert cli.wait(LONG) == 0
        from immortal.events import READER_GONE
        from immortal.state import instance_dir, read_status

        status = read_status(instance_dir("piped"))
        assert status is not None and not status.running
        assert (status.state, status.reason) == ("stopped", READER_GONE), status
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()


def test_a_file_size_limit_drops_lines_and_kills_no_pump(started, tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    out = tmp_path / "out.log"
    group = started(script, [], options={"output": str(out)})
    pids = group.pids
    wait_for(lambda: read(out), lambda t: "line 10 " in t)
    limit = out.stat().st_size + 8192
    for role in ("daemon", "pump"):  # a new pump, forked from the daemon, has it too
        resource.prlimit(pids[role], resource.RLIMIT_FSIZE, (limit, limit))
    log = group.directory / "pump.log"
    wait_for(lambda: read(log), lambda t: "File too large" in t,
             what="the pump to report EFBIG and go on")
    assert group.pids["pump"] == pids["pump"]
    assert group.status().restarts == 0


# ----------------------------------------------------------------- E: bounded role logs
class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_role_log_rate_limits_each_kind_and_summarises(tmp_path):
    from immortal.rolelog import RoleLog

    path = tmp_path / "role.log"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    clock = FakeClock()
    log = RoleLog(str(path), fd=fd, cap=1 << 20, period=10.0, burst=2, clock=clock)
    for n in range(100):
        log.report("noisy", f"noisy {n}\n")
        log.report("rare", f"rare {n}\n") if n % 50 == 0 else None
    assert path.read_text() == "noisy 0\nrare 0\nnoisy 1\nrare 50\n"
    clock.now += 10.0
    log.report("noisy", "noisy again\n")
    assert path.read_text().endswith(
        "immortal: (98 similar messages suppressed)\nnoisy again\n")
    log.report("noisy", "one more\n")
    log.report("noisy", "suppressed\n")
    log.flush_summaries()
    assert path.read_text().endswith("one more\nimmortal: (1 similar messages suppressed)\n")
    os.close(fd)


def test_role_log_is_capped_by_rotation(tmp_path):
    from immortal.rolelog import RoleLog

    path = tmp_path / "role.log"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(fd, 100)  # stands for fd 2: rotation reopens the file onto it
    os.close(fd)
    log = RoleLog(str(path), fd=100, cap=1000)
    for n in range(1000):
        log.write(f"line {n:04}\n")
    kept = path.read_text()
    older = (tmp_path / "role.log.1").read_text()
    assert len(kept) <= 1000 and len(older) <= 1000
    assert kept.endswith("line 0999\n")
    assert older.endswith(f"line {int(kept.split()[1]) - 1:04}\n")  # nothing lost between
    os.write(100, b"direct\n")  # fd 100 was moved to the new file
    assert path.read_text().endswith("direct\n")
    os.close(100)


def test_role_log_survives_failed_writes(tmp_path):
    from immortal.rolelog import RoleLog

    log = RoleLog(None, fd=os.open("/dev/full", os.O_WRONLY))
    log.write("lost\n")
    log.report("kind", "lost too\n")
    assert log.lost == 2
    os.close(log.fd)


SPAMMER = """\
import os, socket, sys
sock = socket.socket(fileno=int(os.environ["IMMORTAL_CHANNEL_FD"]))
for n in range(20000):
    sock.send(b"not json " + str(n).encode() + b" " + b"x" * 200)
print("sent", flush=True)
import time
time.sleep(3600)
"""


def test_a_target_flooding_the_channel_with_garbage_does_not_grow_pump_log(
        started, tmp_path):
    script = tmp_path / "spammer.py"
    script.write_text(SPAMMER)
    out = tmp_path / "out.log"
    group = started(script, [], channel=True, options={"output": str(out)})
    wait_for(lambda: read(out), lambda t: "sent" in t, timeout=60,
             what="the target to send its garbage")
    log = group.directory / "pump.log"
    group.stop()
    text = read(log)
    size = len(text.encode()) + len(read(group.directory / "pump.log.1").encode())
    assert size < 64 * 1024, f"pump.log grew to {size} bytes"
    assert "not JSON" in text and "similar messages suppressed" in text


# ----------------------------------------------------------------- B: a full disk
@pytest.fixture
def small_disk(home, monkeypatch):
    """A 512 KiB tmpfs as IMMORTAL_HOME; skipped where it cannot be mounted."""
    mount = home / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs",
                             str(mount)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root and a mount namespace "
                    f"that allows it): {result.stderr.strip()}")
    monkeypatch.setenv("IMMORTAL_HOME", str(mount))
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(directory) -> int:
    """Fill the file system with one file; return the bytes written."""
    total = 0
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            total += os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == 28, exc  # ENOSPC
    finally:
        os.close(fd)
    return total


def test_a_full_disk_kills_neither_roles_nor_target_and_recovers(small_disk, started,
                                                                 tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    group = started(script, [], policy={"min_uptime": 0.0, "backoff_initial": 0.0})
    pids = group.pids
    out = group.directory / "output.log"
    wait_for(lambda: read(out), lambda t: "line 10 " in t)
    born = process_start_time(pids["daemon"])
    fill(small_disk)
    target = pids["target"]
    os.kill(pids["pump"], signal.SIGKILL)  # the daemon logs it, and forks a new pump
    holders = {pid for pid, _ in orphans.holders(group.directory)}  # the daemon's too
    pump = wait_for(lambda: [p for p in children(pids["daemon"]) if p not in
                             (pids["pump"], target, *holders)],
                    lambda kids: len(kids) == 1, what="a new pump")[0]
    for _ in range(3):  # deaths, spawns, status writes and log lines on a full disk
        os.kill(target, signal.SIGKILL)
        target = wait_for(lambda: children(pump),
                          lambda kids: len(kids) == 1 and kids[0] != target,
                          what="a new target")[0]
    assert is_alive(pids["daemon"], born)
    cli = subprocess.run([sys.executable, "-m", "immortal", "status", group.name],
                         capture_output=True, text=True, timeout=SHORT)
    assert cli.returncode == 0 and "running" in cli.stdout, cli.stderr
    assert not [p for p in os.listdir(group.directory) if p.endswith(".tmp")]
    os.unlink(small_disk / "filler")  # space again: status and output resume
    os.kill(target, signal.SIGKILL)
    status = wait_for(group.status, lambda s: s.pids.get("pump") == pump
                      and s.state == "running" and s.pids.get("target") not in (None, target),
                      what=f"status.json written again (pump {pump}, old target {target})")
    assert status.pids["daemon"] == pids["daemon"]
    text = wait_for(lambda: read(out), lambda t: "output resumed" in t,
                    what="the output to resume")
    assert_whole_records(text)


def assert_whole_records(text: str) -> None:
    """Every record of a ``file`` monitor's output whole: one cut by a full disk is taken
    back, not left for the next record to be glued to."""
    records = text.splitlines()
    broken = [r for r in records
              if not re.match(r"\d{4}-\d\d-\d\dT\S+ (stdout|stderr|event ) \| ", r)]
    assert not broken, broken[:3]


COUNTER = """\
import os, sys, time
n = 0
while True:
    n += 1
    print(f"line {n} " + "x" * 100, flush=True)
    if n % 100 == 0:
        with open(sys.argv[1] + ".tmp", "w") as handle:
            handle.write(str(n))
        os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(0.001)
"""


def test_lines_a_full_disk_drops_are_counted_one_by_one(small_disk, started, tmp_path):
    """The ``file`` monitor's "output resumed; N lines dropped" counts lines, not the
    blocks it writes at once (it said 2 where hundreds were missing)."""
    script = tmp_path / "counter.py"
    script.write_text(COUNTER)
    count = tmp_path / "count"  # off the small disk: the target's own count of its lines
    group = started(script, [str(count)])
    out = group.directory / "output.log"
    wait_for(lambda: read(out), lambda t: "line 10 " in t)
    fill(small_disk)
    at = wait_for(lambda: int(read(count) or 0), bool, what="the target's count")
    wait_for(lambda: int(read(count) or 0), lambda n: n >= at + 500, LONG,
             what="lines written while the disk is full")
    os.unlink(small_disk / "filler")
    text = wait_for(lambda: read(out), lambda t: "output resumed" in t,
                    what="the output to resume")
    assert_whole_records(text)
    numbers = [int(n) for n in re.findall(r"\| line (\d+) ", text)]
    missing = len(set(range(1, max(numbers) + 1)) - set(numbers))
    dropped = sum(int(d) for d in re.findall(r"output resumed; (\d+) lines dropped", text))
    assert missing >= 500 and dropped == missing, (missing, dropped)


def children(pid: int) -> list[int]:
    from conftest import children_of, proc_state

    return [kid for kid in children_of(pid) if proc_state(kid) not in (None, "Z")]


# ----------------------------------------------------------------- D: the control socket
def connect_nowait(path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.connect(str(path))
    except (BlockingIOError, ConnectionRefusedError):
        sock.close()  # the backlog is full: this one does not get in
        return None
    return sock


@pytest.fixture
def many_files():
    """Room for a thousand sockets in this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1500
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"RLIMIT_NOFILE's hard limit {hard} is too low for 1,100 clients")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("strategy", ["daemon", "unattached"])
def test_idle_clients_and_a_flood_do_not_lock_out_stop(started, many_files, strategy):
    group = started(TALKER, [], strategy=strategy)
    path = group.directory / "control.sock"
    idle = [s for s in (connect_nowait(path) for _ in range(100)) if s is not None]
    flood = []
    for _ in range(1000):
        sock = connect_nowait(path)
        if sock is not None:
            try:
                sock.send(b'{"cmd": "status"}\n')
            except OSError:
                pass
            flood.append(sock)
    try:
        assert len(idle) >= 32  # the whole table, at least
        begun = time.monotonic()
        final = group.stop(timeout=2.0)
        elapsed = time.monotonic() - begun
        assert not final.running and final.state == "stopped"
        assert elapsed < 2.0 + 5.0, f"stop took {elapsed:.1f} s"
    finally:
        for sock in idle + flood:
            sock.close()


def test_a_slow_client_is_dropped_however_its_bytes_trickle(started):
    group = started(TALKER, [])
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(group.directory / "control.sock"))
        sock.settimeout(0.2)
        begun = time.monotonic()
        closed = False
        while time.monotonic() - begun < SHORT and not closed:
            try:
                sock.send(b" ")  # never a whole request
                closed = sock.recv(1) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True
        assert closed, "a client trickling bytes held its slot"
        assert time.monotonic() - begun < control.IDLE + 5.0


@pytest.mark.parametrize("strategy", ["daemon", "unattached"])
def test_the_root_survives_running_out_of_files(started, strategy):
    group = started(TALKER, [], strategy=strategy)
    pids = group.pids
    role = "daemon" if strategy == "daemon" else "pump"
    born = process_start_time(pids[role])
    resource.prlimit(pids[role], resource.RLIMIT_NOFILE, (32, 32))
    path = group.directory / "control.sock"
    flood = [s for s in (connect_nowait(path) for _ in range(300)) if s is not None]
    try:
        def status():
            try:
                return control.request(path, {"cmd": "status"}, timeout=2.0)
            except Exception as exc:  # refused for want of files: asked again
                return exc

        answer = wait_for(status, lambda a: isinstance(a, dict) and a.get("ok"),
                          what="a status answer while the flood holds the files")
        assert answer["ok"]
        assert is_alive(pids[role], born)
        assert group.pids == pids
    finally:
        for sock in flood:
            sock.close()
    final = group.stop(timeout=2.0)
    assert final.state == "stopped"


# ----------------------------------------------------------------- C: a frozen root
@pytest.mark.parametrize("how", ["api", "cli"])
def test_a_frozen_daemon_does_not_make_the_group_unstoppable(started, how):
    from immortal.group import MARGIN

    group = started(TALKER, [], stop_timeout=1.0)
    pids = group.pids
    born = {role: process_start_time(pid) for role, pid in pids.items()}
    os.kill(pids["daemon"], signal.SIGSTOP)
    try:
        begun = time.monotonic()
        if how == "api":
            final = group.stop()
        else:
            cli = subprocess.run([sys.executable, "-m", "immortal", "stop", group.name],
                                 capture_output=True, text=True, timeout=60)
            assert cli.returncode == 0, cli.stderr
            final = group.status()
        elapsed = time.monotonic() - begun
    finally:
        left = [role for role, pid in pids.items() if is_alive(pid, born[role])]
        for role in left:  # after a failure: nothing stays frozen
            os.kill(pids[role], signal.SIGKILL)
    assert not left, f"still alive after the stop: {left}"
    assert not final.running
    assert elapsed < 1.0 + MARGIN + 3.0, f"the stop took {elapsed:.1f} s"


def test_signal_reaches_the_target_when_the_daemon_is_frozen(started, tmp_path):
    out = tmp_path / "out.log"
    group = started(TALKER, ["--trap", "USR1"], options={"output": str(out)})
    wait_for(lambda: read(out), lambda t: "ready" in t)
    daemon = group.pids["daemon"]
    freeze(daemon, signal.SIGTSTP)  # resumed without a restart (a SIGSTOP's SIGCONT rolls)
    try:
        group.signal("USR1")
        wait_for(lambda: read(out), lambda t: "got USR1" in t)
    finally:
        os.kill(daemon, signal.SIGCONT)


IGNORING_MONITOR = """\
import signal

import immortal


class Ignoring(immortal.Monitor):
    def setup(self, why, message):
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
"""


def test_a_signal_a_monitor_ignores_in_the_pump_is_not_ignored_by_the_target(
        started, tmp_path, monkeypatch):
    (tmp_path / "ignoring_monitor.py").write_text(IGNORING_MONITOR)
    monkeypatch.syspath_prepend(str(tmp_path))
    group = started(SLEEP, ["3600"], monitor="ignoring_monitor:Ignoring")
    pids = group.pids
    assert signal.SIGUSR1 in signal_mask(pids["pump"], "SigIgn")
    assert signal_mask(pids["target"], "SigIgn") == set()
    os.kill(pids["target"], signal.SIGKILL)  # a respawn too
    status = wait_for(group.status, lambda s: s.pids.get("target", pids["target"])
                      != pids["target"], what="the respawn")
    assert signal_mask(status.pids["target"], "SigIgn") == set()


def test_starting_on_a_full_disk_is_one_clear_error(small_disk):
    import immortal

    fill(small_disk)
    with pytest.raises(immortal.StartError, match="No space left on device"):
        immortal.start(TALKER, [], name="full")
    cli = subprocess.run([sys.executable, "-m", "immortal", "run", "--name", "full2", TALKER],
                         capture_output=True, text=True, timeout=SHORT * 3)
    assert cli.returncode == 1 and cli.stderr.startswith("immortal: error: "), cli.stderr
    assert "Traceback" not in cli.stderr


def replace_supervisors(group, pids, target) -> tuple[int, list[int]]:
    """The pump killed, then the daemon: the new pump takes over as the daemon and forks
    a pump of its own. That new daemon's pid, and its children."""
    os.kill(pids["pump"], signal.SIGKILL)
    holders = {pid for pid, _ in orphans.holders(group.directory)}
    pump = wait_for(lambda: [p for p in children(pids["daemon"]) if p not in
                             (pids["pump"], target, *holders)],
                    lambda kids: len(kids) == 1, what="a new pump")[0]
    os.kill(pids["daemon"], signal.SIGKILL)
    kids = wait_for(lambda: children(pump), lambda kids: any(
        orphans.wears_title(kid, "pump", group.directory) for kid in kids),
        what="the pump to take over as the daemon, with a pump of its own")
    return pump, kids


@pytest.fixture
def immutable(tmp_path):
    """``make(directory)``: the directory made immutable (``chattr +i``: no entry can be
    made, removed or renamed in it), as a read-only remount would; undone at the end.
    Skipped where the file system or the user cannot."""
    made: list = []

    def make(directory) -> None:
        result = subprocess.run(["chattr", "+i", str(directory)], capture_output=True,
                                text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot make a directory immutable here: {result.stderr.strip()}")
        made.append(directory)

    def undo() -> None:
        while made:
            subprocess.run(["chattr", "-i", str(made.pop())], check=True)

    make.undo = undo
    yield make
    undo()


def test_supervisors_replaced_in_a_directory_they_cannot_write_keep_the_group(
        started, tmp_path, immutable):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    group = started(script, [])
    pids = group.pids
    target = pids["target"]
    immutable(group.directory)
    # pump.log cannot be rotated nor control.sock made again: before, the daemon died of
    # the first and the pump taking over of the second, leaving the target unsupervised.
    pump, successor = replace_supervisors(group, pids, target)
    assert is_alive(pump, None) and is_alive(target, None)
    immutable.undo()
    # No event follows: the failed status writes are tried again by themselves.
    status = wait_for(group.status, lambda s: s.running and s.pids.get("daemon") == pump,
                      what="status.json written again once the directory can be")
    assert status.pids["pump"] in successor and status.pids["target"] == target
    group.stop()
    assert not is_alive(target, None) and not is_alive(pump, None)


def test_supervisors_replaced_on_a_full_disk_read_as_running_and_stop_at_once(
        small_disk, started, tmp_path):
    """Pump and daemon killed while the disk is full: their successors cannot write
    status.json, which names the dead ones. ``status`` still reads the group as running
    (the daemon serving its socket says so), and ``stop`` does not wait as for a start
    under way (it waited as long as a start may take: 80 s) but stops it at once."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    group = started(script, [], stop_timeout=2.0)
    pids = group.pids
    target = pids["target"]
    fill(small_disk)
    pump, _ = replace_supervisors(group, pids, target)
    wait_for(lambda: is_alive(pids["daemon"], None), lambda alive: not alive,
             what="the old daemon gone")
    wait_for(group.status, lambda s: s.running and s.pids.get("daemon") == pump,
             what="the group read as running, under its new daemon")
    began = time.monotonic()
    group.stop()
    assert time.monotonic() - began < 2.0 + SHORT
    assert not is_alive(pump, None) and not is_alive(target, None)
