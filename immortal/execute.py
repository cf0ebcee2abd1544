"""``immortal.exec``: run a program to its end, its output read, its whole process tree
ended with it.

``subprocess.run(timeout=...)`` kills the child alone: a grandchild that ignores SIGTERM,
or one in a session of its own, runs on (and, holding the pipes, keeps ``communicate``
waiting). Here every process the program starts is found and killed: the program runs
in a process group of its own (``start_new_session``), and with a token in its
environment, ``IMMORTAL_EXEC_<random>=1``, which its descendants inherit, whatever group
or session they move to (the approach of ``orphans.py``, with a token of its own per
call: an exec started by an exec'd program keeps both). The call needs no privilege and
is no child subreaper (its caller's children are left as they are).

When the program ends, when ``timeout`` passes, or when it has written more than
``max_buffer`` bytes (stdout and stderr together), the tree is ended: SIGKILL to the
program's process group (while the program is not yet reaped, so its group id cannot name
anyone else), then to every process of ours carrying the token (each proved by its start
time, ``orphans.end``), again until none is found. The call returns (or raises) only then:
nothing it started outlives it. A descendant that clears its environment *and* leaves the
process group escapes; its copy of the pipes is then read for at most ``DRAIN`` seconds.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

from . import _linux, orphans
from .checks import check_args, check_cwd, check_env, check_file, check_number
from .errors import ExecTimeout, OutputTooLarge
from .events import ExitStatus
from .records import Record

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any

TOKEN = "IMMORTAL_EXEC_"  #: the prefix of the variable that marks one call's processes
CHUNK = 65536
DRAIN = 1.0  #: seconds the pipes are read, once the tree was ended, to their end
END_TRIES = 5.0  #: seconds the tree's end may take (a fork bomb's processes keep coming)


class ExecResult(Record):
    """How ``immortal.exec``'s program ended, and what it wrote."""

    stdout: bytes
    stderr: bytes
    status: ExitStatus  #: its exit code or signal (``ExitStatus``), its pid and run time

    @property
    def returncode(self) -> int | None:
        """The exit code, or minus the signal, as subprocess has it."""
        return self.status.code if self.status.code is not None else -(self.status.signal or 0)


class Execution:
    """One program in flight: its process, its token; ``kill`` (from any thread) ends its
    whole tree."""

    def __init__(self, argv: list[str], env: Mapping[str, str], cwd: str) -> None:
        self.variable = TOKEN + os.urandom(8).hex()
        self.program = argv[0]
        self.lock = threading.Lock()
        self.reaped = False
        self.status: ExitStatus | None = None
        self.popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**env, self.variable: "1"}, cwd=cwd, start_new_session=True, close_fds=True)
        self.started = time.monotonic()
        self.pid = self.popen.pid
        self.pidfd = -1
        if _linux.HAVE_PIDFD:
            try:
                self.pidfd = _linux.pidfd_open(self.pid)
            except OSError:
                pass

    def kill(self) -> None:
        """SIGKILL the program and every process it started; returns once none is left
        (or ``END_TRIES`` has passed)."""
        with self.lock:
            if not self.reaped:  # a zombie leader keeps its group id ours
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        deadline = time.monotonic() + END_TRIES
        while time.monotonic() < deadline:
            found = orphans.carrying(self.variable)
            if not found or not orphans.end(found, max(0.0, deadline - time.monotonic())):
                return

    def exited(self) -> bool:
        """Whether the program has ended (it is left to reap)."""
        if self.reaped:
            return True
        try:
            result = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return result is not None

    def reap(self) -> ExitStatus:
        """Wait for the program's end and collect its status."""
        with self.lock:
            if self.status is None:
                result = os.waitid(os.P_PID, self.pid, os.WEXITED)
                uptime = time.monotonic() - self.started
                assert result is not None  # no WNOHANG: it waits
                self.status = ExitStatus.from_waitid(result, uptime)
                self.reaped = True
                # subprocess must not wait for a pid that may be someone else's by now.
                self.popen.returncode = self.status.code if self.status.code is not None \
                    else -(self.status.signal or 0)
            return self.status

    def close(self) -> None:
        for pipe in (self.popen.stdout, self.popen.stderr):
            if pipe is not None:
                pipe.close()
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

    def run(self, timeout: float | None, max_buffer: int | None) -> ExecResult:
        """Read the output until the program ends; end its tree; the result, or
        ``ExecTimeout`` / ``OutputTooLarge``."""
        deadline = None if timeout is None else self.started + timeout
        out, err = bytearray(), bytearray()
        try:
            ended = self._read(out, err, deadline, max_buffer)
        except BaseException:  # Ctrl-C, say: nothing is left behind either
            self.kill()
            self.reap()
            self.close()
            raise
        self.kill()  # what the program left running, or all of it
        status = self.reap()
        self._drain(out, err, max_buffer)
        self.close()
        if ended == "timeout":
            raise ExecTimeout(f"{self.program!r} ran past its timeout of {timeout:g} s "
                              "and was killed, with every process it started",
                              bytes(out), bytes(err), status)
        if ended == "too large":
            raise OutputTooLarge(f"{self.program!r} wrote more than max_buffer="
                                 f"{max_buffer} bytes and was killed, with every process it "
                                 "started", bytes(out), bytes(err), status)
        return ExecResult(bytes(out), bytes(err), status)

    def _read(self, out: bytearray, err: bytearray, deadline: float | None,
              max_buffer: int | None) -> str:
        """Read until the program ends (its pipes may stay open: a descendant holds them);
        why the reading stopped: "exited", "timeout" or "too large"."""
        assert self.popen.stdout is not None and self.popen.stderr is not None
        buffers = {self.popen.stdout.fileno(): out, self.popen.stderr.fileno(): err}
        with selectors.DefaultSelector() as selector:
            for fd in buffers:
                selector.register(fd, selectors.EVENT_READ)
            if self.pidfd >= 0:
                selector.register(self.pidfd, selectors.EVENT_READ)
            while True:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                if self.pidfd < 0:  # no pidfd: the program's end is polled
                    wait = 0.01 if wait is None else min(wait, 0.01)
                for key, _ in selector.select(wait):
                    if key.fd == self.pidfd:
                        continue
                    if not self._take(key.fd, buffers[key.fd], out, err, max_buffer):
                        selector.unregister(key.fd)
                    elif max_buffer is not None and len(out) + len(err) > max_buffer:
                        return "too large"
                if self.exited():
                    return "exited"
                if deadline is not None and time.monotonic() >= deadline:
                    return "timeout"

    @staticmethod
    def _take(fd: int, into: bytearray, out: bytearray, err: bytearray,
              max_buffer: int | None) -> bool:
        """Read once from ``fd`` into ``into``: False at its end. At most one byte past
        ``max_buffer`` is kept."""
        room = CHUNK if max_buffer is None else max_buffer + 1 - len(out) - len(err)
        size = max(1, min(CHUNK, room))
        try:
            data = os.read(fd, size)
        except BlockingIOError:
            return True
        into += data
        return bool(data)

    def _drain(self, out: bytearray, err: bytearray, max_buffer: int | None) -> None:
        """What the ended tree left in the pipes, up to their end (every writer is dead),
        for at most ``DRAIN`` seconds (a writer that escaped keeps them open)."""
        assert self.popen.stdout is not None and self.popen.stderr is not None
        buffers = {self.popen.stdout.fileno(): out, self.popen.stderr.fileno(): err}
        until = time.monotonic() + DRAIN
        with selectors.DefaultSelector() as selector:
            for fd in buffers:
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map() and time.monotonic() < until:
                if max_buffer is not None and len(out) + len(err) > max_buffer:
                    return
                for key, _ in selector.select(max(0.0, until - time.monotonic())):
                    if not self._take(key.fd, buffers[key.fd], out, err, max_buffer):
                        selector.unregister(key.fd)


def prepare(file: str | os.PathLike[str], args: Sequence[str] | None = None, *,
            env: Mapping[str, str] | None = None,
            cwd: str | os.PathLike[str] | None = None) -> Execution:
    """Check the arguments (as ``start()`` does: ``TargetNotFound``...) and start the
    program; a ``.py`` file runs with our Python."""
    here = os.getcwd()
    target_cwd = check_cwd(cwd)
    target_env = check_env(env)
    path = check_file(file, here, False, target_env)
    argv = [sys.executable, path] if path.endswith(".py") else [path]
    return Execution([*argv, *check_args(args)], target_env, target_cwd)


EXEC_KEYWORDS = ("timeout", "max_buffer", "env", "cwd")


def no_other(unknown: Mapping[str, Any]) -> None:
    """An ``UnknownKeyword`` for a keyword ``exec()`` does not take, as ``start()`` says."""
    from .errors import UnknownKeyword, unknown_name

    for key in unknown:
        raise unknown_name("keyword argument of exec()", key, EXEC_KEYWORDS, UnknownKeyword)


def exec(file: str | os.PathLike[str], args: Sequence[str] | None = None, *,
         timeout: float | None = None, max_buffer: int | None = None,
         env: Mapping[str, str] | None = None,
         cwd: str | os.PathLike[str] | None = None, **unknown: Any) -> ExecResult:
    """Run ``file`` with ``args`` to its end and return its output and exit status
    (``ExecResult``: ``stdout``, ``stderr``, ``status``). Nothing it starts outlives the
    call: what the program leaves running is killed when it ends. Past ``timeout``
    seconds the whole tree is killed and ``ExecTimeout`` raised; past ``max_buffer`` bytes
    of output, ``OutputTooLarge``; each carries what was read (``stdout``, ``stderr``)
    and the ``status``. ``env`` (default: ours) and ``cwd`` are the program's."""
    no_other(unknown)
    limit, most = check_limits(timeout, max_buffer)
    return prepare(file, args, env=env, cwd=cwd).run(limit, most)


def check_limits(timeout: object, max_buffer: object) -> tuple[float | None, int | None]:
    """``timeout`` (seconds, more than 0) and ``max_buffer`` (bytes), each None or
    checked."""
    limit = None if timeout is None else float(check_number("timeout", timeout, high=86400.0,
                                                            above=True))
    return limit, check_number("max_buffer", max_buffer, integer=True, allow_none=True)
