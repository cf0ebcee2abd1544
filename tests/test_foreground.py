"""``immortal run --foreground``: the command's own process is the group's daemon.

Real commands in subprocesses, real signals: the foreground process is the daemon (same
pid as the command started), stays until the group ends, and its exit code says how:
0 after a requested stop, 1 when the group gives up or fails to start, the target's own
code when it ended on a final exit code. The control socket works against it as against
a detached group; a pump killed is replaced; ``--console`` echoes the output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import (LONG, SHORT, TALKER, children_of, descendants, proc_state, wait_for,
                      without_holder)
from immortal._linux import is_alive, process_start_time
from immortal.process import process_group_kwargs
from immortal.state import read_status

pytestmark = pytest.mark.timeout(120)

COMMAND = [sys.executable, "-m", "immortal"]


class Foreground:
    """A running ``immortal run --foreground`` and what it printed."""

    def __init__(self, popen: subprocess.Popen[str], home: Path, name: str) -> None:
        self.popen = popen
        self.home = home
        self.name = name
        self.out = ""
        self.err = ""

    @property
    def directory(self) -> Path:
        return self.home / self.name

    def status(self) -> object:
        return read_status(self.directory)

    def ready(self) -> None:
        """Wait until the group runs with a ready target."""
        try:
            wait_for(lambda: read_status(self.directory),
                     lambda s: s is not None and s.running and s.ready and s.state == "running",
                     LONG, f"group {self.name!r} running and ready")
        except pytest.fail.Exception as exc:
            pytest.fail(f"{exc}\n{self.evidence()}", pytrace=False)

    def evidence(self) -> str:
        """What the group's files say, for a failure's message."""
        parts = []
        for name in ("output.log", "pump.log.1", "pump.log"):
            try:
                parts.append(f"--- {name}:\n" + (self.directory / name).read_text()[-3000:])
            except OSError:
                pass
        return "\n".join(parts)

    def wait(self, timeout: float = LONG) -> int:
        self.out, self.err = self.popen.communicate(timeout=timeout)
        return self.popen.returncode

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*COMMAND, *args], env={**os.environ,
                              "IMMORTAL_HOME": str(self.home)}, capture_output=True,
                              text=True, timeout=LONG, stdin=subprocess.DEVNULL)


@pytest.fixture
def foreground(home: Path) -> Iterator[Callable[..., Foreground]]:
    """``foreground(name, *run_options, target..., env=..., prefix=...)``: start one; at
    teardown, a SIGTERM (then a KILL) to whatever still runs."""
    started: list[Foreground] = []

    def start(name: str, *words: str, env: dict[str, str] | None = None,
              prefix: list[str] | None = None, job: bool = False) -> Foreground:
        """``job``: in a process group of its own, as a shell runs a job."""
        popen = subprocess.Popen([*(prefix or []), *COMMAND, "run", "--foreground", "-n",
                                  name, *words],
                                 env={**os.environ, "IMMORTAL_HOME": str(home), **(env or {})},
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True,
                                 **(process_group_kwargs() if job else {}))
        fg = Foreground(popen, home, name)
        started.append(fg)
        return fg

    yield start
    for fg in started:
        if fg.popen.poll() is None:
            # The daemon itself (unshare(1) passes no signal on to its child).
            for pid in [fg.popen.pid, *children_of(fg.popen.pid)]:
                os.kill(pid, signal.SIGTERM)
            try:
                fg.popen.communicate(timeout=LONG)
            except subprocess.TimeoutExpired:
                for pid in [fg.popen.pid, *descendants(fg.popen.pid)]:
                    os.kill(pid, signal.SIGKILL)
                fg.popen.communicate(timeout=LONG)
        # Closed here when a failed test never read them, not by a later test's garbage
        # collection (which reports them unclosed there).
        for pipe in (fg.popen.stdout, fg.popen.stderr):
            if pipe is not None:
                pipe.close()


def described(fg: Foreground) -> str:
    return f"exit {fg.popen.returncode}\n--- stdout ---\n{fg.out}--- stderr ---\n{fg.err}"


def test_the_command_is_the_daemon_and_a_stop_ends_it_with_0(foreground):
    # Ready once its trap is set: the tests' ready=spawn would let USR1 come first.
    fg = foreground("fg", "--stop-timeout", "5", "--ready", "line:^ready", TALKER, "--",
                    "--out", "2", "--trap", "USR1")
    fg.ready()
    status = read_status(fg.directory)
    assert status.pids["daemon"] == fg.popen.pid  # no fork: the command itself
    assert status.pids["pump"] != fg.popen.pid
    listed = fg.cli("status", "fg")
    assert listed.returncode == 0 and "running" in listed.stdout, listed
    sent = fg.cli("signal", "fg", "USR1")
    assert sent.returncode == 0, sent
    output = fg.directory / "output.log"
    wait_for(lambda: output.read_text() if output.exists() else "", lambda t: "got USR1" in t)
    stopped = fg.cli("stop", "fg")
    assert stopped.returncode == 0, stopped
    assert fg.wait() == 0, described(fg)
    assert "started 'fg' (foreground" in fg.err and "'fg' ended: stopped (stop)" in fg.err
    assert fg.out == ""  # no console: stdout is not a terminal here


def test_sigterm_and_sigint_stop_the_group_within_its_grace_and_exit_0(foreground):
    for number in (signal.SIGTERM, signal.SIGINT):
        name = f"term{int(number)}"
        # Ready once it says so: it ignores TERM by then.
        fg = foreground(name, "--stop-timeout", "2", "--ready", "line:^out 1", TALKER, "--",
                        "--ignore-term", "--out", "1")
        fg.ready()
        target = read_status(fg.directory).pids["target"]
        began = time.monotonic()
        fg.popen.send_signal(number)
        assert fg.wait() == 0, described(fg)
        assert time.monotonic() - began < 2 + SHORT
        assert not is_alive(target, None)
        assert "killed by SIGKILL" in (fg.directory / "output.log").read_text()


def test_a_pump_killed_is_replaced_and_the_target_kept(foreground):
    fg = foreground("pumped", TALKER)
    fg.ready()
    before = read_status(fg.directory)
    os.kill(before.pids["pump"], signal.SIGKILL)
    after = wait_for(lambda: read_status(fg.directory),
                     lambda s: s.pids.get("pump") not in (None, before.pids["pump"]),
                     LONG, "a new pump")
    assert after.pids["target"] == before.pids["target"] and fg.popen.poll() is None
    fg.popen.send_signal(signal.SIGTERM)
    assert fg.wait() == 0, described(fg)
    # The start is said once: a new pump's answer said it again, with the dead pump's pid.
    assert fg.err.count("started 'pumped'") == 1, fg.err
    assert "pump killed by SIGKILL; starting a new one" in fg.err


def test_giving_up_exits_1(foreground):
    fg = foreground("fatal", "--max-restarts", "1", "--min-uptime", "5", TALKER, "--",
                    "--exit", "3")
    assert fg.wait() == 1, described(fg)
    assert "ended: fatal" in fg.err


def test_a_final_exit_code_of_the_one_target_is_the_exit_code(foreground):
    fg = foreground("final", "--final-exit-codes", "7", TALKER, "--", "--exit", "7")
    assert fg.wait() == 7, described(fg)
    assert "exit code 7 means do not restart" in fg.err


def test_a_failed_start_exits_1_with_the_reason(foreground):
    fg = foreground("broken", "--ready", "uptime:3", "--ready-timeout", "10", TALKER, "--",
                    "--err", "1", "--exit", "2")
    assert fg.wait() == 1, described(fg)
    assert "immortal: error: group 'broken' failed to start" in fg.err and "err 1" in fg.err


def test_a_sigterm_during_the_start_is_a_stop_and_exits_0(foreground):
    """A container stopped right after it started: the targets' deaths are the stop's,
    not a failed start (before: 'failed to start: its target killed by SIGTERM before
    it was ready', exit 1, and a systemd unit left failed)."""
    fg = foreground("early", "--ready", "line:^never", TALKER)
    wait_for(fg.status, lambda s: s is not None and "target" in s.pids, LONG,
             "the target spawned, not yet ready")
    fg.popen.send_signal(signal.SIGTERM)
    assert fg.wait() == 0, described(fg)
    assert "error" not in fg.err and "'early' was stopped before it was ready" in fg.err
    assert "'early' ended: stopped (stop)" in fg.err


def test_a_sighup_during_the_start_restarts_and_the_start_goes_on(foreground):
    fg = foreground("hupped", "--ready", "line:^got USR1", TALKER, "--", "--trap", "USR1",
                    "--out", "1")
    first = wait_for(fg.status, lambda s: s is not None and "target" in s.pids, LONG,
                     "the target spawned, not yet ready").pids["target"]
    fg.popen.send_signal(signal.SIGHUP)
    second = wait_for(fg.status, lambda s: s.pids.get("target") not in (None, first), LONG,
                      "a new target").pids["target"]
    log = fg.directory / "output.log"
    wait_for(log.read_text, lambda text: "out 1" in text.partition(f"spawn pid {second}")[2],
             LONG, "the new target's trap set")
    os.kill(second, signal.SIGUSR1)
    fg.ready()
    assert fg.popen.poll() is None
    fg.popen.send_signal(signal.SIGTERM)
    assert fg.wait() == 0, described(fg)
    assert "started 'hupped'" in fg.err and "error" not in fg.err


def test_bad_input_is_refused_before_anything(foreground, home):
    fg = foreground("bad", "-s", "development", TALKER)
    assert fg.wait() == 2, described(fg)
    assert "cannot run in the foreground" in fg.err
    assert not (home / "bad").exists()


def test_console_echoes_the_output_and_the_monitor_still_gets_it(foreground):
    fg = foreground("echo", "--console", TALKER, "--", "--out", "3", "--err", "2")
    output = fg.directory / "output.log"
    wait_for(lambda: output.read_text() if output.exists() else "",
             lambda t: "out 3" in t and "err 2" in t)
    fg.popen.send_signal(signal.SIGTERM)
    assert fg.wait() == 0, described(fg)
    assert fg.out.splitlines()[:3] == ["out 1", "out 2", "out 3"]
    assert "err 1\nerr 2\n" in fg.err


def test_the_process_keeps_its_pid_and_title(foreground):
    fg = foreground("titled", TALKER)
    fg.ready()
    pid = fg.popen.pid
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        assert handle.read().startswith(b"immortal: daemon ")
    assert process_start_time(pid) is not None
    fg.popen.send_signal(signal.SIGTERM)
    assert fg.wait() == 0, described(fg)


# --- as PID 1, in a PID namespace (a container's init) -------------------------------------

INIT_CHILD = str(Path(__file__).resolve().parent / "programs" / "init_child.py")
UNSHARE = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc"]


def _namespaces_usable(home: Path) -> str | None:
    """Why a PID namespace cannot be used here (None: it can): unshare missing or refused,
    or immortal's ownership checks refusing the home seen from inside (an unprivileged
    user namespace shows files of root's as nobody's)."""
    probe = "from pathlib import Path; from immortal.safety import check_path; " \
            f"check_path(Path({str(home)!r}))"
    try:
        result = subprocess.run([*UNSHARE, sys.executable, "-c", probe], capture_output=True,
                                text=True, timeout=LONG, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return "unshare(1) is not installed"
    if result.returncode != 0:
        return f"{' '.join(UNSHARE)} does not work here: {result.stderr.strip()[-300:]}"
    return None


@pytest.fixture
def init(home: Path, foreground: Callable[..., Foreground]) -> Callable[..., Foreground]:
    """``init(name, *words)``: a foreground group as PID 1 of a new PID namespace."""
    reason = _namespaces_usable(home)
    if reason is not None:
        pytest.skip(reason)
    return lambda name, *words: foreground(name, *words, prefix=UNSHARE)


def host_pid_of_init(fg: Foreground) -> int:
    """The daemon's pid as we see it (PID 1 inside): unshare's one child."""
    return wait_for(lambda: children_of(fg.popen.pid), lambda kids: len(kids) == 1,
                    SHORT, "unshare's child")[0]


def lines(fg: Foreground) -> str:
    output = fg.directory / "output.log"
    return output.read_text() if output.exists() else ""


# Run as PID 1 of a namespace of its own, which plays the host: a bystander (its pid 2),
# then a group in the foreground in a namespace inside (its daemon PID 1 there, its pump
# 2), its home shared; then, from the "host", the group's status and a stop. Prints what
# it saw, as JSON.
HOST = """\
import json, os, subprocess, sys, time
command, inner, target = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
group = subprocess.Popen([*inner, *command, "run", "--foreground", "-n", "contained",
                          "--stop-timeout", "2", "--ready", "line:^ready", target],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    shown = subprocess.run([*command, "status", "contained", "--json"],
                           capture_output=True, text=True, timeout=60)
    if shown.returncode == 0 and json.loads(shown.stdout).get("ready"):
        break
    time.sleep(0.05)
seen = {"bystander": bystander.pid, "status": json.loads(shown.stdout or "{}")}
with open(f"/proc/{group.pid}/task/{group.pid}/children") as handle:
    seen["daemon"] = int(handle.read().split()[0])  # unshare's one child, as we see it
stop = subprocess.run([*command, "stop", "contained"], capture_output=True, text=True,
                      timeout=60)
seen.update(stop=stop.returncode, stopped=stop.stdout + stop.stderr,
            alive=bystander.poll() is None, ended=group.wait(60))
bystander.kill()
print(json.dumps(seen))
"""


def test_a_group_in_another_pid_namespace_is_seen_and_stopped_by_its_own_processes(
        home, init):
    """A container's group, its home shared with the host: its status names pids of its
    own; seen from the host, they are other processes. The host's status shows the
    daemon and pump as the host numbers them (proven by their start times), and a stop
    from the host ends the group at once, signalling no bystander that has one of the
    group's numbers there. Before, the daemon's word proved the host's processes of those
    numbers by their own start times: the status showed the host's PID 1 as the daemon,
    and the stop waited out its grace period, then killed what it took for the group."""
    inner = ["unshare", "--pid", "--fork", "--mount-proc"]
    result = subprocess.run([*UNSHARE, sys.executable, "-c", HOST, json.dumps(COMMAND),
                             json.dumps(inner), INIT_CHILD],
                            env={**os.environ, "IMMORTAL_HOME": str(home)},
                            capture_output=True, text=True, timeout=3 * LONG)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["bystander"] == 2 and seen["status"]["ready"], seen
    pids = seen["status"]["pids"]
    assert pids["daemon"] == seen["daemon"] and pids["pump"] not in (1, 2), seen
    assert seen["stop"] == 0 and seen["alive"] and seen["ended"] == 0, seen


def test_as_pid_1_sigterm_stops_the_group_within_its_grace_and_exits_0(init):
    fg = init("init", "--stop-timeout", "2", "--ready", "line:^ready", INIT_CHILD)
    wait_for(lambda: lines(fg), lambda text: "ready" in text, LONG, "the target's 'ready'")
    daemon = host_pid_of_init(fg)
    with open(f"/proc/{daemon}/status") as handle:
        assert [line.split()[-1] for line in handle if line.startswith("NSpid:")] == ["1"]
    began = time.monotonic()
    os.kill(daemon, signal.SIGTERM)
    assert fg.wait() == 0, described(fg)
    assert time.monotonic() - began < 2 + SHORT
    assert "shutdown: stop" in lines(fg)


def test_as_pid_1_a_sigterm_from_inside_the_namespace_is_taken(init):
    fg = init("inside", "--ready", "line:^ready", INIT_CHILD)
    text = wait_for(lambda: lines(fg), lambda text: "ready" in text, LONG, "'ready'")
    target = int(text.split("stdout | ready ")[1].split()[0])  # its pid inside: not ours
    daemon = host_pid_of_init(fg)
    pump = without_holder(children_of(daemon))[0]
    host_target = children_of(pump)[0]
    assert target != host_target
    os.kill(host_target, signal.SIGUSR2)  # it sends SIGTERM to its PID 1
    assert fg.wait() == 0, described(fg)
    assert "shutdown: stop" in lines(fg)


def test_as_pid_1_a_hundred_orphans_leave_no_zombie(init):
    fg = init("orphans", "--ready", "line:^ready", INIT_CHILD, "--", "100")
    wait_for(lambda: lines(fg), lambda text: "ready" in text, LONG, "the target's 'ready'")
    daemon = host_pid_of_init(fg)
    # They came to PID 1 (the daemon), beside its pump (and its pipe holder).
    wait_for(lambda: without_holder(children_of(daemon)), lambda kids: len(kids) == 101, SHORT,
             "the 100 orphans among PID 1's children")
    pump = next(kid for kid in children_of(daemon) if children_of(kid))
    os.kill(daemon, signal.SIGUSR1)  # passed on to the target, which lets them go
    wait_for(lambda: lines(fg), lambda text: "got USR1" in text, SHORT, "'got USR1'")
    left = wait_for(lambda: without_holder(children_of(daemon)), lambda kids: kids == [pump],
                    SHORT, "every orphan reaped")
    assert [proc_state(kid) for kid in left] != ["Z"]
    assert fg.popen.poll() is None  # and the group runs on, its pump the same
    target = children_of(pump)[0]
    os.kill(pump, signal.SIGKILL)  # a pump death among the orphans' is still seen as one
    # The target comes to PID 1, which hands it to a new pump.
    wait_for(lambda: without_holder(children_of(daemon)), lambda kids: len(kids) == 2
             and target in kids and pump not in kids, LONG, "a new pump")
    wait_for(lambda: lines(fg), lambda text: "adopt pid" in text, LONG, "the adoption")
    os.kill(daemon, signal.SIGTERM)
    assert fg.wait() == 0, described(fg)


def test_a_foreground_daemon_killed_leaves_its_pump_the_daemon(foreground, home):
    """Not the foreground's word any more (its command is dead: the caller sees the KILL),
    but the group's: the pump takes over as any daemon's does, and runs on detached."""
    fg = foreground("orphaned", "--console", TALKER)
    fg.ready()
    before = read_status(fg.directory)
    os.kill(fg.popen.pid, signal.SIGKILL)
    assert fg.popen.wait(timeout=LONG) == -signal.SIGKILL
    after = wait_for(lambda: read_status(fg.directory),
                     lambda s: s.running and s.pids.get("daemon") == before.pids["pump"]
                     and s.pids.get("pump") not in (None, before.pids["pump"]), LONG,
                     "the pump become the daemon, with a pump of its own")
    assert after.pids["target"] == before.pids["target"]
    stopped = fg.cli("stop", "orphaned")
    assert stopped.returncode == 0, stopped
    fg.wait()  # the console's end: the last pump held it
    assert "ready" in fg.out  # echoed on the console


def test_ctrl_z_then_fg_stops_the_job_and_resumes_it_without_a_restart(foreground):
    """What a terminal sends the foreground job (SIGTSTP to its process group: the daemon
    and its pump), then what ``fg`` sends (SIGCONT to the group): both stop, both go on,
    nothing is restarted; a SIGCONT of its own afterwards rolls the group, as SIGHUP."""
    fg = foreground("job", "-w", "2", TALKER, job=True)
    fg.ready()
    before = read_status(fg.directory)
    daemon, pump = before.pids["daemon"], before.pids["pump"]
    targets = {entry.pid for entry in before.instances}
    for _ in range(2):
        os.killpg(daemon, signal.SIGTSTP)
        for pid in (daemon, pump):
            wait_for(lambda: proc_state(pid), lambda state: state == "T", SHORT,
                     what=f"process {pid} stopped")
        os.killpg(daemon, signal.SIGCONT)
        for pid in (daemon, pump):  # back asleep in its loop: the SIGCONT was taken
            wait_for(lambda: proc_state(pid), lambda state: state == "S", SHORT,
                     what=f"process {pid} resumed")
    # Passed on to the pump after whatever the SIGCONTs asked: a second roll would be
    # refused, a first one would make this roll #2.
    restarted = fg.cli("restart", "job")
    assert restarted.returncode == 0, restarted
    middle = read_status(fg.directory)
    assert middle.roll["id"] == 1 and middle.roll["state"] == "done"
    assert not {entry.pid for entry in middle.instances} & targets
    assert (middle.pids["daemon"], middle.pids["pump"]) == (daemon, pump)
    os.kill(daemon, signal.SIGCONT)
    done = wait_for(lambda: read_status(fg.directory),
                    lambda s: (s.roll or {}).get("id") == 2 and s.roll["state"] == "done",
                    LONG, "roll #2 done")
    assert not {entry.pid for entry in done.instances} & {e.pid for e in middle.instances}
    fg.popen.send_signal(signal.SIGTERM)
    assert fg.wait() == 0, described(fg)


@pytest.mark.parametrize("then, said", [(signal.SIGCONT, False), (signal.SIGHUP, True)])
def test_sigterm_then_sigcont_as_systemd_sends_them_stops_without_a_roll(
        foreground, then, said):
    """The SIGCONT a service manager sends after every SIGTERM is taken quietly; an
    operator's SIGHUP then is said to be ignored (before, every stop of a unit said so)."""
    fg = foreground("unit", "-w", "2", "--stop-timeout", "2", TALKER)
    fg.ready()
    fg.popen.send_signal(signal.SIGTERM)
    fg.popen.send_signal(then)
    assert fg.wait() == 0, described(fg)
    final = read_status(fg.directory)
    assert final.state == "stopped" and final.roll is None, final
    assert ("restart signal during the stop was ignored" in fg.err) is said, fg.err


def test_signals_after_the_end_do_not_change_the_exit_code(foreground):
    """A second Ctrl-C or SIGTERM while the command exits (its group over) leaves its 0."""
    fg = foreground("twice", TALKER)
    fg.ready()
    fg.popen.send_signal(signal.SIGTERM)
    while fg.popen.poll() is None:  # as fast as we can, until it has exited
        for number in (signal.SIGTERM, signal.SIGINT):
            try:
                fg.popen.send_signal(number)
            except ProcessLookupError:
                break
    assert fg.wait() == 0, described(fg)
