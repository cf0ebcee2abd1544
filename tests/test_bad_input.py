"""Bad input (docs RELIABILITY.md, "Bad input"): a clear error in the caller, nothing left behind.

One table row per kind of bad input to ``immortal.start()``. Each row says how to call
``start`` (and what to prepare first), which exception classes the error must be an instance
of (immortal's own class and the matching builtin), and which fragments its message must
contain (the path, field, key or value at fault). For every row the test also checks that
nothing was left behind: no file or directory appeared (or changed) under the home or the
row's scratch directory, and no new process runs.

The suite runs as root, which can read and write anything: the "not readable" rows drop to
``nobody`` (real and effective uid; the saved uid stays 0 to come back) around the call, so
that the kernel's permission checks, not a mock, refuse the access.

A smaller table runs a few of the same cases through ``immortal.cli.main``: exit code 2 and
exactly one line ``immortal: error: ...`` on stderr.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import immortal
import immortal.cli
from conftest import TALKER, descendants, wait_for

pytestmark = pytest.mark.timeout(120)

NOBODY = 65534
IS_ROOT = os.geteuid() == 0
STRATEGIES = ["daemon", "unattached", "development"]


@dataclass
class Ctx:
    """What a row can refer to: the private home and a scratch directory anyone can enter."""

    home: Path
    tmp: Path
    monkeypatch: pytest.MonkeyPatch

    def fmt(self, text: str) -> str:
        return text.replace("{home}", str(self.home)).replace("{tmp}", str(self.tmp))


@dataclass
class Case:
    call: Callable[[Ctx], tuple[tuple[Any, ...], dict[str, Any]]]
    types: tuple[type[BaseException], ...]
    fragments: tuple[str, ...] = ()
    exact: str | None = None  # the whole message, verbatim
    setup: Callable[[Ctx], None] | None = None
    as_nobody: bool = False  # make the call with real and effective uid 'nobody'
    recorder: bool = False  # needs the third-party 'recorder' monitor installed
    marks: tuple[Any, ...] = field(default_factory=tuple)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.write_bytes(data)
    os.chmod(path, mode)


def _mkdir(path: Path, mode: int) -> None:
    path.mkdir()
    os.chmod(path, mode)  # chmod, not mkdir's mode: the umask would mask it


def _garbage(c: Ctx) -> None:
    """An executable file that is no program: no shebang, no ELF header."""
    _write(c.tmp / "garbage", b"\x00\x01\x02 this is not a program\n\xff\xfe", 0o755)


def _deep_home(c: Ctx) -> None:
    # $IMMORTAL_HOME/talker/control.sock would be well over the 107-byte limit.
    c.monkeypatch.setenv("IMMORTAL_HOME", str(c.home / ("d" * 100)))


def _home_at(path: str, *, file: str | None = None, directory: tuple[str, int] | None = None
             ) -> Callable[[Ctx], None]:
    """IMMORTAL_HOME at ``path`` (may use {tmp}), after making a file or a directory."""
    def setup(c: Ctx) -> None:
        if file is not None:
            _write(Path(c.fmt(file)), b"", 0o644)
        if directory is not None:
            _mkdir(Path(c.fmt(directory[0])), directory[1])
        c.monkeypatch.setenv("IMMORTAL_HOME", c.fmt(path))
    return setup


def _symlinked_instance(c: Ctx) -> None:
    _mkdir(c.tmp / "elsewhere", 0o700)
    os.symlink(c.tmp / "elsewhere", c.home / "talker")


def _instance_with_mode(mode: int) -> Callable[[Ctx], None]:
    def setup(c: Ctx) -> None:
        _mkdir(c.home / "talker", mode)
    return setup


def _instance_not_ours(c: Ctx) -> None:
    _mkdir(c.home / "talker", 0o700)
    os.chown(c.home / "talker", NOBODY, NOBODY)


def _fill(c: Ctx, value: Any) -> Any:
    if isinstance(value, str):
        return c.fmt(value)
    if isinstance(value, dict):
        return {k: _fill(c, v) for k, v in value.items()}
    return value


def talker(**kwargs: Any) -> Callable[[Ctx], tuple[tuple[Any, ...], dict[str, Any]]]:
    """A call of ``start(TALKER, **kwargs)``; string values may use {home} and {tmp}."""
    def call(c: Ctx) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (TALKER,), {k: _fill(c, v) for k, v in kwargs.items()}
    return call


def file_(path: str, *args: Any, **kwargs: Any) -> Callable[[Ctx], tuple[tuple[Any, ...],
                                                                         dict[str, Any]]]:
    def call(c: Ctx) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (c.fmt(path), *args), kwargs
    return call


NOT_FOUND = (immortal.TargetNotFound, FileNotFoundError)
NOT_EXECUTABLE = (immortal.TargetNotExecutable, PermissionError)
INVALID = (immortal.InvalidSpec, ValueError)
WRONG_TYPE = (immortal.InvalidType, TypeError)
UNKNOWN = (immortal.UnknownName, ValueError)
NO_MONITOR = (immortal.MonitorNotFound, LookupError)
OPTIONS_REFUSED = (immortal.MonitorOptionsError, ValueError)
UNSAFE_DIR = (immortal.StateDirError, PermissionError)
RANGE = "[0, 86400]"

CASES: dict[str, Case] = {
    # -- the file ----------------------------------------------------------------------------
    "file-missing": Case(file_("{tmp}/missing.py"), NOT_FOUND,
                         ("{tmp}/missing.py", "does not exist")),
    "file-is-a-directory": Case(file_("{tmp}/adir"), NOT_FOUND, ("{tmp}/adir", "directory"),
                                setup=lambda c: _mkdir(c.tmp / "adir", 0o755)),
    "file-not-readable": Case(file_("{tmp}/secret.py"), NOT_EXECUTABLE,
                              ("{tmp}/secret.py", "not readable", "----------"),
                              setup=lambda c: _write(c.tmp / "secret.py", b"print(1)\n", 0),
                              as_nobody=True),
    "file-not-executable": Case(file_("{tmp}/prog.sh"), NOT_EXECUTABLE,
                                ("{tmp}/prog.sh", "not executable", "-rw-r--r--"),
                                setup=lambda c: _write(c.tmp / "prog.sh",
                                                       b"#!/bin/sh\nsleep 100\n", 0o644)),
    "file-empty-str": Case(file_(""), INVALID, ("'file'",)),
    "file-not-str": Case(lambda c: ((42,), {}),
                         WRONG_TYPE, ("'file'", "int", "42")),
    "file-nul": Case(file_("{tmp}/a\0b.py"), INVALID, ("'file'", "NUL")),
    # A name without a slash that is not in the working directory is looked up on PATH.
    "file-not-on-path": Case(file_("no-such-program-qz"), NOT_FOUND,
                             ("'no-such-program-qz'", "PATH")),
    # The exec of a script whose '#!' interpreter is missing fails with ENOENT, which reads
    # as if the script were missing: name the interpreter, before anything detaches.
    "shebang-interpreter-missing": Case(file_("{tmp}/prog"), NOT_FOUND,
                                        ("{tmp}/prog", "'#!'", "'/no/such/interp'"),
                                        setup=lambda c: _write(c.tmp / "prog",
                                                               b"#!/no/such/interp -x\n",
                                                               0o755)),
    "shebang-interpreter-not-executable": Case(
        file_("{tmp}/prog"), NOT_EXECUTABLE, ("{tmp}/prog", "'#!'", "{tmp}/interp", "-rw-r--r--"),
        setup=lambda c: (_write(c.tmp / "interp", b"", 0o644),
                         _write(c.tmp / "prog", b"#!" + str(c.tmp / "interp").encode() + b"\n",
                                0o755))),
    # -- exec --------------------------------------------------------------------------------
    "exec-missing-path": Case(talker(exec="{tmp}/no/python3"), NOT_FOUND,
                              ("'exec'", "{tmp}/no/python3")),
    "exec-not-on-path": Case(talker(exec="no-such-interpreter-qz"), NOT_FOUND,
                             ("'exec'", "no-such-interpreter-qz", "PATH")),
    "exec-not-executable": Case(talker(exec="{tmp}/interp"), NOT_EXECUTABLE,
                                ("'exec'", "{tmp}/interp", "-rw-r--r--"),
                                setup=lambda c: _write(c.tmp / "interp", b"#!/bin/sh\n",
                                                       0o644)),
    "exec-is-a-directory": Case(talker(exec="{tmp}"), NOT_EXECUTABLE,
                                ("'exec'", "{tmp}", "drwxr-xr-x")),
    # -- a file that cannot be executed: only the exec after detaching finds out -------------
    **{f"cannot-exec-{s}": Case(file_("{tmp}/garbage", strategy=s), (immortal.StartError,),
                                ("{tmp}/garbage", os.strerror(errno.ENOEXEC), "'#!' line",
                                 "--exec"), setup=_garbage)
       for s in STRATEGIES},
    # -- args --------------------------------------------------------------------------------
    "args-a-str": Case(file_(TALKER, "--out 3"), WRONG_TYPE, ("'args'", "str", "--out 3")),
    "args-bytes": Case(file_(TALKER, b"--out"), WRONG_TYPE, ("'args'", "bytes")),
    "args-int-item": Case(file_(TALKER, ["--out", 3]), WRONG_TYPE, ("'args[1]'", "int")),
    "args-not-a-sequence": Case(file_(TALKER, 7), WRONG_TYPE, ("'args'", "int")),
    "args-nul": Case(file_(TALKER, ["ok", "a\0b"]), INVALID, ("'args[1]'", "NUL")),
    # -- env ---------------------------------------------------------------------------------
    "env-not-a-mapping": Case(talker(env=["A=1"]), WRONG_TYPE, ("'env'", "mapping", "list")),
    "env-empty-key": Case(talker(env={"": "x"}), INVALID, ("'env' key", "''")),
    "env-key-with-equals": Case(talker(env={"A=B": "x"}), INVALID, ("'env' key", "'A=B'")),
    "env-key-not-str": Case(talker(env={1: "x"}), WRONG_TYPE, ("'env' key", "1", "int")),
    "env-value-not-str": Case(talker(env={"PORT": 8080}), WRONG_TYPE,
                              ("'env['PORT']'", "int", "8080")),
    "env-value-nul": Case(talker(env={"TOKEN": "a\0b"}), INVALID, ("'env['TOKEN']'", "NUL")),
    # -- unknown names -----------------------------------------------------------------------
    "strategy-unknown": Case(talker(strategy="deamon"), UNKNOWN,
                             ("'deamon'", "did you mean 'daemon'", "'development'",
                              "'unattached'")),
    "strategy-not-str": Case(talker(strategy=1), WRONG_TYPE, ("'strategy'", "int")),
    # An unexpected keyword argument is a TypeError in Python; it stays an UnknownName.
    "keyword-unknown": Case(talker(stategy="daemon"), (*UNKNOWN, TypeError),
                            ("'stategy'", "did you mean 'strategy'", "'stop_timeout'")),
    "policy-field-unknown": Case(talker(policy={"max_restart": 3}), UNKNOWN,
                                 ("'max_restart'", "did you mean 'max_restarts'")),
    "policy-not-a-mapping": Case(talker(policy=[("max_restarts", 3)]), WRONG_TYPE,
                                 ("'policy'", "list")),
    # -- numbers -----------------------------------------------------------------------------
    "stop_timeout-negative": Case(talker(stop_timeout=-1), INVALID,
                                  ("'stop_timeout'", RANGE, "-1")),
    "stop_timeout-nan": Case(talker(stop_timeout=math.nan), INVALID,
                             ("'stop_timeout'", RANGE, "nan")),
    "stop_timeout-bool": Case(talker(stop_timeout=True), WRONG_TYPE,
                              ("'stop_timeout'", RANGE, "bool", "True")),
    "stop_timeout-str": Case(talker(stop_timeout="5"), WRONG_TYPE,
                             ("'stop_timeout'", RANGE, "str", "'5'")),
    "start_timeout-inf": Case(talker(start_timeout=math.inf), INVALID,
                              ("'start_timeout'", "at most 86400", "inf")),
    "start_timeout-0": Case(talker(start_timeout=0), INVALID,
                            ("'start_timeout'", "more than 0", "(got 0)")),
    "umask-too-big": Case(talker(umask=0o1000), INVALID, ("'umask'", "511", "512")),
    "policy-max_restarts-0": Case(talker(policy={"max_restarts": 0}), INVALID,
                                  ("'max_restarts'", "[1, 1000000]", "0")),
    "policy-backoff_factor-0.5": Case(talker(policy={"backoff_factor": 0.5}), INVALID,
                                      ("'backoff_factor'", "[1, 100]", "0.5")),
    "policy-jitter-str": Case(talker(policy={"jitter": "0.1"}), WRONG_TYPE,
                              ("'jitter'", "[0, 1]", "'0.1'")),
    # Bounds as a user writes them, the field by its own name, 0 and below in one wording.
    "policy-final_exit_codes-300": Case(talker(policy={"final_exit_codes": [0, 300]}), INVALID,
                                        exact="'final_exit_codes' must be ints in [0, 255] "
                                        "(got 300)"),
    "ready_timeout-0": Case(talker(ready_timeout=0.0), INVALID,
                            exact="'ready_timeout' must be a number more than 0 and at most "
                            "86400 (got 0)"),
    "ready_timeout-negative": Case(talker(ready_timeout=-3), INVALID,
                                   exact="'ready_timeout' must be a number more than 0 and at "
                                   "most 86400 (got -3)"),
    # -- monitors ----------------------------------------------------------------------------
    "monitor-not-installed": Case(talker(monitor="fiel"), NO_MONITOR,
                                  ("'fiel'", "not installed", "did you mean 'file'",
                                   "installed monitors: ", "file")),
    "monitor-import-fails": Case(talker(monitor="no.such.module:Thing"), NO_MONITOR,
                                 ("'no.such.module:Thing'", "ModuleNotFoundError",
                                  "No module named 'no'")),
    "monitor-attribute-missing": Case(talker(monitor="os:no_such_thing"), NO_MONITOR,
                                      ("'os:no_such_thing'", "AttributeError",
                                       "no_such_thing")),
    "monitor-not-a-monitor": Case(talker(monitor="os:path"), (immortal.MonitorError,),
                                  ("'os:path'", "not a monitor")),
    "monitor-check-refuses-no-path": Case(talker(monitor="recorder", options={}),
                                          OPTIONS_REFUSED,
                                          exact="recorder needs option 'path'",
                                          recorder=True),
    "monitor-check-refuses": Case(talker(monitor="recorder",
                                         options={"path": "/tmp/unused-recorder.jsonl",
                                                  "refuse": "not today"}),
                                  OPTIONS_REFUSED, exact="recorder refuses: not today",
                                  recorder=True),
    "options-not-a-mapping": Case(talker(options=["output"]), OPTIONS_REFUSED,
                                  ("'options'", "list")),
    "file-monitor-option-typo": Case(talker(options={"outptu": "x"}), OPTIONS_REFUSED,
                                     ("'outptu'", "did you mean 'output'")),
    "output-directory-missing": Case(talker(options={"output": "{tmp}/nodir/out.log"}),
                                     OPTIONS_REFUSED, ("{tmp}/nodir/out.log", "{tmp}/nodir",
                                                       "does not exist")),
    "output-directory-not-writable": Case(talker(options={"output": "{tmp}/ro/out.log"}),
                                          OPTIONS_REFUSED, ("{tmp}/ro/out.log", "{tmp}/ro",
                                                            "not writable"),
                                          setup=lambda c: _mkdir(c.tmp / "ro", 0o555),
                                          as_nobody=True),
    "output-is-a-directory": Case(talker(options={"output": "{tmp}"}), OPTIONS_REFUSED,
                                  ("{tmp}", "directory")),
    # -- names and paths ---------------------------------------------------------------------
    **{f"name-{label}": Case(talker(name=bad), INVALID,
                             ("'name'", "1 to 64 bytes", "starting with a letter or a digit",
                              repr(bad)))
       for label, bad in [("slash", "a/b"), ("dotdot", ".."), ("nul", "x\0y"), ("empty", ""),
                          ("65-bytes", "n" * 65), ("dash", "-x"), ("at", "@b")]},
    "name-not-str": Case(talker(name=5), WRONG_TYPE, ("'name'", "int")),
    "socket-path-too-long": Case(talker(), (immortal.InvalidSpec, ValueError),
                                 ("{home}/" + "d" * 100 + "/talker", "107", "IMMORTAL_HOME"),
                                 setup=_deep_home),
    "cwd-missing": Case(talker(cwd="{tmp}/gone"), NOT_FOUND, ("'cwd'", "{tmp}/gone")),
    "cwd-a-file": Case(talker(cwd=TALKER), NOT_FOUND, ("'cwd'", TALKER)),
    # -- an IMMORTAL_HOME that cannot be used: refused, not an OSError of the moment -------------
    "home-in-proc": Case(talker(), UNSAFE_DIR, ("/proc/immortal-home", "IMMORTAL_HOME"),
                         setup=_home_at("/proc/immortal-home")),
    "home-under-a-file": Case(talker(), UNSAFE_DIR, ("{tmp}/afile/home", "IMMORTAL_HOME",
                                                     "Not a directory"),
                              setup=_home_at("{tmp}/afile/home", file="{tmp}/afile")),
    "home-in-read-only-dir": Case(talker(), UNSAFE_DIR, ("{tmp}/ro/home", "IMMORTAL_HOME",
                                                         "Permission denied"),
                                  setup=_home_at("{tmp}/ro/home", directory=("{tmp}/ro", 0o555)),
                                  as_nobody=True),
    "home-of-another-user": Case(talker(), UNSAFE_DIR, ("{tmp}/private/home", "IMMORTAL_HOME"),
                                 setup=_home_at("{tmp}/private/home",
                                                directory=("{tmp}/private", 0o700)),
                                 as_nobody=True),
    # -- the instance directory, made before the call ----------------------------------------
    "instance-dir-symlink": Case(talker(), UNSAFE_DIR, ("{home}/talker", "symlink"),
                                 setup=_symlinked_instance),
    "instance-dir-group-writable": Case(talker(), UNSAFE_DIR,
                                        ("{home}/talker", "writable by group or others",
                                         "drwxrwx---"),
                                        setup=_instance_with_mode(0o770)),
    "instance-dir-world-writable": Case(talker(), UNSAFE_DIR,
                                        ("{home}/talker", "writable by group or others",
                                         "drwx---rwx"),
                                        setup=_instance_with_mode(0o707)),
    "instance-dir-not-ours": Case(talker(), UNSAFE_DIR, ("{home}/talker", f"uid {NOBODY}"),
                                  setup=_instance_not_ours,
                                  marks=(pytest.mark.skipif(not IS_ROOT, reason=(
                                      "giving a directory to another uid needs root")),)),
}


def snapshot(root: Path) -> dict[str, tuple[str, int, int, str]]:
    """Every path under ``root`` (symlinks not followed): kind, mode, owner, link target."""
    seen: dict[str, tuple[str, int, int, str]] = {}
    if not os.path.lexists(root):
        return seen
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in [*dirnames, *filenames]:
            path = os.path.join(dirpath, entry)
            info = os.lstat(path)
            kind = stat.filemode(info.st_mode)[0]
            target = os.readlink(path) if stat.S_ISLNK(info.st_mode) else ""
            seen[os.path.relpath(path, root)] = (kind, stat.S_IMODE(info.st_mode),
                                                 info.st_uid, target)
    return seen


@contextlib.contextmanager
def as_nobody() -> Iterator[None]:
    """Run the block with real and effective uid 'nobody' when we are root (saved uid kept)."""
    if not IS_ROOT:
        yield
        return
    os.setresuid(NOBODY, NOBODY, 0)
    try:
        yield
    finally:
        os.setresuid(0, 0, 0)
    assert os.getuid() == os.geteuid() == 0


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A scratch directory that 'nobody' can enter (pytest's tmp_path is 0700 under root)."""
    path = Path(tempfile.mkdtemp(prefix="bad-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize(
    "case", [pytest.param(case, id=label, marks=case.marks) for label, case in CASES.items()])
def test_start_refuses_bad_input(case: Case, home: Path, scratch: Path,
                                 monkeypatch: pytest.MonkeyPatch,
                                 request: pytest.FixtureRequest) -> None:
    if case.recorder:
        request.getfixturevalue("recorder")
    ctx = Ctx(home=home, tmp=scratch, monkeypatch=monkeypatch)
    if case.setup:
        case.setup(ctx)
    args, kwargs = case.call(ctx)
    home_before, scratch_before = snapshot(home), snapshot(scratch)
    procs_before = set(descendants())

    with pytest.raises(immortal.ImmortalError) as info:
        with as_nobody() if case.as_nobody else contextlib.nullcontext():
            immortal.start(*args, **kwargs)

    error = info.value
    for kind in case.types:
        assert isinstance(error, kind), (
            f"expected an instance of {kind.__name__}; got {type(error).__name__} "
            f"(bases: {[c.__name__ for c in type(error).__mro__[1:]]}): {error}")
    message = str(error)
    assert "\n" not in message, f"a message is one line: {message!r}"
    if case.exact is not None:
        assert message == case.exact
    for fragment in case.fragments:
        assert ctx.fmt(fragment) in message, (
            f"the message should mention {ctx.fmt(fragment)!r}: {message!r}")
    # A start that failed after taking the lock leaves its lock files, in their directory:
    # another start may have opened them (and nothing else).
    left = {path: entry for path, entry in snapshot(home).items() if path not in home_before}
    locks = {path for path in left if os.path.basename(path) in ("lock", "target.lock")}
    dirs = {os.path.dirname(path) for path in locks}
    assert set(left) <= locks | dirs, "start() left something under the home"
    assert {p: e for p, e in snapshot(home).items() if p in home_before} == home_before
    assert snapshot(scratch) == scratch_before, "start() left something in the scratch dir"
    assert not set(descendants()) - procs_before, "start() left a process running"


def test_shell_metacharacters_are_passed_verbatim(started, home: Path, scratch: Path) -> None:
    """Not an error: every byte reaches the target's argv as given, never through a shell."""
    marker = scratch / "injected"
    tricky = [f"; touch {marker}", f"$(touch {marker})", f"`touch {marker}`",
              f"&& touch {marker} | cat > {marker} &", "*", "~", "$HOME", "'q'", '"dq"', "\\",
              "a b", "#", "<in >out 2>&1", "{a,b}", "[x]", "!!", ""]
    group = started(TALKER, ["--args", *tricky])
    output = home / "talker" / "output.log"
    lines = wait_for(lambda: output.read_text().splitlines() if output.exists() else [],
                     lambda ls: any(" stdout | args " in line for line in ls),
                     what="the target's 'args' line")
    line = next(line for line in lines if " stdout | args " in line)
    assert json.loads(line.split(" stdout | args ", 1)[1]) == ["--args", *tricky]
    assert not os.path.lexists(marker), "an argument went through a shell"
    assert group.status().running


# -- the command line ------------------------------------------------------------------------

README = os.path.normpath(os.path.join(os.path.dirname(TALKER), "..", "..", "README.md"))
CLI_CASES = {
    "missing-file": (["run", "/nonexistent/dir/app.py"], ["/nonexistent/dir/app.py"]),
    "unknown-strategy": (["run", TALKER, "-s", "deamon"], ["did you mean 'daemon'"]),
    "option-without-value": (["run", TALKER, "-o", "novalue"], ["--option", "'novalue'"]),
    "env-without-equals": (["run", TALKER, "-e", "NOVALUE"], ["--env", "'NOVALUE'"]),
    "unknown-monitor": (["run", TALKER, "-m", "fiel"], ["did you mean 'file'"]),
    "bad-name": (["run", TALKER, "-n", "a/b"], ["--name", "'a/b'"]),
    "negative-stop-timeout": (["run", TALKER, "--stop-timeout", "-1"], ["--stop-timeout"]),
    "negative-min-uptime": (["run", TALKER, "--min-uptime", "-1"], ["--min-uptime"]),
    "zero-max-restarts": (["run", TALKER, "--max-restarts", "0"], ["--max-restarts"]),
    "not-executable": (["run", README], [README, "--exec"]),
    "bad-group-name": (["status", "a!b"], ["NAME", "'a!b'"]),
    "negative-lines": (["logs", "x", "-n", "-1"], ["--lines", "-1"]),
    "unknown-option": (["run", TALKER, "--nmae", "x"], ["--nmae", "did you mean '--name'"]),
    "bad-umask": (["run", TALKER, "--umask", "999"], ["umask", "'999'"]),
    "batch-and-all-at-once": (["restart", "x", "--batch", "2", "--all-at-once"],
                              ["--batch", "--all-at-once", "not allowed"]),
    "final-exit-code-too-big": (["run", TALKER, "--final-exit-codes", "0,300"],
                                ["--final-exit-codes must be ints in [0, 255] (got 300)"]),
    "zero-ready-timeout": (["run", TALKER, "--ready-timeout", "0"],
                           ["--ready-timeout must be a number more than 0 and at most 86400 "
                            "(got 0)"]),
    "negative-ready-timeout": (["run", TALKER, "--ready-timeout", "-3"],
                               ["--ready-timeout must be a number more than 0 and at most "
                                "86400 (got -3)"]),
}


@pytest.mark.parametrize("argv, fragments", list(CLI_CASES.values()), ids=list(CLI_CASES))
def test_cli_refuses_bad_input(argv: list[str], fragments: list[str], home: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    home_before = snapshot(home)
    procs_before = set(descendants())
    code = immortal.cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 2, f"exit code {code}; stderr: {err!r}"
    assert err.startswith("immortal: error: "), err
    assert err.endswith("\n") and err.count("\n") == 1, f"not exactly one line: {err!r}"
    for fragment in fragments:
        assert fragment in err, f"stderr should mention {fragment!r}: {err!r}"
    # The command line's words, not the library's: '--name', not 'name' or name=...
    for word in ("'name'", "'stop_timeout'", "'min_uptime'", "'max_restarts'", "exec=",
                 "name=", "''", "final_exit_codes", "ready_timeout", ".0]", ".0,"):
        assert word not in err, f"stderr should not say {word!r}: {err!r}"
    assert out == ""
    assert snapshot(home) == home_before
    assert not set(descendants()) - procs_before
