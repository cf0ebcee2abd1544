"""Readiness: start() and 'immortal run' return once the target is ready, or fail.

The pure ``Readiness`` object is driven by a fake clock; every mode is then run with real
processes: ready, and not ready in time (``StartError``, nothing left behind), a death
before readiness (its exit status and last stderr lines), the SyntaxError through the
command line, sd_notify with a real client, the default with ``IMMORTAL_READY`` cleared.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import immortal
from conftest import LONG, PROGRAMS, SHORT, TALKER, descendants, kill_at_once, wait_for
from immortal import readiness
from immortal.events import ExitStatus
from immortal.readiness import FAILED, READY, WAITING, Mode, Readiness, parse
from immortal.readywatch import ReadyWatch

pytestmark = pytest.mark.timeout(120)

NOTIFIER = str(PROGRAMS / "notifier.py")
LATE_SERVER = str(PROGRAMS / "late_server.py")


@pytest.fixture
def no_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite's IMMORTAL_READY=spawn (conftest) cleared: the built-in default holds."""
    monkeypatch.delenv("IMMORTAL_READY", raising=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def script(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@contextlib.contextmanager
def start_waiting(home: Path, name: str,
                  *words: str) -> Iterator[tuple[subprocess.Popen[str], dict]]:
    """``immortal run -n NAME WORDS...`` in the background, yielded with its status once
    every target is spawned (and, for the test, not yet ready); killed at the end if it
    still runs."""
    run = subprocess.Popen([sys.executable, "-m", "immortal", "run", "-n", name, *words],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    status_file = home / name / "status.json"

    def spawned(data: dict) -> bool:
        instances = data.get("instances")
        if instances:
            return all(entry.get("pid") for entry in instances)
        return "target" in data.get("pids", {})

    try:
        yield run, wait_for(lambda: status_file.exists() and json.loads(status_file.read_text()),
                            lambda data: bool(data) and spawned(data),
                            what="the targets spawned, not yet ready")
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


def assert_nothing_left(name: str, before: set[int]) -> None:
    """A failed start leaves no process and no group of the name."""
    assert set(descendants()) - before == set()
    assert name not in [s.name for s in immortal.groups()]
    try:
        assert not immortal.attach(name).status().running
    except immortal.NotRunning:
        pass  # no group of the name at all


# ----------------------------------------------------------------- the pure object

def test_modes_parse_to_their_canonical_form() -> None:
    assert str(parse("spawn")) == "spawn"
    assert parse("uptime:1.50") == Mode("uptime", seconds=1.5)
    assert str(parse("uptime:1.50")) == "uptime:1.5"
    assert parse("line:^up (\\d+)$").pattern == "^up (\\d+)$"
    assert parse("port:8080").port == 8080
    assert parse("port").port is None
    assert str(parse("notify")) == "notify"


@pytest.mark.parametrize("value, error, words", [
    (3, immortal.InvalidType, "'ready' must be a str"),
    ("uptim:1", immortal.UnknownName, "did you mean 'uptime'"),
    ("uptime", immortal.InvalidSpec, "needs seconds"),
    ("uptime:-1", immortal.InvalidSpec, "needs seconds"),
    ("uptime:nan", immortal.InvalidSpec, "needs seconds"),
    ("line:", immortal.InvalidSpec, "needs a regular expression"),
    ("line:(", immortal.InvalidSpec, "not a regular expression"),
    ("port:0", immortal.InvalidSpec, "[1, 65535]"),
    ("port:http", immortal.InvalidSpec, "[1, 65535]"),
    ("notify:1", immortal.InvalidSpec, "takes nothing"),
])
def test_a_bad_mode_is_one_clear_error(value: object, error: type, words: str) -> None:
    with pytest.raises(error, match="'ready'") as caught:
        parse(value)
    assert words in str(caught.value)


def test_spawn_is_ready_at_the_spawn() -> None:
    state = Readiness(parse("spawn"), 30.0)
    assert state.state == WAITING and state.deadline() is None
    state.spawned(100.0)
    assert state.state == READY and state.deadline() is None


def test_uptime_is_ready_once_lived_and_fails_on_an_early_death() -> None:
    state = Readiness(parse("uptime:1"), 30.0)
    state.spawned(100.0)
    assert state.deadline() == 101.0
    state.tick(100.999)
    assert state.waiting
    state.tick(101.0)
    assert state.ready
    state.exited(ExitStatus(code=1))  # later deaths are the restart policy's
    assert state.ready

    early = Readiness(parse("uptime:1"), 30.0)
    early.spawned(100.0)
    for n in range(15):
        early.line("stderr", f"err {n}")
    early.exited(ExitStatus(code=3))
    assert early.state == FAILED and early.exit == ExitStatus(code=3)
    assert "exited with status 3 before it was ready" in (early.reason or "")
    assert list(early.stderr) == [f"err {n}" for n in range(5, 15)]  # the last ten
    assert early.deadline() is None


def test_line_matches_stdout_only_and_times_out() -> None:
    state = Readiness(parse("line:listening on \\d+"), 5.0)
    state.spawned(10.0)
    state.line("stderr", "listening on 80")  # stderr is kept, never matched
    state.line("stdout", "listening on port")
    assert state.waiting and state.deadline() == 15.0
    state.line("stdout", "now listening on 8080 ok")  # searched, not matched from the start
    assert state.ready

    late = Readiness(parse("line:never"), 5.0)
    late.spawned(10.0)
    late.tick(14.9)
    assert late.waiting
    late.tick(15.0)
    assert late.state == FAILED and "not ready within 5 s" in (late.reason or "")
    late.line("stdout", "never")  # too late: failed is final
    assert late.state == FAILED


def test_port_probes_at_once_then_less_and_less_often() -> None:
    state = Readiness(parse("port:8080"), 30.0)
    state.spawned(0.0)
    assert state.wants_probe(0.0) and state.deadline() == 0.0
    now, gaps = 0.0, []
    for _ in range(8):
        state.probed(False, now)
        deadline = state.deadline()
        assert deadline is not None
        gaps.append(round(deadline - now, 6))
        assert not state.wants_probe(deadline - 1e-6)
        now = deadline
        assert state.wants_probe(now)
    assert gaps[0] == readiness.PROBE_FIRST
    assert gaps == sorted(gaps) and gaps[-1] == readiness.PROBE_MAX
    state.probed(True, now)
    assert state.ready and not state.wants_probe(now + 10)


def test_notify_takes_ready_and_keeps_the_status_text() -> None:
    state = Readiness(parse("notify"), 30.0)
    state.spawned(0.0)
    state.notified({"STATUS": "loading"})
    assert state.waiting and state.notice == "loading"
    state.notified({"READY": "1", "STATUS": "serving"})
    assert state.ready and state.notice == "serving"
    state.notified({"STATUS": "draining"})  # after ready too: 'status' shows it
    assert state.notice == "draining"

    other = Readiness(parse("uptime:1"), 30.0)  # another mode: READY=1 is no word
    other.spawned(0.0)
    other.notified({"READY": "1"})
    assert other.waiting


def test_the_watch_probes_on_its_clock_and_tells_each_change_once() -> None:
    now = [0.0]
    probes: list[int] = []
    answers = iter([False, False, True])
    told: list[str] = []

    def probe(port: int) -> bool:
        probes.append(port)
        return next(answers)

    watch = ReadyWatch(parse("port:9"), 30.0, lambda r: told.append(r.state),
                       clock=lambda: now[0], probe=probe)
    assert watch.deadline() is None
    watch.spawned(0.0)
    while not watch.ready:
        deadline = watch.deadline()
        assert deadline is not None
        now[0] = deadline
        watch.due()
    assert probes == [9, 9, 9] and told == [READY]
    watch.exited(ExitStatus(code=0))
    assert told == [READY]


def test_the_watch_tells_a_new_status_text_without_a_move() -> None:
    moves: list[str] = []
    texts: list[str | None] = []
    watch = ReadyWatch(parse("notify"), 30.0, lambda r: moves.append(r.state),
                       noticed=lambda r: texts.append(r.notice))
    watch.spawned(0.0)
    watch.notified({"STATUS": "warming up"})
    watch.notified({"STATUS": "warming up"})  # the same text: nothing to record
    watch.notified({"READY": "1", "STATUS": "first"})  # a move, told with its text
    watch.notified({"STATUS": "second"})
    assert moves == [READY] and texts == ["warming up", "second"]


# ----------------------------------------------------------------- each mode, real processes

def test_spawn_returns_at_the_spawn(started: Callable[..., immortal.Group]) -> None:
    group = started(TALKER, ready="spawn")
    status = group.status()
    assert status.running and status.ready


def test_uptime_returns_once_the_target_lived_that_long(
        started: Callable[..., immortal.Group]) -> None:
    began = time.monotonic()
    group = started(TALKER, ready="uptime:0.5")
    assert time.monotonic() - began >= 0.5
    status = group.status()
    assert status.ready and status.state == "running"
    assert json.loads((Path(status.directory or "") / "spec.json").read_text())["ready"] \
        == "uptime:0.5"


def test_line_returns_once_a_stdout_line_matches(
        started: Callable[..., immortal.Group], tmp_path: Path) -> None:
    target = script(tmp_path, "slow.py", "import sys, time\nprint('booting')\n"
                    "print('listening on 8080', file=sys.stderr)\ntime.sleep(0.4)\n"
                    "print('server listening on 8080')\ntime.sleep(3600)\n")
    began = time.monotonic()
    group = started(target, ready=r"line:listening on \d+$")
    assert time.monotonic() - began >= 0.4  # stderr's line did not count
    assert group.status().ready
    assert b"server listening on 8080" in b"".join(group.tail(5))


def test_port_returns_once_the_server_binds(started: Callable[..., immortal.Group]) -> None:
    port = free_port()
    began = time.monotonic()
    group = started(LATE_SERVER, [str(port), "0.5"], ready=f"port:{port}")
    assert time.monotonic() - began >= 0.5
    with socket.create_connection(("127.0.0.1", port), timeout=SHORT):
        pass
    assert group.status().ready


@pytest.mark.parametrize("strategy", ["daemon", "unattached", "development"])
def test_notify_returns_on_ready_and_status_shows_its_text(
        started: Callable[..., immortal.Group], strategy: str) -> None:
    began = time.monotonic()
    group = started(NOTIFIER, ["--delay", "0.3", "--status", "serving 3 clients"],
                    ready="notify", strategy=strategy)
    assert time.monotonic() - began >= 0.3
    status = group.status()
    assert status.ready and status.notify_status == "serving 3 clients"
    assert "notify   serving 3 clients" in str(status)
    sock = Path(status.directory or "") / "notify.sock"
    assert sock.is_socket() and (sock.stat().st_mode & 0o777) == 0o600
    group.stop()
    assert not sock.exists()


# A target that sends STATUS= texts on its own datagrams, each when the test lets it (a file
# named after the step and its instance): one before READY=1, READY=1 alone, one after.
STAGED = """\
import os, socket, sys, time
here, k = sys.argv[1], os.environ["IMMORTAL_INSTANCE"]
def notify(text):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(text.encode(), os.environ["NOTIFY_SOCKET"])
def allowed(step):
    deadline = time.monotonic() + 120
    while not os.path.exists(os.path.join(here, f"{step}.{k}")):
        if time.monotonic() > deadline:
            sys.exit(f"never allowed to {step}")
        time.sleep(0.01)
allowed("warm")
notify(f"STATUS=warming up {k}")
allowed("ready")
notify("READY=1")
allowed("serve")
notify(f"STATUS=serving {k}")
while True:
    time.sleep(3600)
"""


def notices(status: immortal.Status) -> list[str | None]:
    """Each instance's STATUS text as ``status`` shows it."""
    return [e.notify_status for e in status.instances] or [status.notify_status]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_status_text_sent_alone_is_shown_before_and_after_ready(
        tmp_path: Path, workers: int) -> None:
    """A datagram with only STATUS= is recorded when it comes, for each instance: nothing
    else rewrites the status meanwhile (READY=1 comes alone, later)."""
    outcome: list[object] = []

    def start() -> None:
        try:
            outcome.append(immortal.start(
                sys.executable, ["-c", STAGED, str(tmp_path)], name="staged",
                workers=workers, ready="notify", ready_timeout=LONG, stop_timeout=5.0))
        except Exception as exc:  # the test fails on it below
            outcome.append(exc)

    def status() -> immortal.Status | None:
        try:
            return immortal.attach("staged").status()
        except immortal.NotRunning:  # not yet
            return None

    def texts() -> list[str | None]:
        seen = status()
        return notices(seen) if seen is not None else []

    def allow(step: str, k: int) -> None:
        (tmp_path / f"{step}.{k}").touch()

    thread = threading.Thread(target=start)
    thread.start()
    try:
        wait_for(status, lambda s: s is not None and s.running and not s.ready and all(
            [e.pid for e in s.instances] or [s.pids.get("target")]), LONG,
            "every target spawned")
        for k in range(workers):
            allow("warm", k)
        wait_for(texts, lambda seen: seen == [f"warming up {k}" for k in range(workers)],
                 SHORT, "the texts sent before ready")
        for k in range(workers):
            allow("ready", k)
        thread.join(LONG)
        assert [type(each) for each in outcome] == [immortal.Group], outcome
        for k in range(workers):
            allow("serve", k)
            wait_for(texts, lambda seen: seen == [
                f"serving {j}" if j <= k else f"warming up {j}" for j in range(workers)],
                SHORT, f"instance {k}'s text sent after ready")
    finally:
        for step in ("warm", "ready", "serve"):  # a failed test's start ends at once
            for k in range(workers):
                allow(step, k)
        thread.join(LONG)
        for each in outcome:
            if isinstance(each, immortal.Group):
                each.stop(timeout=LONG)


def test_notify_from_a_descendant_counts(started: Callable[..., immortal.Group]) -> None:
    group = started(NOTIFIER, ["--from-child"], ready="notify")
    assert group.status().ready


def test_notify_from_a_stranger_is_ignored(home: Path) -> None:
    """A process that is not the target nor one of its descendants (this test, here)
    cannot make it ready."""
    before = set(descendants())
    sock = home / "quiet" / "notify.sock"
    sent: list[bool] = []

    def stranger() -> None:
        deadline = time.monotonic() + SHORT
        while time.monotonic() < deadline:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
                    client.sendto(b"READY=1\nSTATUS=fake", str(sock))
                sent.append(True)
                return
            except OSError:
                time.sleep(0.01)

    thread = threading.Thread(target=stranger)
    thread.start()
    try:
        with pytest.raises(immortal.StartError, match="not ready within 1.5 s"):
            immortal.start(NOTIFIER, ["--no-ready"], name="quiet", ready="notify",
                           ready_timeout=1.5, stop_timeout=5.0)
    finally:
        thread.join(SHORT)
    assert sent == [True]
    assert_nothing_left("quiet", before)


@pytest.mark.parametrize("ready", ["line:never printed", "notify", "port:{port}"])
def test_not_ready_in_time_fails_the_start_and_leaves_nothing(ready: str) -> None:
    before = set(descendants())
    began = time.monotonic()
    with pytest.raises(immortal.StartError) as caught:
        immortal.start(NOTIFIER, ["--no-ready"], name="late",
                       ready=ready.format(port=free_port()),
                       ready_timeout=1.0, stop_timeout=5.0)
    assert time.monotonic() - began < 1.0 + SHORT
    error = caught.value
    assert "not ready within 1 s" in str(error)
    assert error.status is not None and error.status.signal == 15  # stopped: TERM
    assert_nothing_left("late", before)
    group = immortal.start(NOTIFIER, name="late", ready="spawn")  # the name is free
    group.stop(timeout=LONG)


def test_a_death_before_ready_carries_its_status_and_stderr(tmp_path: Path) -> None:
    before = set(descendants())
    target = script(tmp_path, "dies.py", "import sys\nfor n in range(20):\n"
                    "    print(f'problem {n}', file=sys.stderr)\nsys.exit(3)\n")
    began = time.monotonic()
    with pytest.raises(immortal.StartError) as caught:
        immortal.start(target, name="dies", ready="uptime:5", ready_timeout=20.0,
                       stop_timeout=5.0)
    assert time.monotonic() - began < 5.0  # at its death, not at the time limit
    error = caught.value
    assert isinstance(error.status, immortal.ExitStatus) and error.status.code == 3
    assert error.stderr == [f"problem {n}" for n in range(10, 20)]
    assert "exited with status 3 before it was ready" in str(error)
    assert str(error).endswith("  problem 19")
    assert_nothing_left("dies", before)


def test_a_crash_after_ready_follows_the_restart_policy(
        started: Callable[..., immortal.Group]) -> None:
    group = started(TALKER, ready="uptime:0.3", policy={"min_uptime": 0.0})
    first = group.status().pids["target"]
    os.kill(first, 9)
    status = wait_for(group.status, lambda s: s.spawned == 2 and s.ready, SHORT,
                      "the restarted target, ready")
    assert status.pids["target"] != first and status.running


def test_the_default_is_an_uptime_of_one_second(no_default: None,
                                                started: Callable[..., immortal.Group],
                                                tmp_path: Path) -> None:
    began = time.monotonic()
    group = started(TALKER)
    assert time.monotonic() - began >= 1.0
    spec = json.loads((Path(group.status().directory or "") / "spec.json").read_text())
    assert spec["ready"] == "uptime:1" and spec["ready_timeout"] == 30.0

    dies = script(tmp_path, "quick.py", "raise SystemExit(2)\n")
    with pytest.raises(immortal.StartError, match="exited with status 2"):
        immortal.start(dies, name="quick", stop_timeout=5.0)


def test_immortal_ready_sets_the_default(monkeypatch: pytest.MonkeyPatch,
                                         started: Callable[..., immortal.Group]) -> None:
    monkeypatch.setenv("IMMORTAL_READY", "uptime:0.2")
    group = started(TALKER)
    spec = json.loads((Path(group.status().directory or "") / "spec.json").read_text())
    assert spec["ready"] == "uptime:0.2"
    monkeypatch.setenv("IMMORTAL_READY", "bogus")
    with pytest.raises(immortal.UnknownName, match="IMMORTAL_READY"):
        immortal.start(TALKER, name="other")
    group2 = started(TALKER, name="explicit", ready="spawn")  # an explicit mode wins
    assert group2.status().ready


@pytest.mark.parametrize("kwargs, words", [
    ({"ready": "port"}, "name the port"),
    ({"ready": "port", "listen": ["tcp://127.0.0.1:0"]}, "before the target accepts"),
    ({"ready": "port:8123", "listen": ["tcp://127.0.0.1:8123"]}, "before the target accepts"),
    ({"ready": "uptime:30"}, "can never be reached"),
    ({"ready": "spawn", "ready_timeout": 0}, "more than 0"),
    ({"ready": "spawn", "ready_timeout": "5"}, "'ready_timeout' must be a number"),
])
def test_bad_readiness_is_refused_before_anything_starts(
        home: Path, kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(immortal.InvalidSpec) as caught:
        immortal.start(TALKER, name="never", **kwargs)  # type: ignore[arg-type]
    assert words in str(caught.value)
    assert not (home / "never").exists()


# ----------------------------------------------------------------- the command line

def run_cli(*args: str, timeout: float = LONG,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "immortal", *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=timeout,
                          env=env or dict(os.environ))


@pytest.fixture
def stopped_after() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        run_cli("stop", name)


def test_a_syntax_error_makes_run_exit_1_with_the_traceback(
        tmp_path: Path, stopped_after: list[str]) -> None:
    before = set(descendants())
    target = script(tmp_path, "broken.py", "print('hi')\ndef (:\n    pass\n")
    env = {k: v for k, v in os.environ.items() if k != "IMMORTAL_READY"}  # the default
    stopped_after.append("broken")
    began = time.monotonic()
    result = run_cli("run", target, "--ready-timeout", "20", env=env)
    assert time.monotonic() - began < 10.0  # well under ready_timeout
    assert result.returncode == 1, result
    assert "exited with status 1 before it was ready" in result.stderr
    assert "SyntaxError: invalid syntax" in result.stderr
    assert "def (:" in result.stderr
    assert_nothing_left("broken", before)
    listed = run_cli("list", "--json")
    assert "broken" not in [g["name"] for g in json.loads(listed.stdout)]
    # What the failed start left (its lock file, its output) is no group: `status` says
    # so, as for a name never used, not that its supervisors were killed.
    shown = run_cli("status", "broken")
    assert "no group named 'broken'" in shown.stderr and "killed" not in shown.stdout, shown


def test_run_takes_ready_and_ready_timeout(stopped_after: list[str]) -> None:
    stopped_after.append("talker")
    result = run_cli("run", TALKER, "--ready", "line:^out 2$", "--ready-timeout", "5", "--",
                     "--out", "3")
    assert result.returncode == 0, result
    shown = run_cli("status", "talker")
    assert "ready    yes" in shown.stdout
    bad = run_cli("run", TALKER, "--name", "bad", "--ready", "uptime:9",
                  "--ready-timeout", "2")
    assert bad.returncode == 2
    assert "--ready 'uptime:9' can never be reached" in bad.stderr


@pytest.mark.parametrize("role", ["pump", "daemon", "both"])
def test_a_supervisor_killed_during_the_wait_fails_the_start(home: Path, role: str) -> None:
    """A pump killed before its target is ready ends the group (the daemon does not restart
    a pump that never answered); a daemon killed then makes its pump give the start up;
    both killed at once, the caller ends the target they could not (it was left running,
    unlisted)."""
    before = set(descendants())
    status_file = home / "waits" / "status.json"

    def kill() -> None:
        deadline = time.monotonic() + SHORT
        while time.monotonic() < deadline:
            try:
                pids = json.loads(status_file.read_text())["pids"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.01)
                continue
            if role == "both":
                kill_at_once(pids["daemon"], pids["pump"])
            else:
                os.kill(pids[role], 9)
            return

    thread = threading.Thread(target=kill)
    thread.start()
    began = time.monotonic()
    try:
        with pytest.raises(immortal.StartError) as failed:
            immortal.start(NOTIFIER, ["--no-ready"], name="waits", ready="notify",
                           ready_timeout=LONG, stop_timeout=5.0)
    finally:
        thread.join(SHORT)
    assert time.monotonic() - began < LONG
    assert_nothing_left("waits", before)
    assert not (home / "waits" / "notify.sock").exists()
    if role == "both":
        assert "without a message (killed?)" in str(failed.value)


def test_a_job_done_on_a_final_exit_code_before_ready_is_a_successful_start(
        tmp_path: Path, stopped_after: list[str]) -> None:
    """A job quicker than its readiness: its exit on one of ``final_exit_codes`` is its
    work done, not a failed start (the README's ``--final-exit-codes 0`` job)."""
    job = script(tmp_path, "job.py", "print('done')\n")
    group = immortal.start(job, [], name="quickjob", ready="uptime:5",
                           policy={"final_exit_codes": [0]}, stop_timeout=5.0)
    status = wait_for(group.status, lambda s: not s.running, what="the job to end")
    assert status.state == "stopped" and status.last_exit.code == 0
    stopped_after.append("clijob")
    result = run_cli("run", "-s", "development", "--final-exit-codes", "0", "--max-restarts",
                     "5", "--ready", "uptime:5", "-n", "clijob", job)
    assert result.returncode == 0, result
    assert "done" in result.stdout
    failed = run_cli("run", "-s", "development", "--ready", "uptime:5", "-n", "clijob", job)
    assert failed.returncode == 1 and "before it was ready" in failed.stderr


def test_a_stop_during_the_readiness_wait_waits_for_that_start(
        home: Path, tmp_path: Path, stopped_after: list[str]) -> None:
    """A stop while ``run`` waits for its target to be ready waits for that start, then
    stops the group: the start succeeds and the group ends as stopped (before, the stop
    went in first: the start failed, its target 'killed by SIGTERM before it was ready',
    and the group read as killed without a stop)."""
    stopped_after.append("waited")
    sleeper = script(tmp_path, "sleeper.py", "import time\nwhile True:\n    time.sleep(1)\n")
    with start_waiting(home, "waited", "--ready", "uptime:2", sleeper) as (run, _):
        stop = run_cli("stop", "waited")
        out, err = run.communicate(timeout=LONG)
    assert run.returncode == 0, err
    assert stop.returncode == 0, stop
    status = immortal.attach("waited").status()
    assert status.state == "stopped" and not status.stale, status


def test_a_restart_during_the_readiness_wait_restarts_and_the_start_goes_on(
        home: Path, stopped_after: list[str]) -> None:
    """``immortal restart`` while ``run`` waits for its target to be ready: the target is
    replaced and the start waits for the new one (before, the restart's TERM counted as a
    death before readiness: the start failed, and the group was gone)."""
    stopped_after.append("redone")
    with start_waiting(home, "redone", "--ready", "line:^got USR1", TALKER, "--", "--trap",
                       "USR1", "--out", "1") as (run, data):
        first = data["pids"]["target"]
        restart = run_cli("restart", "redone")
        assert restart.returncode == 0, restart.stderr
        second = immortal.attach("redone").status().pids["target"]
        assert second != first and run.poll() is None
        log = home / "redone" / "output.log"
        wait_for(log.read_text, lambda text: "out 1" in text.partition(f"spawn pid {second}")[2],
                 what="the new target's trap set")
        os.kill(second, signal.SIGUSR1)
        out, err = run.communicate(timeout=LONG)
    assert run.returncode == 0, err
    status = immortal.attach("redone").status()
    assert status.running and status.ready and status.pids["target"] == second, status


@pytest.mark.parametrize("command", [["restart"], ["restart", "--all-at-once"],
                                     ["scale", "1"]])
def test_a_restart_or_scale_during_the_readiness_wait_leaves_the_start_whole(
        home: Path, tmp_path: Path, stopped_after: list[str], command: list[str]) -> None:
    """A rolling restart or a scale while ``run`` waits for its targets to be ready waits
    for that start, as a stop does, then does its job; a restart of every instance at once
    replaces them, and the start waits for the new ones. Before, each stopped targets not
    yet ready: the start failed ('its target killed by SIGTERM before it was ready'), the
    command said the group had ended, and nothing was left running."""
    name = f"busy-{len(stopped_after)}-{command[-1].strip('-')}"
    stopped_after.append(name)
    sleeper = script(tmp_path, "sleeper.py", "import time\nwhile True:\n    time.sleep(1)\n")
    with start_waiting(home, name, "-w", "2", "--ready", "uptime:2", "--stop-timeout", "2",
                       sleeper) as (run, _):
        done = run_cli(command[0], name, *command[1:])
        out, err = run.communicate(timeout=LONG)
    assert run.returncode == 0, err
    assert done.returncode == 0, done
    assert immortal.attach(name).status().running


MANAGED = """\
import sys, immortal
with immortal.Manager() as manager:
    manager.start(sys.argv[1], name="first", ready="spawn", stop_timeout=5.0)
    manager.start(sys.argv[1], name="second", ready="uptime:25", stop_timeout=5.0)
"""


@pytest.mark.parametrize("how", ["cli", "manager"])
def test_a_sigterm_during_the_readiness_wait_leaves_nothing(
        home: Path, tmp_path: Path, how: str) -> None:
    """SIGTERM to the caller while it waits for readiness (``timeout 10 immortal run``, a
    service manager's stop, a Manager's program): the start is ended as Ctrl-C ends it,
    then the caller ends of the signal (a Manager stops its other groups first). Before,
    the group went on to become ready, unlisted by nobody."""
    before = set(descendants())
    sleeper = script(tmp_path, "sleeper.py", "import time\nwhile True:\n    time.sleep(1)\n")
    name = "second" if how == "manager" else "termed"
    if how == "cli":
        argv = ["-m", "immortal", "run", "-n", name, "--ready", "uptime:25", sleeper]
    else:
        argv = ["-c", MANAGED, sleeper]
    caller = subprocess.Popen([sys.executable, *argv], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        status_file = home / name / "status.json"
        wait_for(lambda: status_file.exists() and json.loads(status_file.read_text()),
                 lambda data: bool(data) and "target" in data.get("pids", {}), LONG,
                 what="the target spawned, not yet ready")
        caller.send_signal(signal.SIGTERM)
        caller.communicate(timeout=LONG)
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()
    assert caller.returncode == -signal.SIGTERM
    wait_for(lambda: set(descendants()) - before, lambda left: not left, LONG,
             what="nothing of the groups left")
    assert [s.name for s in immortal.groups() if s.running] == []


def test_a_failed_start_under_a_stopped_groups_name_keeps_that_group_listed(
        tmp_path: Path, started: Callable[..., immortal.Group]) -> None:
    """The stopped group's spec.json was put back, but not its status: it vanished from
    ``list``, and ``status`` said its supervisors were killed."""
    sleeper = script(tmp_path, "sleeper.py", "import time\nwhile True:\n    time.sleep(1)\n")
    crash = script(tmp_path, "crash.py", "import sys\nsys.exit(3)\n")
    started(sleeper, [], name="kept", ready="spawn").stop()
    with pytest.raises(immortal.StartError):
        immortal.start(crash, [], name="kept", ready="uptime:1", stop_timeout=5.0)
    listed = {s.name: s for s in immortal.groups()}
    assert "kept" in listed and listed["kept"].state == "stopped", listed.get("kept")
    assert not listed["kept"].stale
