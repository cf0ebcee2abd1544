"""One child process: spawn it in its own process group, signal it, and reap it.

Exit notification is a pidfd (``_linux.pidfd_open``): readable when the child dies, so the
pump blocks in ``selectors`` instead of polling. Where there is no pidfd, SIGCHLD wakes the
pump and ``waitpid(WNOHANG)`` reaps.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import time

from . import _linux, plainsignals
from .events import ExitStatus

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .privileges import Drop

#: Ignored by the roles: a write to a control client that went away, to a closed pipe
#: (``immortal run -s development ... | head``) or past a file-size limit then fails with
#: EPIPE or EFBIG, which the role handles, instead of killing it.
ROLE_IGNORED = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ")
                     if hasattr(signal, name))


def role_signals(blocked: tuple[int, ...] = ()) -> None:
    """Signal dispositions of a role (daemon or pump), whatever the caller left it.

    Blocked signals are unblocked (but ``blocked``, left pending for the role's loop to
    take: a daemon run in the foreground), and an ignored one is reset to its default,
    except the two of ``ROLE_IGNORED``, which a role ignores. So the target, spawned by the
    pump, gets every signal at its default: handlers are reset by ``exec``, and
    ``restore_signals`` resets SIGPIPE and SIGXFSZ in the child before ``exec`` (see
    :func:`spawn`). A target ignoring SIGTERM because its grandparent did would make every
    stop wait for the KILL.
    """
    plainsignals.mask(signal.SIG_SETMASK, blocked)
    for number in _CATCHABLE:
        try:
            if number in ROLE_IGNORED:
                plainsignals.handle(number, plainsignals.SIG_IGN)
            elif plainsignals.handler_of(number) == plainsignals.SIG_IGN:
                plainsignals.handle(number, plainsignals.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            pass


def process_group_kwargs() -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        return {"process_group": 0}
    return {"preexec_fn": os.setpgrp}  # pragma: no cover - Python 3.10


class Child:
    """A spawned child in its own process group; ``repr`` tells whether it runs."""

    def __init__(self, pid: int, started_at: float, popen: subprocess.Popen[bytes] | None,
                 own: bool = True) -> None:
        self.pid = pid
        self.started_at = started_at  # time.monotonic() at spawn
        self.started_wall = time.time() - (time.monotonic() - started_at)
        self.own = own  # False for a target adopted from a dead pump: the daemon reaps it
        self.status: ExitStatus | None = None
        self._popen = popen
        self.pidfd = -1
        if own and _linux.HAVE_PIDFD:
            self.pidfd = _linux.pidfd_open(pid)

    def __repr__(self) -> str:
        if self.status is None:
            return f"<Child running with PID {self.pid}>"
        return f"<Child PID {self.pid} {self.status}>"

    def kill_group(self, number: int) -> None:
        """Signal the child's whole process group (it is its leader)."""
        if self.status is not None and self.own:
            return  # reaped: the pid may belong to someone else now
        try:
            os.killpg(self.pid, number)
        except ProcessLookupError:
            pass
        except PermissionError:  # pragma: no cover - the group leader changed uid
            os.kill(self.pid, number)

    def reap(self, now: float, close: bool = True) -> ExitStatus | None:
        """Collect the exit status if the child has died, else None."""
        if self.status is not None:
            return self.status
        uptime = now - self.started_at
        if self.pidfd >= 0:
            result = _linux.wait_pidfd(self.pidfd)
            if result is None:
                return None
            status = ExitStatus.from_waitid(result, uptime)
        else:
            pid, raw = os.waitpid(self.pid, os.WNOHANG)
            if pid == 0:
                return None
            status = ExitStatus.from_wait_status(pid, raw, uptime)
        self.dead(status, close)
        return status

    def dead(self, status: ExitStatus, close: bool = True) -> None:
        self.status = status
        if self._popen is not None:
            # Tell subprocess the child is reaped, or it would waitpid() a reused pid later.
            self._popen.returncode = status.code if status.code is not None else -(
                status.signal or 0)
        if close:
            self.close()

    def close(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


def reap_strays(keep: set[int]) -> None:
    """Reap dead children other than ``keep`` (orphans that came to us as subreaper)."""
    for pid in _linux.children():
        if pid in keep:
            continue
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def kill_children(timeout: float = 5.0) -> None:
    """SIGKILL and reap every child left (escaped grandchildren, as subreaper).

    They are our children, so their pids cannot be reused before we reap them: signalling
    them is safe.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = _linux.children()
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in left:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def spawn(argv: list[str], *, env: dict[str, str], cwd: str, umask: int | None,
          stdout: int, stderr: int, pass_fds: tuple[int, ...] = (),
          pid_variable: str | None = None, drop: Drop | None = None,
          moved: dict[int, int] | None = None) -> Child:
    """Start ``argv`` (no shell) in a new process group; OSError if it cannot be executed.

    The target gets every signal at its default and none blocked: see :func:`role_signals`.
    ``pid_variable`` (socket activation's ``LISTEN_PID``) is set in ``env`` to the
    target's own pid: by ``/bin/sh`` where that is exact (:func:`_through_shell`), else in
    a forked child (:func:`_environment`). ``drop``: the user it runs as (``privileges``),
    set in the child before its ``exec`` by subprocess's C code: the supplementary groups,
    then the gid, then the uid. ``moved``: fds the child gets at other numbers
    (``{theirs: ours}``, each ``theirs`` below its ``ours``): see :func:`_moves`.
    """
    kwargs = process_group_kwargs()
    if drop is not None:
        kwargs.update(user=drop.uid, group=drop.gid, extra_groups=list(drop.groups))
    steps = []
    ignored = _ignored_since()
    if pid_variable is not None and not ignored and not moved:
        through = _through_shell(argv, env, pid_variable)
        if through is not None:
            argv, pid_variable = through, None
    if moved:  # in a forked child: no shell can place them
        steps.append(_moves(moved))
    if pid_variable is not None:
        steps.append(_environment(env, pid_variable))
    if ignored:  # a monitor ignored a signal in the pump: not for the target
        steps.append(_defaults(ignored))
    if steps:  # a slower spawn (no vfork), so only when needed
        kwargs["preexec_fn"] = _chain(*steps, kwargs.get("preexec_fn"))
        if sys.version_info >= (3, 11):
            kwargs["process_group"] = 0
    popen = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
        env=None if pid_variable is not None else env, cwd=cwd,
        umask=-1 if umask is None else umask, close_fds=True, pass_fds=pass_fds, text=False,
        restore_signals=True,  # SIGPIPE and SIGXFSZ, ignored by the roles, at their default
        **kwargs,
    )
    return Child(popen.pid, time.monotonic(), popen)


def _ignored_since() -> list[int]:
    """Signals ignored in this role besides ``ROLE_IGNORED`` (set by a monitor: the role
    reset the others when it started)."""
    return [number for number in _CATCHABLE  # at every spawn: plain ints, no enum per call
            if plainsignals.handler_of(number) == plainsignals.SIG_IGN
            and number not in ROLE_IGNORED]


_CATCHABLE = tuple(n for n in signal.valid_signals()
                   if n not in (signal.SIGKILL, signal.SIGSTOP))


def _defaults(numbers: list[int]) -> Callable[[], None]:
    """What the child runs before ``exec``: these signals back to their default."""
    def reset() -> None:
        for number in numbers:
            signal.signal(number, signal.SIG_DFL)
    return reset


def _environment(env: dict[str, str], pid_variable: str) -> Callable[[], None]:
    """What the child runs before ``exec``: its environment made ``env``, with
    ``pid_variable`` its own pid, known only once forked. subprocess is then given no
    environment of its own (``env=None``), so its ``execve`` passes this one. The spawn a
    shell can make exact instead is :func:`_through_shell`'s."""
    encoded = [(os.fsencode(key), os.fsencode(value)) for key, value in env.items()]
    name = os.fsencode(pid_variable)

    def place() -> None:
        for old in list(os.environ):
            os.unsetenv(old)
        for key, value in encoded:
            os.putenv(key, value)
        os.putenv(name, str(os.getpid()).encode())
    return place


SHELL = "/bin/sh"
#: Variables a POSIX shell sets itself whatever its environment said (PWD is put back).
_SHELL_OWNS = ("PPID", "OPTIND", "IFS")
_shell_is_dash: bool | None = None


def _through_shell(argv: list[str], env: dict[str, str], pid_variable: str) -> list[str] | None:
    """``argv`` through ``/bin/sh``, which sets ``pid_variable`` to its own pid (``$$``)
    and ``exec``s ``argv`` unchanged (never parsed: ``"$0" "$@"``), or None where that
    would not be exactly the same ``exec`` as a fork's (see :func:`_environment`).

    A fork whose child runs Python before its ``exec`` costs the pump (and the target's
    recovery) milliseconds, more on a busy machine, where the child waits for a CPU between
    its steps; ``/bin/sh`` is spawned as any target (``vfork``). Exact only with dash,
    which adds nothing to the environment but ``PWD`` (put back, or unset, here), drops
    variables whose names are not a shell's, and resets ``_SHELL_OWNS``: any of those in
    ``env`` take the fork. So does a file that is not an executable with ``#!`` or ELF
    magic: dash would run any other as a shell script, where ``exec`` fails with ENOEXEC,
    and says a missing file with exit status 127, not subprocess's OSError.
    """
    global _shell_is_dash
    if _shell_is_dash is None:
        _shell_is_dash = os.path.basename(os.path.realpath(SHELL)) == "dash"
    if not _shell_is_dash or not argv[0].startswith("/") or not _executable(argv[0]):
        return None
    if any(not (name.isascii() and name.isidentifier()) or name in _SHELL_OWNS
           for name in env):
        return None
    if "PWD" in env:
        return [SHELL, "-c", f'PWD=$1; shift; export {pid_variable}=$$; exec "$0" "$@"',
                argv[0], env["PWD"], *argv[1:]]
    return [SHELL, "-c", f'unset PWD; export {pid_variable}=$$; exec "$0" "$@"', *argv]


def _executable(path: str) -> bool:
    """Whether ``path`` is a file we may execute that starts with ``#!`` or ELF magic."""
    if not os.access(path, os.X_OK):
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        head = os.pread(fd, 4, 0)
    except OSError:
        return False
    finally:
        os.close(fd)
    return head == b"\x7fELF" or head.startswith(b"#!")


def _moves(moved: dict[int, int]) -> Callable[[], None]:
    """What the child runs before ``exec``: ``dup2`` of each of our fds to the number the
    target wants it at, lowest first. Safe only as the roles place them: every listen
    socket of the group at fds 3, 4, ... (``listen.settle``), a later program's above an
    earlier one's. A destination then holds another program's socket (not subprocess's
    error pipe, nor the target's other files, which the kernel gave numbers above them
    all), and a source is never overwritten before it is copied."""
    pairs = sorted(moved.items())

    def place() -> None:
        for theirs, ours in pairs:
            os.dup2(ours, theirs)  # the copy is inheritable; ours stays close-on-exec
    return place


def _chain(*steps: Callable[[], object] | None) -> Callable[[], None]:
    def run() -> None:
        for step in steps:
            if step is not None:
                step()
    return run


class Held(OSError):
    """A spawn refused before any exec: the slot's lock is held by what the last target
    left running (``spawner``)."""


def exec_error(argv: list[str], exc: OSError, user: str | None = None) -> str:
    """What a failed spawn says: subprocess names the working directory when it could not
    enter it (a target running as another user may not), else the program; a spawn
    refused before any exec (``Held``) says why. ``user``: who the target runs as, if not
    us (a program in root's home is not that user's to run)."""
    if isinstance(exc, Held):
        return str(exc.strerror)
    if exc.filename is not None and exc.filename != argv[0]:
        return f"cannot enter the working directory {exc.filename!r}: {exc.strerror or exc}"
    if exc.errno == errno.ENOEXEC:
        # binfmt_misc may run other formats: only the exec can tell, so only it says so.
        return (f"cannot execute {argv[0]!r}: {exc.strerror}: it is not a program this "
                "system runs, nor a script starting with a '#!' line; add one (e.g. "
                "'#!/bin/sh'), or give its interpreter (--exec)")
    if user is not None and exc.errno == errno.EACCES:
        return (f"cannot execute {argv[0]!r}: {exc.strerror}: the target runs as {user!r}, "
                "who may not run it (or enter a directory on its way); give a program that "
                "user may run (exec=, or --exec: /usr/bin/python3), or let the user reach it")
    return f"cannot execute {argv[0]!r}: {exc.strerror or exc}"
