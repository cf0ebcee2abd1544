"""Shared fixtures: a private immortal home per test, and no process left behind.

The pytest process makes itself a child subreaper, so every detached daemon and every
orphan comes back to it: that is how the suite reaps them, and how it finds the ones a
test left running (it kills them, and fails the test that left them).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import immortal
from immortal._linux import children, set_subreaper

HERE = Path(__file__).resolve().parent
PROGRAMS = HERE / "programs"
TALKER = str(PROGRAMS / "talker.py")
SHORT = 10.0  # seconds: what "soon" means on a loaded 2-core machine
LONG = 30.0

SUBREAPER = set_subreaper()

# start() and 'immortal run' return once the target is ready, by default once it has lived
# a second (docs/workers.md): the suite's tests, written for a start that returns at the
# spawn, keep their speed with the operator's knob. The tests of readiness (test_ready.py)
# name their mode, or clear the variable.
os.environ.setdefault("IMMORTAL_READY", "spawn")

# Tests press Ctrl-C on the commands they start (SIGINT), which inherit our dispositions: a
# suite started in the background of a non-interactive shell ignores SIGINT and SIGQUIT (as
# POSIX shells start asynchronous commands), and its commands would then ignore them too.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGQUIT) == signal.SIG_IGN:
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def children_of(pid: int) -> list[int]:
    """The children of ``pid`` as the kernel lists them (zombies included)."""
    return children(pid)


def without_holder(pids: list[int]) -> list[int]:
    """``pids`` but a group's pipe holder (``immortal/holder.py``), a child of its daemon
    beside the pump, which holds the targets' pipes and runs nothing."""
    def holder(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                return handle.read().startswith(b"immortal: holder ")
        except OSError:
            return False
    return [pid for pid in pids if not holder(pid)]


def descendants(root: int | None = None) -> list[int]:
    """Every living descendant of ``root`` (default: this process), zombies excluded."""
    found: list[int] = []
    todo = [root or os.getpid()]
    while todo:
        for kid in children_of(todo.pop()):
            todo.append(kid)
            if proc_state(kid) not in (None, "Z"):
                found.append(kid)
    return found


def proc_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].split()[0].decode()


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return "?"


def imported_after(code: str, watched: set[str]) -> set[str]:
    """Which of the ``watched`` modules a fresh interpreter has imported after ``code``."""
    probe = f"{code}\nimport sys\nprint(' '.join(sorted({watched!r} & set(sys.modules))))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def reap_zombies() -> None:
    """Reap the zombie children that came to us as subreaper (not subprocess's own)."""
    for kid in children_of(os.getpid()):
        if proc_state(kid) == "Z":
            try:
                os.waitpid(kid, os.WNOHANG)
            except ChildProcessError:
                pass


def kill_leftovers(before: set[int]) -> list[str]:
    left = [pid for pid in descendants() if pid not in before]
    described = [f"{pid}: {cmdline(pid)}" for pid in left]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + SHORT
    while left and time.monotonic() < deadline:
        reap_zombies()
        left = [pid for pid in left if proc_state(pid) not in (None, "Z")]
        time.sleep(0.01)
    reap_zombies()
    return described


_leaks: list[str] = []


@pytest.fixture(autouse=True)
def no_leftovers(request: pytest.FixtureRequest) -> Iterator[None]:
    before = set(descendants())
    yield
    leaked = kill_leftovers(before)
    if leaked:
        _leaks.extend(f"{request.node.nodeid}: {line}" for line in leaked)
        pytest.fail("processes outlived the test (killed now):\n" + "\n".join(leaked),
                    pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def nothing_outlives_the_suite() -> Iterator[None]:
    before = set(descendants())
    yield
    leaked = kill_leftovers(before)
    if leaked or _leaks:
        pytest.fail("processes started by the suite outlived it:\n"
                    + "\n".join([*_leaks, *leaked]), pytrace=False)


@pytest.fixture(autouse=True)
def home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private IMMORTAL_HOME, short enough for unix socket paths."""
    path = Path(tempfile.mkdtemp(prefix="imh-", dir="/tmp"))
    monkeypatch.setenv("IMMORTAL_HOME", str(path))
    yield path
    if not os.environ.get("IMMORTAL_KEEP_HOME"):  # kept: to read the role logs by hand
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def started() -> Iterator[Callable[..., immortal.Group]]:
    """``started(file, args, **kw)``: immortal.start, with a stop at teardown."""
    groups: list[immortal.Group] = []

    def start(*args: Any, **kwargs: Any) -> immortal.Group:
        kwargs.setdefault("stop_timeout", 5.0)
        group = immortal.start(*args, **kwargs)
        groups.append(group)
        return group

    yield start
    for group in groups:
        group.stop(timeout=LONG)


@pytest.fixture(scope="session")
def recorder_installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Install the third-party recorder monitor (tests/recorder_dist) with pip."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--no-index", "--target", str(target),
         str(HERE / "recorder_dist")],
        check=True, timeout=300,
    )
    return target


@pytest.fixture
def recorder(recorder_installed: Path, monkeypatch: pytest.MonkeyPatch,
             tmp_path: Path) -> "Recording":
    monkeypatch.syspath_prepend(str(recorder_installed))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(recorder_installed), *filter(None, [os.environ.get("PYTHONPATH")])]))
    import importlib

    importlib.invalidate_caches()
    return Recording(tmp_path / "events.jsonl")


class Recording:
    """The events the recorder monitor wrote, read back with deadlines."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def options(self) -> dict[str, Any]:
        return {"path": str(self.path)}

    def events(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.endswith("}")]

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool],
                 timeout: float = SHORT) -> list[dict[str, Any]]:
        return wait_for(self.events, predicate, timeout,
                        "the recorder's events")


def kill_at_once(*pids: int) -> None:
    """SIGKILL several processes of a group as if at one instant: each is stopped first, so
    that none acts on another's death in between (a pump whose daemon dies becomes the
    daemon and forks a new pump: the group would live on)."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


def wait_for(get: Callable[[], Any], predicate: Callable[[Any], bool],
             timeout: float = SHORT, what: str = "the condition") -> Any:
    """Poll ``get()`` until ``predicate`` holds; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    value = get()
    while not predicate(value):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}; last seen: "
                        f"{value!r}", pytrace=False)
        time.sleep(0.01)
        value = get()
    return value


@pytest.fixture
def pids_cgroup():
    """A pids cgroup of our own (cgroup v1 'pids' hierarchy), removed afterwards."""
    base = Path("/sys/fs/cgroup/pids")
    path = base / f"immortal-test-{os.getpid()}"
    try:
        path.mkdir()
    except OSError as exc:
        pytest.skip(f"no writable pids cgroup here ({exc})")
    try:
        if not (path / "pids.max").exists():
            pytest.skip("the cgroup has no pids controller")
        yield path
    finally:
        def empty():
            for pid in (path / "cgroup.procs").read_text().split():
                try:
                    (base / "cgroup.procs").write_text(pid)
                except OSError:
                    pass  # gone meanwhile
            try:
                path.rmdir()
            except OSError:
                return False
            return True
        wait_for(empty, bool, what="the test cgroup to be removed")
