"""user= and group=: the supervisors bind as root and stay root, each target runs as the
user (exactly its supplementary groups, then its gid, then its uid), and a caller that is
not root, or names nobody who exists, is refused before anything detaches.

Most tests need root (the suite may run as any user): they skip, saying so, otherwise.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import immortal
from conftest import LONG, PROGRAMS, SHORT, TALKER, proc_state, wait_for
from immortal import privileges

pytestmark = pytest.mark.timeout(120)

LISTENER = str(PROGRAMS / "listener.py")
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="runs targets as another user: needs root")
NOBODY = pwd.getpwnam("nobody") if "nobody" in {p.pw_name for p in pwd.getpwall()} else None


def _become_nobody() -> None:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


def _python_for_all() -> str | None:
    """A Python that uid 65534 may run (ours may sit in root's home): the targets that
    run as nobody are run with it."""
    if not ROOT:
        return sys.executable
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        try:
            subprocess.run([candidate, "-c", "pass"], check=True, timeout=30, cwd="/",
                           preexec_fn=_become_nobody, capture_output=True)
        except (OSError, subprocess.SubprocessError):
            continue
        return candidate
    return None


PYTHON = _python_for_all()
needs_python = pytest.mark.skipif(PYTHON is None, reason="no Python that uid 65534 may run")


def proc_ids(pid: int) -> dict[str, list[int]]:
    """Uid, Gid and Groups of ``pid`` as /proc/PID/status shows them."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            found[key] = [int(v) for v in value.split()]
    return found


def environ(pid: int) -> dict[str, str]:
    data = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in data.decode().split("\0") if "=" in item)


def free_low_port() -> int:
    """A TCP port below 1024 that nobody listens on (root binds it; we are root)."""
    for port in range(900, 1024):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port below 1024 on 127.0.0.1")


@pytest.fixture
def member() -> Iterator[tuple[str, str, list[str]]]:
    """A user made for the test: (name, its primary group, its two supplementary groups);
    removed afterwards (request it before ``started``: userdel refuses a user whose
    processes still run)."""
    if not ROOT or not shutil.which("useradd") or not shutil.which("groupadd"):
        pytest.skip("makes a user: needs root and useradd/groupadd")
    tag = uuid.uuid4().hex[:6]
    user, groups = f"imt{tag}", [f"imt{tag}a", f"imt{tag}b", f"imt{tag}c"]
    made: list[list[str]] = []
    try:
        for name in groups:
            subprocess.run(["groupadd", name], check=True, timeout=30)
            made.append(["groupdel", name])
        subprocess.run(["useradd", "-M", "-N", "-d", "/nonexistent", "-s", "/usr/sbin/nologin",
                        "-g", groups[0], "-G", ",".join(groups[1:]), user],
                       check=True, timeout=30)
        made.insert(0, ["userdel", user])
        yield user, groups[0], groups[1:]
    finally:
        failed = [(command, result.stderr) for command, result in (
            (command, subprocess.run(command, timeout=30, capture_output=True, text=True))
            for command in made) if result.returncode != 0]
        assert not failed, f"the test's user and groups were not all removed: {failed}"


# --- the caller's checks -----------------------------------------------------------------
def test_a_caller_that_is_not_root_is_refused(home: Path) -> None:
    """Run as uid 65534 (a subprocess, when the suite is root): one clear InvalidSpec,
    before anything is created."""
    code = ("import immortal\n"
            "try:\n"
            "    immortal.start('/bin/sleep', ['60'], user='root', name='notroot')\n"
            "except immortal.InvalidSpec as exc:\n"
            "    print('refused:', exc)\n")
    if ROOT:
        if PYTHON is None:
            pytest.skip("no Python that uid 65534 may run")
        # Our package and its dependencies, for a Python that may not be ours.
        import daemon
        import pluggy
        path = {str(Path(module.__file__ or "").parent.parent)
                for module in (immortal, pluggy, daemon)}
        result = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True,
                                timeout=60, cwd="/", preexec_fn=_become_nobody,
                                env={**os.environ, "HOME": "/",
                                     "PYTHONPATH": os.pathsep.join(sorted(path))})
        assert result.returncode == 0, result.stderr
        text = result.stdout
    else:
        with pytest.raises(immortal.InvalidSpec) as caught:
            immortal.start("/bin/sleep", ["60"], user="root", name="notroot")
        text = f"refused: {caught.value}"
    assert text.startswith("refused: 'user' needs root"), text
    assert not (home / "notroot").exists()


def test_group_without_user_is_refused(home: Path) -> None:
    with pytest.raises(immortal.InvalidSpec, match="'group' needs 'user'"):
        immortal.start(TALKER, group="nogroup")


@needs_root
@pytest.mark.parametrize("user, group, fragment", [
    ("no-such-user-xq", None, "'user' 'no-such-user-xq' does not exist"),
    ("nobody", "no-such-group-xq", "'group' 'no-such-group-xq' does not exist"),
    (4294967295, None, "nor a uid from 0 to 4294967294"),
    ("nobody", 4294967295, "nor a gid from 0 to 4294967294"),
    ("", None, "'user' must be a name or a number"),
    (["nobody"], None, "'user' must be a name or a number"),
])
def test_a_user_or_group_that_does_not_exist_is_refused(home: Path, user: object,
                                                        group: object, fragment: str) -> None:
    with pytest.raises(immortal.InvalidSpec) as caught:
        immortal.start(TALKER, user=user, group=group, name="nouser")
    assert fragment in str(caught.value)
    assert not (home / "nouser").exists()


@needs_root
def test_notify_readiness_with_a_user_is_refused(home: Path) -> None:
    with pytest.raises(immortal.InvalidSpec, match="'notify' does not work with 'user'"):
        immortal.start(TALKER, user="nobody", ready="notify")


@needs_root
def test_the_cli_names_its_options(home: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "immortal", "run", "--user", "no-such-xq",
                             TALKER], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "immortal: error: --user 'no-such-xq' does not exist" in result.stderr


# --- the target as the user ----------------------------------------------------------------
@needs_root
@needs_python
@pytest.mark.skipif(NOBODY is None, reason="no user 'nobody' on this system")
def test_a_server_on_a_low_port_runs_as_nobody(started, home: Path) -> None:
    """The socket is bound by the caller as root (a port below 1024); the server runs as
    nobody, with nobody's groups only, and answers; the supervisors and the group's files
    stay root's."""
    assert NOBODY is not None
    port = free_low_port()
    group = started(LISTENER, listen=[f"tcp://127.0.0.1:{port}"], user="nobody", cwd="/",
                    name="low", ready="line:^serving", exec=PYTHON)
    target = group.pids["target"]
    ids = proc_ids(target)
    gid = NOBODY.pw_gid
    assert ids["Uid"] == [NOBODY.pw_uid] * 4
    assert ids["Gid"] == [gid] * 4
    assert sorted(ids["Groups"]) == sorted(set(os.getgrouplist("nobody", gid)))
    env = environ(target)
    assert (env["HOME"], env["USER"], env["LOGNAME"]) == (NOBODY.pw_dir, "nobody", "nobody")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=SHORT) as answer:
        seen = json.loads(answer.read())
    assert seen["pid"] == target and seen["fd"] == 3
    for role in ("daemon", "pump"):
        assert proc_ids(group.pids[role])["Uid"] == [0] * 4
    for name in ("status.json", "spec.json", "lock", "control.sock", "output.log"):
        assert (home / "low" / name).stat().st_uid == 0, name
    assert "user     nobody" in _status_text("low")
    # Restarted as the same user.
    group.restart(LONG)
    again = group.pids["target"]
    assert again != target and proc_ids(again)["Uid"] == [NOBODY.pw_uid] * 4


def _status_text(name: str) -> str:
    result = subprocess.run([sys.executable, "-m", "immortal", "status", name],
                            capture_output=True, text=True, timeout=60)
    return result.stdout


@needs_root
@needs_python
def test_the_target_gets_exactly_its_users_groups(member, started) -> None:
    """A user with two supplementary groups: the target has those and its primary group,
    no more (root's are gone); group= makes another gid the primary one."""
    user, primary, extra = member
    wanted = {grp.getgrnam(name).gr_gid for name in [primary, *extra]}
    group = started(TALKER, user=user, cwd="/", name="member", exec=PYTHON)
    ids = proc_ids(group.pids["target"])
    assert set(ids["Groups"]) == wanted and len(ids["Groups"]) == len(wanted)
    assert ids["Gid"] == [grp.getgrnam(primary).gr_gid] * 4
    assert ids["Uid"] == [pwd.getpwnam(user).pw_uid] * 4
    group.stop(LONG)
    other = started(TALKER, user=user, group=extra[0], cwd="/", name="member2", exec=PYTHON)
    ids = proc_ids(other.pids["target"])
    gid = grp.getgrnam(extra[0]).gr_gid
    assert ids["Gid"] == [gid] * 4
    assert sorted(ids["Groups"]) == sorted(set(os.getgrouplist(user, gid)))


@needs_root
@needs_python
@pytest.mark.parametrize("group, gid", [(None, None), ("0", 0)])
def test_a_uid_with_no_entry_runs_as_that_number(started, home: Path, group, gid) -> None:
    """As a container runs an arbitrary uid: that uid, the gid asked or else the same
    number, no other group (root's are gone), HOME /, and USER the number, not root."""
    uid = next(n for n in range(99999, 199999) if _no_user(n))
    target = started(TALKER, user=uid, group=group, cwd="/", name="bare",
                     exec=PYTHON).pids["target"]
    ids = proc_ids(target)
    wanted = uid if gid is None else gid
    assert ids["Uid"] == [uid] * 4 and ids["Gid"] == [wanted] * 4
    assert ids["Groups"] == [wanted]
    env = environ(target)
    assert (env["HOME"], env["USER"], env["LOGNAME"]) == ("/", str(uid), str(uid))
    assert f"user     {uid}" in _status_text("bare")


def _no_user(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return True
    return False


@needs_root
@needs_python
def test_the_output_of_a_target_running_as_nobody_reaches_the_monitor(started, home: Path):
    started(TALKER, user="nobody", cwd="/", name="quiet", exec=PYTHON)
    log = home / "quiet" / "output.log"
    wait_for(lambda: log.read_text() if log.exists() else "", lambda text: "ready" in text,
             what="the target's line in output.log")


def test_resolve_looks_the_user_up_at_each_spawn() -> None:
    me = pwd.getpwuid(os.getuid())
    drop = privileges.resolve(me.pw_name, None)
    assert (drop.uid, drop.gid, drop.home) == (me.pw_uid, me.pw_gid, me.pw_dir)
    assert set(drop.groups) == set(os.getgrouplist(me.pw_name, me.pw_gid))
    with pytest.raises(OSError, match="no longer exists"):
        privileges.resolve("no-such-user-xq", None)


@needs_root
@needs_python
@pytest.mark.parametrize("strategy, workers", [("daemon", 1), ("unattached", 1),
                                               ("daemon", 2)])
def test_a_restart_after_the_user_was_removed_is_refused_at_once(
        started, strategy: str, workers: int) -> None:
    """The new target could not be spawned: the restart fails at once, naming the user,
    and the running targets are left alone (not stopped for a spawn that fails)."""
    if not shutil.which("useradd"):
        pytest.skip("makes a user: needs useradd")
    user = f"imt{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", user],
                   check=True, timeout=30)
    try:
        group = started(TALKER, user=user, cwd="/", name="gone", exec=PYTHON,
                        strategy=strategy, workers=workers)
        before = sorted(entry.pid for entry in group.status().instances) or group.pids["target"]
    finally:  # -f: its targets still run
        subprocess.run(["userdel", "-f", user], check=True, timeout=30, capture_output=True)
    with pytest.raises(immortal.ImmortalError, match=f"'user' '{user}' no longer exists"):
        group.restart()
    status = group.status()
    assert status.state == "running", status
    assert (sorted(entry.pid for entry in status.instances) or status.pids["target"]) == before


@pytest.fixture
def removed_user() -> Iterator[str]:
    """A user made for the test; the test removes it (``userdel``) while its group runs."""
    if not shutil.which("useradd"):
        pytest.skip("makes a user: needs useradd")
    user = f"imt{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", user],
                   check=True, timeout=30)
    yield user
    subprocess.run(["userdel", "-f", user], timeout=30, capture_output=True)


@needs_root
@needs_python
def test_a_watch_restart_after_the_user_was_removed_leaves_the_target(
        started, removed_user: str, tmp_path: Path) -> None:
    """A restart the pump decides itself for a changed watched file is refused as an
    operator's is: said in pump.log, the target left running."""
    watched = tmp_path / "app.cfg"
    watched.write_text("1")
    group = started(TALKER, user=removed_user, cwd="/", name="gone", exec=PYTHON,
                    watch=[str(watched)], watch_delay=0.2)
    target = group.pids["target"]
    subprocess.run(["userdel", "-f", removed_user], check=True, timeout=30,
                   capture_output=True)
    watched.write_text("2")
    log = group.directory / "pump.log"
    wait_for(lambda: log.read_text() if log.exists() else "",
             lambda text: f"'user' '{removed_user}' no longer exists" in text,
             what="the refused restart in pump.log")
    status = group.status()
    assert status.state == "running" and status.pids["target"] == target, status
    assert status.restarts == 0, status


@needs_root
@needs_python
def test_the_memory_limit_still_ends_a_target_whose_user_was_removed(
        started, removed_user: str) -> None:
    """The memory limit is a cap, not a refresh: a target over it is ended even when no
    successor can be spawned (its user removed); the spawn then fails and is retried with
    backoff, never run as root."""
    group = started(TALKER, user=removed_user, cwd="/", name="gone", exec=PYTHON,
                    memory_limit="1M", memory_window=0.3)
    target = group.pids["target"]
    subprocess.run(["userdel", "-f", removed_user], check=True, timeout=30,
                   capture_output=True)
    log = group.directory / "pump.log"
    wait_for(lambda: log.read_text() if log.exists() else "",
             lambda text: f"the user '{removed_user}' no longer exists" in text,
             what="the failed spawn in pump.log")
    assert "over the limit of 1 MiB" in log.read_text()
    wait_for(lambda: proc_state(target), lambda state: state in (None, "Z"),
             what="the over-limit target ended")


@needs_root
def test_a_program_the_user_may_not_reach_says_so_and_the_way_on(home: Path, tmp_path) -> None:
    """A program in a directory only root may enter (a venv in root's home): the start
    fails saying the user may not run it, and how to give one it may."""
    hidden = tmp_path / "hidden"
    hidden.mkdir(mode=0o700)
    program = hidden / "prog.sh"
    program.write_text("#!/bin/sh\nexec sleep 60\n")
    program.chmod(0o755)
    with pytest.raises(immortal.StartError) as caught:
        immortal.start(str(program), user="nobody", ready="spawn", name="unreachable")
    assert "the target runs as 'nobody', who may not run it" in str(caught.value)
    assert "--exec" in str(caught.value)
