"""Faults that must not kill a role: signals it inherits, writes that fail (a closed pipe,
a file-size limit, a full disk), its own logs, and a control socket under attack."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import SHORT, TALKER, wait_for
from immortal import control
from immortal.state import is_alive, process_start_time

pytestmark = pytest.mark.timeout(120)

WRITER = """\
import sys, time
n = 0
while True:
    n += 1
    print(f"line {n} " + "x" * 100, flush=True)
    time.sleep(0.001)
"""


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
        group = started(TALKER, [])
    finally:
        signal.signal(signal.SIGUSR2, previous)
    pids = group.pids
    for role in ("daemon", "pump"):
        ignored = signal_mask(pids[role], "SigIgn")
        assert {signal.SIGPIPE, signal.SIGXFSZ} <= ignored, (role, ignored)
        assert signal.SIGUSR2 not in ignored, role
    assert signal_mask(pids["target"], "SigIgn") == set()
    assert signal_mask(pids["target"], "SigBlk") == set()


@pytest.mark.parametrize("strategy", ["daemon", "unattached"])
def test_a_client_gone_before_its_answer_does_not_kill_the_root(started, strategy):
    group = started(TALKER, [], strategy=strategy)
    pids = group.pids
    root = pids["daemon" if strategy == "daemon" else "pump"]
    os.kill(root, signal.SIGSTOP)  # so that the client is gone when the answer is written
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


def test_a_development_pump_survives_its_stdout_closed(tmp_path):
    """`immortal run -s development ... | head`: the pipe closes, the pump lives on."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    cli = subprocess.Popen(
        [sys.executable, "-m", "immortal", "run", "-s", "development", "--name", "piped",
         str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        for _ in range(20):  # the command's own "started ..." lines may come first
            if cli.stdout.readline().startswith(b"line "):
                break
        else:
            pytest.fail("no line of the target's on the pump's stdout")
        cli.stdout.close()  # as head does once it has its lines
        from immortal.state import instance_dir, read_status

        directory = instance_dir("piped")
        status = wait_for(lambda: read_status(directory), lambda s: s and s.running)
        pump = status.pids["pump"]
        started_at = process_start_time(pump)
        # The pump echoes every line it reads: many writes to the closed pipe by now.
        begun = time.monotonic()
        wait_for(lambda: time.monotonic() - begun, lambda e: e > 1.0)
        assert is_alive(pump, started_at), "the pump died of its closed stdout"
        assert cli.poll() is None or cli.returncode == 0
    finally:
        cli.send_signal(signal.SIGINT)
        try:
            cli.wait(SHORT)
        except subprocess.TimeoutExpired:
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
