"""A group run in the foreground: the command's own process becomes the group's daemon.

``immortal run --foreground`` is for whoever supervises immortal itself: systemd (a
``Type=notify`` service whose main process is immortal), a container (immortal as PID 1),
a terminal; ``start_group`` runs a group of several programs so (as ``groupstart``'s
takes them). Everything ``start()`` checks is checked here, in the caller, in the same order
(``launcher``: the arguments, the monitors, the directory, the lock, an orphan to adopt,
the listen sockets, ``spec.json``). Then, instead of a detached first role (a double
fork), this process ``exec``s the daemon role (``python -m immortal._role``) in place: the
same pid (systemd's ``MAINPID``, the container's PID 1), no fork, a fresh interpreter
(whatever threads or files the caller had are gone; the listen sockets land at fds 3,
4... as in any role). The daemon forks its pump as always, so a pump's death is survived;
it stays in the foreground until the group ends, and its exit code says how
(``fgdaemon``). The control socket, ``status``, ``stop``, ``signal``... work as for any
group.

The signals the daemon takes are blocked across the ``exec`` (a blocked signal stays
pending), so that one sent while the new interpreter starts waits for its handler: a
PID 1 would lose it otherwise (the kernel drops a signal to a namespace's init that has
no handler).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from . import standby
from .errors import InvalidSpec, StartError
from .groupstart import plan_group
from .launcher import plan
from .prepare import prepared
from .request import build
from .roles import Fds, RoleArgs, role_command
from .spec import Spec, Strategy

#: what the daemon takes in the foreground, blocked from the exec until it does
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def start(file: str | os.PathLike[str], args: Sequence[str] | None = None, *,
          console: bool | None = None, **keywords: Any) -> NoReturn:
    """Run ``file`` as ``start()`` would, with ``start()``'s keyword arguments, but in this
    process, in the foreground: it becomes the group's daemon and ends with the group
    (``sys.exit`` with the code ``fgdaemon.exit_code`` gives). Never returns. Bad input
    raises as ``start()`` does, before anything is created. ``console``: echo the
    targets' output on this process's stdout and stderr too (default: when stdout is a
    terminal). The strategy is ``daemon`` (the only one run in the foreground)."""
    strategy = keywords.pop("strategy", Strategy.DAEMON)
    if Strategy.parse(strategy) != Strategy.DAEMON:
        raise InvalidSpec(f"'strategy' {str(strategy)!r} cannot run in the foreground: the "
                          "foreground runs the daemon strategy in this process "
                          "('development' is in the foreground already)")
    if keywords.get("capture"):
        raise InvalidSpec("'capture' needs strategy='development'; in the foreground the "
                          "output goes to the monitors (and the console)")
    run(plan(build(file, args, **keywords)), console=console)


def start_group(name: str, programs: Mapping[str, Mapping[str, Any]], *,
                start_timeout: float = 30.0, console: bool | None = None) -> NoReturn:
    """Run a group of several programs as ``start_group()`` would (``programs`` as it
    takes them), but in this process, in the foreground, as ``start`` does a group of one:
    it becomes the group's daemon, says ``READY=1`` once every instance of every program is
    ready, and ends with the group. Never returns; bad input raises before anything is
    created."""
    run(plan_group(name, programs, Strategy.DAEMON, start_timeout), console=console)


def run(spec: Spec, *, console: bool | None = None) -> NoReturn:
    """Run the group ``spec`` describes (a checked ``Spec``, as ``launcher.plan`` or
    ``plan_group`` makes it, or one recorded in a ``spec.json``) in this process, in the
    foreground: take its lock, bind its sockets, write ``spec.json``, then ``exec`` the
    daemon role. Never returns; raises before the ``exec`` as ``start()`` would."""
    if spec.strategy != Strategy.DAEMON:
        raise InvalidSpec(f"'strategy' {spec.strategy.value!r} cannot run in the foreground")
    if console is None:
        console = _is_terminal(1)
    for waiting in standby.pending_all():
        waiting.cancel()  # 'immortal run' prepared one: this process is the role instead
    with prepared(spec) as (spec, lock, adopt, sockets, leftover):
        fds = Fds(lock=lock.fd, listen=sockets or None, console=_console() if console else None)
        args = RoleArgs("daemon", spec.directory, fds=fds, adopt=adopt, foreground=True,
                        leftover=leftover)
        _exec(args)
    raise AssertionError("unreachable")  # _exec never returns


def _exec(args: RoleArgs) -> NoReturn:
    """This process becomes the daemon role: same pid, a fresh interpreter."""
    for fd in args.fds.numbers():
        os.set_inheritable(fd, True)
    argv = role_command(args)
    here = os.getcwd()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.chdir("/")  # as a detached daemon: it holds no directory of the caller's
        os.execve(argv[0], argv, standby.role_env())
    except OSError as exc:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        os.chdir(here)
        raise StartError(f"cannot run the daemon in this process: cannot execute "
                         f"{argv[0]!r}: {exc.strerror or exc}") from None


def _console() -> tuple[int, int] | None:
    """Copies of our stdout and stderr for the pumps' echo; None if either is closed."""
    try:
        out = os.dup(1)
    except OSError:
        return None
    try:
        return out, os.dup(2)
    except OSError:
        os.close(out)
        return None


def _is_terminal(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False
