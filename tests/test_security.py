"""Another local user must not steer what a group run by root (or by us) reads, signals,
imports or writes: state directories whose ancestors a stranger owns, forged state files,
and symlinks planted where a monitor writes.

The stranger is an unused uid: files are handed to it with chown, and its own actions run
as that uid through setpriv. Needs root (the suite runs as root); skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import immortal
from immortal.spec import Spec, Strategy
from immortal._linux import process_start_time

from conftest import SHORT, TALKER, wait_for

STRANGER = 4242  # a uid no account uses: the other local user

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root (to hand files to another uid) and setpriv (to act as it)")


def as_stranger(script: str) -> None:
    """Run a shell script as the stranger (its own uid and gid, no groups)."""
    subprocess.run(["setpriv", f"--reuid={STRANGER}", f"--regid={STRANGER}",
                    "--clear-groups", "sh", "-ec", script], check=True, timeout=SHORT)


def strangers(path: Path, mode: int = 0o755) -> Path:
    path.mkdir(mode=mode)
    os.chmod(path, mode)
    os.chown(path, STRANGER, STRANGER)
    return path


@pytest.fixture
def victim() -> subprocess.Popen[bytes]:
    """A process of ours that a forged status.json will name."""
    proc = subprocess.Popen(["sleep", "600"])
    yield proc
    proc.kill()
    proc.wait()


def forge_status(directory: Path, pid: int) -> Path:
    """A status.json that names ``pid`` (with its true start time: anyone can read it) as a
    running daemon."""
    path = directory / "status.json"
    path.write_text(json.dumps({"state": "running", "pids": {"daemon": pid},
                                "start_times": {"daemon": process_start_time(pid)}}))
    return path


# --------------------------------------------------------------- the state directory
def test_start_refuses_a_home_under_a_strangers_directory(home, monkeypatch, started):
    state = strangers(home / "app") / "state"  # ours, but in the app user's directory
    state.mkdir(mode=0o700)
    monkeypatch.setenv("IMMORTAL_HOME", str(state))
    with pytest.raises(immortal.StateDirError, match=f"owned by uid {STRANGER}"):
        started(TALKER, name="svc")
    assert not (state / "svc").exists()
    with pytest.raises(immortal.StateDirError, match=f"owned by uid {STRANGER}"):
        immortal.groups()


def test_a_stranger_who_swaps_the_home_cannot_make_stop_kill_a_pid(home, monkeypatch,
                                                                   started, victim):
    os.chmod(home, 0o755)  # the stranger may pass through the test's home
    app = home / "app"
    app.mkdir(mode=0o755)
    state = app / "state"
    monkeypatch.setenv("IMMORTAL_HOME", str(state))
    group = started(TALKER, name="svc")
    os.chown(app, STRANGER, STRANGER)  # the app user owns the directory that holds ours
    # The swap: our state moved aside, a forged one naming the victim in its place.
    as_stranger(f"mv {state} {app}/moved && mkdir -p {state}/svc")
    forged = forge_status(Path(f"{state}/svc"), victim.pid)
    os.chown(forged, STRANGER, STRANGER)
    try:
        with pytest.raises(immortal.StateDirError, match=f"owned by uid {STRANGER}"):
            immortal.attach("svc").stop(timeout=1.0)
        result = subprocess.run([sys.executable, "-m", "immortal", "stop", "svc"],
                                capture_output=True, text=True, timeout=SHORT)
        assert result.returncode != 0 and f"uid {STRANGER}" in result.stderr
        assert victim.poll() is None, "the victim named by the forged status was killed"
    finally:
        shutil.rmtree(state)
        os.rename(app / "moved", state)
        os.chown(app, 0, 0)
    assert group.status().running


def test_a_status_file_we_did_not_write_names_no_pid_to_signal(home, victim):
    directory = home / "svc"
    directory.mkdir(mode=0o700)
    os.chown(forge_status(directory, victim.pid), STRANGER, STRANGER)
    with pytest.raises(immortal.StateDirError, match=f"owned by uid {STRANGER}"):
        immortal.attach("svc").kill()
    assert victim.poll() is None


def test_a_status_file_others_may_write_is_not_believed(home, victim):
    directory = home / "svc"
    directory.mkdir(mode=0o700)
    os.chmod(forge_status(directory, victim.pid), 0o666)
    with pytest.raises(immortal.StateDirError, match="writable by group or others"):
        immortal.attach("svc").kill()
    assert victim.poll() is None


def test_a_role_never_runs_a_spec_it_did_not_write(home, tmp_path):
    """A daemon exec'd after its death reads spec.json again: a forged one would make root
    import and run what the stranger named."""
    marker = tmp_path / "ran"
    program = tmp_path / "evil.py"
    program.write_text(f"open({str(marker)!r}, 'w').close()\n")
    directory = home / "svc"
    directory.mkdir(mode=0o700)
    spec = Spec(name="svc", file=str(program), args=(), strategy=Strategy.UNATTACHED,
                monitors=(("file", {}),), env={}, cwd=str(tmp_path), directory=str(directory),
                sys_path=tuple(sys.path))
    (directory / "spec.json").write_text(json.dumps(spec.to_json()))
    os.chown(directory / "spec.json", STRANGER, STRANGER)
    args = {"role": "pump", "dir": str(directory), "why": "pump start", "detach": False,
            "fds": {}}
    try:
        result = subprocess.run([sys.executable, "-m", "immortal._role", json.dumps(args)],
                                capture_output=True, text=True, timeout=SHORT, cwd=directory)
    except subprocess.TimeoutExpired:
        result = None
    assert not marker.exists(), "the forged spec's program ran"
    assert result is not None and result.returncode == 1
    assert f"owned by uid {STRANGER}" in result.stderr


def test_a_lock_or_socket_of_a_stranger_is_refused(home, started):
    group = started(TALKER, name="svc")
    sock = group.directory / "control.sock"
    os.chown(sock, STRANGER, STRANGER)
    try:
        with pytest.raises(immortal.StateDirError, match=f"owned by uid {STRANGER}"):
            group.signal("USR1")
    finally:
        os.chown(sock, 0, 0)
    lock = home / "other" / "lock"
    lock.parent.mkdir(mode=0o700)
    lock.touch(mode=0o600)
    os.chown(lock, STRANGER, STRANGER)
    with pytest.raises(immortal.StateDirError, match=f"owned by uid {STRANGER}"):
        started(TALKER, name="other")


def test_a_sticky_shared_directory_is_fine_when_the_entry_is_ours(home, monkeypatch,
                                                                  started):
    os.chmod(home, 0o755)  # the stranger may pass through the test's home
    shared = home / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    monkeypatch.setenv("IMMORTAL_HOME", str(shared / "mine"))
    group = started(TALKER, name="svc")
    assert group.status().running
    group.stop(timeout=SHORT)
    theirs = shared / "theirs"
    as_stranger(f"mkdir -m 700 {theirs}")
    os.chmod(theirs, 0o755)  # readable by us; still theirs to rename
    monkeypatch.setenv("IMMORTAL_HOME", str(theirs / "state"))
    with pytest.raises(immortal.StateDirError, match=f"owned by uid {STRANGER}"):
        started(TALKER, name="svc")


# --------------------------------------------------------------- monitor outputs
@pytest.mark.parametrize("monitor", ["file", "jsonl"])
def test_an_output_in_a_strangers_directory_is_refused_in_the_caller(home, started,
                                                                     monitor):
    logs = strangers(home / "log-app")  # as /var/log/app, owned by the app user
    with pytest.raises(immortal.MonitorOptionsError, match=f"owned by uid {STRANGER}"):
        started(TALKER, monitor=monitor, options={"output": str(logs / "out.log")})


def test_an_output_that_is_a_symlink_is_refused_in_the_caller(home, started, tmp_path):
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    link = home / "out.log"
    link.symlink_to(target)
    with pytest.raises(immortal.MonitorOptionsError, match="symlink"):
        started(TALKER, options={"output": str(link)})
    assert target.read_bytes() == b""


@pytest.mark.parametrize("monitor", ["file", "jsonl"])
def test_a_symlink_planted_at_a_rotation_gets_no_line(home, started, tmp_path, monitor):
    """A shared sticky log directory (as /tmp): our output is moved away by a logrotate,
    the stranger plants a link to a file of root's in its place before we reopen."""
    os.chmod(home, 0o755)
    logs = home / "logs"
    logs.mkdir()
    os.chmod(logs, 0o1777)
    precious = tmp_path / "precious"
    precious.write_bytes(b"root's\n")
    output = logs / "out.log"
    group = started(TALKER, ["--trap", "USR1"], monitor=monitor,
                    options={"output": str(output)})
    wait_for(output.read_bytes, lambda data: b"ready" in data, what="the ready line")
    os.rename(output, logs / "out.log.1")
    as_stranger(f"ln -s {precious} {output}")
    group.reopen()
    group.signal("USR1")
    pump_log = group.directory / "pump.log"
    wait_for(lambda: pump_log.read_bytes() if pump_log.exists() else b"",
             lambda data: b"refusing" in data, what="the refusal in pump.log")
    assert precious.read_bytes() == b"root's\n"
    # Once the path is ours again, writing resumes and says how many lines were lost.
    os.unlink(output)
    group.signal("USR1")
    wait_for(lambda: output.read_bytes() if output.exists() else b"",
             lambda data: b"dropped" in data, what="the resumed record")
    assert precious.read_bytes() == b"root's\n"


def _dict_config(path: Path, log: Path) -> Path:
    path.write_text(json.dumps({
        "version": 1,
        "formatters": {"plain": {"format": "%(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(log),
                              "formatter": "plain"}},
        "root": {"level": "DEBUG", "handlers": ["file"]},
    }))
    return path


def test_a_logging_config_a_stranger_wrote_is_refused_in_the_caller(home, started,
                                                                    tmp_path):
    """A configuration names classes to import: one a stranger may write is code they run
    as root."""
    config = _dict_config(tmp_path / "logging.json", tmp_path / "app.log")
    os.chown(config, STRANGER, STRANGER)
    with pytest.raises(immortal.MonitorOptionsError, match=f"owned by uid {STRANGER}"):
        started(TALKER, monitor="logging", options={"config": str(config)})
    os.chown(config, 0, 0)
    os.chmod(config, 0o666)
    with pytest.raises(immortal.MonitorOptionsError, match="writable by group or others"):
        started(TALKER, monitor="logging", options={"config": str(config)})


def test_a_logging_handler_file_in_a_strangers_directory_is_refused(home, started,
                                                                    tmp_path):
    logs = strangers(home / "log-app")
    config = _dict_config(tmp_path / "logging.json", logs / "app.log")
    with pytest.raises(immortal.MonitorOptionsError, match=f"owned by uid {STRANGER}"):
        started(TALKER, monitor="logging", options={"config": str(config)})
    assert not (logs / "app.log").exists()


def test_a_logging_handler_keeps_its_file_when_a_symlink_is_planted(home, started,
                                                                    tmp_path):
    os.chmod(home, 0o755)
    logs = home / "logs"
    logs.mkdir()
    os.chmod(logs, 0o1777)
    precious = tmp_path / "precious"
    precious.write_bytes(b"root's\n")
    log = logs / "app.log"
    config = _dict_config(tmp_path / "logging.json", log)
    group = started(TALKER, ["--trap", "USR1"], monitor="logging",
                    options={"config": str(config)})
    wait_for(log.read_bytes, lambda data: b"ready" in data, what="the ready record")
    os.rename(log, logs / "app.log.1")
    as_stranger(f"ln -s {precious} {log}")
    group.reopen()
    group.signal("USR1")
    old = logs / "app.log.1"
    wait_for(old.read_bytes, lambda data: b"got USR1" in data, what="the line, in the old file")
    assert b"not reopened: refusing" in old.read_bytes()
    assert precious.read_bytes() == b"root's\n"


def test_logs_never_prints_through_a_planted_symlink(home, started, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"root's secret\n")
    output = home / "out.log"
    group = started(TALKER, monitor="jsonl", options={"output": str(output)}, name="svc")
    wait_for(output.read_bytes, lambda data: b"ready" in data, what="the ready line")
    group.stop(timeout=SHORT)
    os.unlink(output)
    output.symlink_to(secret)
    result = subprocess.run([sys.executable, "-m", "immortal", "logs", "svc"],
                            capture_output=True, text=True, timeout=SHORT)
    assert "secret" not in result.stdout
    assert result.returncode != 0 and "symlink" in result.stderr


# --------------------------------------------------------------- the walk itself
def test_the_walk_follows_symlinks_on_the_way(tmp_path):
    from immortal.safety import check_path

    theirs = strangers(tmp_path / "theirs")
    (tmp_path / "link").symlink_to("theirs")  # a link of ours, to a directory of theirs
    with pytest.raises(immortal.StateDirError, match=f"owned by uid {STRANGER}"):
        check_path(tmp_path / "link" / "state")
    (tmp_path / "mine").mkdir()
    (tmp_path / "up").symlink_to("mine/../theirs")
    with pytest.raises(immortal.StateDirError, match=f"owned by uid {STRANGER}"):
        check_path(tmp_path / "up" / "x")
    check_path(tmp_path / "mine" / ".." / "mine" / "not" / "there" / "yet")
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(immortal.StateDirError, match="symbolic links"):
        check_path(tmp_path / "loop" / "x")
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)  # writable by all, not sticky
    with pytest.raises(immortal.StateDirError, match="writable by group or others"):
        check_path(open_dir / "x")
    assert theirs.exists()
