"""watch=, ignore=, watch_delay: a change of a watched file restarts the program (as a
SIGHUP to the group would), once the files have been quiet watch_delay seconds; an idle
watched group costs no wake-up."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import immortal
from conftest import LONG, SHORT, wait_for
from immortal import filewatch
from immortal.filewatch import FileWatch, Ignore, pattern, translate

pytestmark = pytest.mark.timeout(120)

QUIET = ["-c", "import time\nprint('up', flush=True)\ntime.sleep(3600)\n"]


def switches(pid: int) -> int:
    """How many times every thread of ``pid`` has gone to sleep."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/status") as handle:
            for line in handle:
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- the pure parts ------------------------------------------------------------------------
@pytest.mark.parametrize("glob, path, matched", [
    ("/a/**/b/*.py", "/a/b/x.py", True),
    ("/a/**/b/*.py", "/a/q/w/b/x.py", True),
    ("/a/**/b/*.py", "/a/b/c/x.py", False),
    ("/a/*.py", "/a/x.py", True),
    ("/a/*.py", "/a/b/x.py", False),
    ("/a/**", "/a/b/c", True),
    ("/a/?.cfg", "/a/x.cfg", True),
    ("/a/?.cfg", "/a/xy.cfg", False),
    ("/a/[!x]y", "/a/zy", True),
    ("/a/[!x]y", "/a/xy", False),
    ("/a/[ab].txt", "/a/b.txt", True),
    ("/a/x+y(1).txt", "/a/x+y(1).txt", True),
])
def test_globs(glob: str, path: str, matched: bool) -> None:
    assert bool(translate(glob).match(path)) is matched


def test_what_is_watched_for_a_directory_a_file_and_globs(tmp_path: Path) -> None:
    (tmp_path / "f.toml").write_text("x")
    assert pattern(str(tmp_path)) == filewatch.Pattern(str(tmp_path), True, None)
    one = pattern(str(tmp_path / "f.toml"))
    assert (one.root, one.recursive) == (str(tmp_path), False)
    assert one.matches(str(tmp_path / "f.toml")) and not one.matches(str(tmp_path / "g"))
    flat = pattern(f"{tmp_path}/*.py")
    assert (flat.root, flat.recursive) == (str(tmp_path), False)
    deep = pattern(f"{tmp_path}/src/**/*.py")
    assert (deep.root, deep.recursive) == (f"{tmp_path}/src", True)


def test_ignore_by_name_below_the_watched_directory_and_by_path() -> None:
    ignore = Ignore.build(["*.log", "build/", "/w/gen"])
    assert ignore.ignored("/w/a/__pycache__/m.pyc", "/w")
    assert ignore.ignored("/w/x.log", "/w") and ignore.ignored("/w/build/out.js", "/w")
    assert ignore.ignored("/w/gen/deep/m.py", "/w")
    assert not ignore.ignored("/w/m.py", "/w")
    # Only below the watched directory: a watched tree inside '.git' is still watched.
    assert not ignore.ignored("/r/.git/hooks/pre-commit", "/r/.git/hooks")


def test_the_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    paths, globs, delay = filewatch.check(["src", "src/**/*.py"], ["*.log", "out/x"], 0.2,
                                          str(tmp_path))
    assert paths == (f"{tmp_path}/src", f"{tmp_path}/src/**/*.py")
    assert globs == ("*.log", f"{tmp_path}/out/x") and delay == 0.2
    assert filewatch.check(None, None, None, "/")[2] == filewatch.DEFAULT_DELAY


@pytest.mark.parametrize("kwargs, error, fragment", [
    ({"watch": "src"}, immortal.InvalidType, "'watch' must be a list of str"),
    ({"watch": ["nothere.py"]}, immortal.TargetNotFound, "nothere.py' does not exist"),
    ({"watch": ["nowhere/**/*.py"]}, immortal.TargetNotFound, "nowhere' does not exist"),
    ({"watch": [""]}, immortal.InvalidSpec, "'watch[0]' must be a path or a glob"),
    ({"watch": [3]}, immortal.InvalidType, "'watch[0]' must be a str"),
    ({"ignore": ["*.log"]}, immortal.InvalidSpec, "'ignore' needs 'watch'"),
    ({"watch_delay": 1}, immortal.InvalidSpec, "'watch_delay' needs 'watch'"),
    ({"watch": ["."], "watch_delay": -1}, immortal.InvalidSpec, "from 0 to 3600"),
    ({"watch": ["."], "watch_delay": "1"}, immortal.InvalidType, "'watch_delay' must be"),
])
def test_bad_watch_options_are_refused_in_the_caller(home: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     kwargs: dict[str, object],
                                                     error: type[Exception],
                                                     fragment: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error) as caught:
        immortal.start(sys.executable, QUIET, name="badwatch", **kwargs)
    assert fragment in str(caught.value)
    assert not (home / "badwatch").exists()


def test_a_burst_of_changes_asks_for_one_restart_once_quiet(tmp_path: Path) -> None:
    """Real inotify, a fake clock: every change puts the restart watch_delay later."""
    (tmp_path / "src" / "deep").mkdir(parents=True)
    clock = Clock()
    watch = FileWatch([f"{tmp_path}/src/**/*.py"], ["skip_*"], 0.5, clock)
    assert watch.start()
    try:
        watch.on_ready()
        assert watch.deadline() is None
        (tmp_path / "src" / "deep" / "notes.txt").write_text("no match")
        (tmp_path / "src" / "skip_me.py").write_text("ignored")
        watch.on_ready()
        assert watch.deadline() is None
        for i in range(1000):
            (tmp_path / "src" / "deep" / "m.py").write_text(str(i))
        watch.on_ready()
        assert watch.deadline() == clock.now + 0.5
        clock.now += 0.4
        assert not watch.take()
        (tmp_path / "src" / "new").mkdir()  # a new directory is watched too
        watch.on_ready()
        (tmp_path / "src" / "new" / "n.py").write_text("x")
        watch.on_ready()
        assert watch.deadline() == clock.now + 0.5
        clock.now += 0.5
        assert watch.take() and not watch.take() and watch.deadline() is None
    finally:
        watch.close()


def test_a_directory_made_with_its_files_at_once_is_a_change(tmp_path: Path) -> None:
    """The files of a directory made (or moved in) before the pump reads its creation raise
    their events before the directory has a watch: what is found in it counts."""
    (tmp_path / "src").mkdir()
    clock = Clock()
    watch = FileWatch([f"{tmp_path}/src/**/*.py"], [], 0.5, clock)
    assert watch.start()
    try:
        (tmp_path / "src" / "docs" / "deep").mkdir(parents=True)
        (tmp_path / "src" / "docs" / "deep" / "notes.txt").write_text("no match")
        (tmp_path / "src" / "__pycache__").mkdir()
        (tmp_path / "src" / "__pycache__" / "m.py").write_text("ignored")
        watch.on_ready()
        assert watch.deadline() is None
        (tmp_path / "src" / "pkg" / "sub").mkdir(parents=True)
        (tmp_path / "src" / "pkg" / "sub" / "m.py").write_text("x")
        watch.on_ready()
        assert watch.deadline() == clock.now + 0.5
        clock.now += 0.5
        assert watch.take()
        (tmp_path / "unpacked").mkdir()
        (tmp_path / "unpacked" / "n.py").write_text("x")
        os.rename(tmp_path / "unpacked", tmp_path / "src" / "moved")
        watch.on_ready()
        assert watch.deadline() == clock.now + 0.5
    finally:
        watch.close()


# --- a group that watches ------------------------------------------------------------------
def test_editing_a_watched_file_restarts_the_target(started, tmp_path: Path) -> None:
    source = tmp_path / "app.cfg"
    source.write_text("1")
    group = started(sys.executable, QUIET, watch=[str(source)], watch_delay=0.3)
    first = group.pids["target"]
    edited = time.monotonic()
    source.write_text("2")
    status = wait_for(group.status, lambda s: s.pids.get("target") not in (None, first),
                      SHORT, what="the restart")
    took = time.monotonic() - edited
    assert 0.3 <= took < 0.3 + SHORT
    last = status.last_exit
    assert (last.decision, last.reason, last.pid) == ("restart", "watch", first)
    assert status.restarts == 1
    assert "(restarted: a watched file changed)" in str(status)


def test_a_thousand_writes_in_a_second_give_one_restart(started, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    module = tmp_path / "src" / "m.py"
    module.write_text("0")
    group = started(sys.executable, QUIET, watch=[f"{tmp_path}/src/*.py"], watch_delay=1.0)
    first = group.pids["target"]
    begun = time.monotonic()
    for i in range(1000):
        with open(module, "w") as handle:
            handle.write(str(i))
        # Spread over a second: every write lands well within watch_delay of the last.
        pause = begun + (i + 1) / 1000 - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    wait_for(group.status, lambda s: s.pids.get("target") not in (None, first), SHORT,
             what="the restart")
    settled = time.monotonic()
    wait_for(lambda: time.monotonic() - settled, lambda t: t >= 2.0, what="a quiet while")
    status = group.status()
    assert status.spawned == 2 and status.restarts == 1, status


def test_an_ignored_change_restarts_nothing(started, tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("x")
    group = started(sys.executable, QUIET, watch=[str(tmp_path)], ignore=["*.log"],
                    watch_delay=0.1, cwd=tmp_path)
    first = group.pids["target"]
    (tmp_path / "app.log").write_text("a log line")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "app.cpython.pyc").write_text("x")
    settled = time.monotonic()
    wait_for(lambda: time.monotonic() - settled, lambda t: t >= 1.0, what="a quiet while")
    assert group.pids["target"] == first and group.status().restarts == 0


# A line a third of a second: each of its writes to a log in the watched directory is
# followed by a quiet longer than the watch's delay, after which a change restarts.
TALKING = ["-c", "import os, time\nwhile True:\n    print(os.getpid(), 'x' * 60, flush=True)\n"
                 "    time.sleep(0.3)\n"]


@pytest.mark.parametrize("monitor", ["file", "jsonl"])
def test_the_files_its_own_monitors_write_in_a_watched_directory_restart_nothing(
        started, tmp_path: Path, monitor: str) -> None:
    """A log kept beside the code (``--watch . -o output=./app.log``): each line the
    monitor writes, and each rotation of the file, is a change in the watched directory,
    which must not restart the program it logs."""
    log = tmp_path / "app.log"
    group = started(sys.executable, TALKING, watch=[str(tmp_path)], watch_delay=0.1,
                    monitors={monitor: {"output": str(log), "max_bytes": 512, "backups": 3}},
                    cwd=tmp_path, ready="spawn")
    first = str(group.pids["target"])

    def lines() -> tuple[int, bool]:
        """The first target's lines in the log and its rotations; whether it rotated."""
        count, rotated = 0, False
        for path in tmp_path.glob("app.log*"):
            try:
                count += path.read_text().count(first)
            except FileNotFoundError:  # rotated away since the listing: read at the next
                return 0, False
            rotated = rotated or path.name != "app.log"
        return count, rotated

    wait_for(lines, lambda found: found[0] >= 8 and found[1], LONG,
             what="eight lines of the first target, and a rotation of the log")
    status = group.status()
    assert (str(status.pids["target"]), status.restarts, status.spawned) == (first, 0, 1), \
        status


def test_a_group_that_listens_rolls_on_a_change(started, tmp_path: Path) -> None:
    """The restart a SIGHUP asks for: a group that listens rolls (the old target serves
    until its replacement is ready)."""
    source = tmp_path / "app.cfg"
    source.write_text("1")
    group = started(sys.executable, QUIET, watch=[str(source)], watch_delay=0.1,
                    listen=["tcp://127.0.0.1:0"])
    first = group.pids["target"]
    source.write_text("2")
    status = wait_for(group.status, lambda s: (s.roll or {}).get("state") == "done", SHORT,
                      what="the rolling restart")
    assert status.pids["target"] != first


def test_the_cli_names_its_options(home: Path, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "immortal", "run", "--watch",
                             str(tmp_path / "nothere"), sys.executable], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert f"immortal: error: --watch '{tmp_path}/nothere'" in result.stderr


def test_unattached_the_pump_watches_alone(started, tmp_path: Path) -> None:
    source = tmp_path / "app.cfg"
    source.write_text("1")
    group = started(sys.executable, QUIET, watch=[str(tmp_path)], watch_delay=0.1,
                    strategy="unattached")
    first = group.pids["target"]
    source.write_text("2")
    status = wait_for(group.status, lambda s: s.pids.get("target") not in (None, first),
                      SHORT, what="the restart")
    assert status.last_exit.reason == "watch"


def test_an_idle_watched_group_never_wakes_up(started, tmp_path: Path) -> None:
    """20 s with nothing changing and nothing printed: neither the daemon nor the pump
    goes to sleep and wakes again (their voluntary context switches do not move)."""
    (tmp_path / "src" / "a" / "b").mkdir(parents=True)
    group = started(sys.executable, ["-c", "import time\ntime.sleep(3600)\n"],
                    watch=[f"{tmp_path}/src/**/*.py", str(tmp_path)], watch_delay=0.2)
    roles = {role: group.pids[role] for role in ("daemon", "pump")}
    log = Path(group.directory) / "output.log"
    wait_for(lambda: log.read_text() if log.exists() else "", lambda t: "spawn pid" in t,
             what="the spawn's event")
    begun = time.monotonic()
    wait_for(lambda: time.monotonic() - begun, lambda t: t >= 1.0, what="the start to settle")
    before = {role: switches(pid) for role, pid in roles.items()}
    begun = time.monotonic()
    wait_for(lambda: time.monotonic() - begun, lambda t: t >= 20.0, LONG, what="20 s")
    after = {role: switches(pid) for role, pid in roles.items()}
    assert after == before, f"wake-ups in 20 s: {after} against {before}"


def inotify_watches(fd: int) -> int:
    """How many watches the inotify fd ``fd`` of this process has (its fdinfo lists each)."""
    with open(f"/proc/self/fdinfo/{fd}") as handle:
        return sum(line.startswith("inotify wd:") for line in handle)


def test_released_watches_are_gone_and_the_fd_stays(tmp_path: Path) -> None:
    """A group that ends removes its watches before its role exits (``release``): the exit
    then does not wait for the kernel to free them. Nothing is watched after it."""
    import selectors

    from immortal import dirwatch
    from immortal.loop import Loop

    (tmp_path / "src").mkdir()
    (tmp_path / "group").mkdir()
    files = FileWatch([f"{tmp_path}/src/**/*.py"], [], 0.5, Clock())
    assert files.start()
    loop = Loop(selectors.DefaultSelector())
    keeper = dirwatch.keep(tmp_path / "group", loop, None, lambda missing: None)
    assert keeper is not None
    try:
        assert inotify_watches(files.fd) == 1 and inotify_watches(keeper.fd) == 2
        files.release()
        keeper.release()
        assert inotify_watches(files.fd) == 0 and inotify_watches(keeper.fd) == 0
        (tmp_path / "src" / "m.py").write_text("x")
        files.on_ready()
        assert files.deadline() is None
    finally:
        files.close()
        keeper.close()
        loop.close()
