"""The daemon's pump, started as a fork of the daemon rather than a fresh interpreter.

The child leaves the daemon's signals, files and exit functions behind and runs
``pump.main``; the parent keeps a :class:`ForkedPump` (a pid, and how it ended).
"""

from __future__ import annotations

import atexit
import gc
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from . import _linux, jobstop, plainsignals, rolelog
from .exiting import finish, leave
from .roles import RoleArgs
from .spec import Spec


class ForkedPump:
    """The pump as the daemon sees it: a pid, and how it ended."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def send_signal(self, number: int) -> None:
        if self.returncode is None:  # not reaped yet, so the pid is still the pump's
            os.kill(self.pid, number)


_frozen = False  # gc.freeze() done, before the first fork
_ROLE_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD,
                 signal.SIGCONT, *jobstop.SIGNALS)


class Unwind(BaseException):
    """Raised in a forked pump whose daemon died, to become the daemon: it goes up through
    the frames of the daemon it was forked from (never running their clean-up), to
    ``succession``, which runs the new daemon at the top of the stack. Run where the pump
    was called instead, each daemon death would nest a daemon in the last one's frames,
    keeping its objects and their files (pointed at /dev/null) for good: a group whose
    daemon kept dying would run out of fds."""

    def __init__(self, spec: Spec, args: RoleArgs) -> None:
        super().__init__(spec, args)
        self.spec = spec
        self.role_args = args


def _unwind(spec: Spec, args: RoleArgs) -> int:
    raise Unwind(spec, args)


def fork_pump(spec: Spec, args: RoleArgs, log: Path) -> ForkedPump:
    """Start the pump as a fork of this process, not as a fresh interpreter; if its daemon
    dies, the pump becomes the daemon through ``Unwind``.

    The daemon is ours and single-threaded, so a fork is safe here (never in the caller,
    which may have threads). It saves an interpreter's start-up and the imports the two
    share, and their pages count half to each in PSS. ``pump`` is imported before the
    fork for the same reason; the monitor is imported only in the child.
    """
    from . import pump

    global _frozen
    if not _frozen:
        _preload_builtin_monitors(spec)
        # Once, before the first fork: the child's collector then leaves the pages of the
        # objects both processes share alone (copy-on-write keeps them shared).
        gc.freeze()
        _frozen = True
    sys.stderr.flush()
    # Blocked across the fork: the child must not run our handlers (they would write to
    # our wake-up pipe), and it takes the default actions until the pump sets its own.
    previous = plainsignals.mask(signal.SIG_BLOCK, _ROLE_SIGNALS)
    _linux.import_title()  # shared with the pump, which takes its title at once
    try:
        pid = os.fork()
    except OSError:
        plainsignals.mask(signal.SIG_SETMASK, previous)
        raise
    if pid:
        plainsignals.mask(signal.SIG_SETMASK, previous)
        return ForkedPump(pid)
    _be_the_pump(pump.main, spec, args, log)
    raise AssertionError("unreachable")


def _be_the_pump(run: Callable[[Spec, RoleArgs, Callable[[Spec, RoleArgs], int]], int],
                 spec: Spec, args: RoleArgs, log: Path) -> None:
    """The forked child: run the pump (``run``: ``pump.main``), then exit, never returning
    into the daemon's loop; unless it becomes the daemon (``Unwind``, raised on)."""
    code = 1
    unwind = False
    try:
        signal.set_wakeup_fd(-1)
        for number in _ROLE_SIGNALS:
            plainsignals.handle(number, plainsignals.SIG_DFL)
        _become_pump_fds(args.fds.numbers(), log)
        _linux.set_title(spec.title("pump"))  # its argv is still ours
        atexit._clear()  # the daemon's exit functions are not the pump's
        code = run(spec, args, _unwind)
        finish()
    except Unwind:
        unwind = True
        raise  # up to succession: this process is the daemon now
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback  # noqa: PLC0415 - a failure's path: not loaded in every daemon

        traceback.print_exc()
    finally:
        if not unwind:
            leave(code)  # never into the daemon's loop, nor any of its clean-up


def _preload_builtin_monitors(spec: Spec) -> None:
    """Import the group's built-in monitors (ours, like this module) before the first fork,
    so that their code is shared with every pump instead of copied into each. Imported
    only, never called; any other monitor is imported by the pump alone."""
    import importlib

    from . import entrypoints
    from .hookimpls import ENTRY_POINT_GROUP

    for name, _ in (monitor for view in spec.each() for monitor in view.monitors):
        value = name if ":" in name else entrypoints.find(ENTRY_POINT_GROUP, name)
        module = (value or "").partition(":")[0].strip()
        if module.startswith("immortal_monitors."):
            try:
                importlib.import_module(module)
            except Exception:  # the pump reports it, as it would without this
                pass


def _become_pump_fds(keep: list[int], log: Path) -> None:
    """stdin and stdout on /dev/null, stderr on pump.log, and none of the daemon's other
    files: a pump holding the daemon's end of the lifeline, or its control socket, would
    hide the daemon's death from itself and from clients.

    Each of the daemon's other fds is pointed at /dev/null rather than closed: Python
    objects of the daemon's (and, in a pump that became the daemon, a monitor's global
    state, such as the handlers the ``logging`` monitor configured) still own those
    numbers here. Closed, a number would be reused by the pump's own pipes and sockets,
    and such an object closing "its" fd later (a monitor reconfiguring logging) would close
    the pump's lifeline instead: the pump would take that for its daemon's death.
    """
    null = os.open(os.devnull, os.O_RDWR)
    err = rolelog.open_for(log)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(err, 2)
    kept = {0, 1, 2, *keep}
    open_fds = _linux.open_fds()
    if open_fds is None:  # not listed: close the gaps between the kept ones, up to the limit
        low = 3
        for fd in sorted(kept):
            if fd >= low:
                os.closerange(low, fd)
                low = fd + 1
        os.closerange(low, os.sysconf("SC_OPEN_MAX"))
        return
    for fd in open_fds:
        if fd not in kept and fd not in (null, err):
            try:
                os.fstat(fd)
            except OSError:
                continue  # the listing's own fd, closed already
            os.dup2(null, fd, inheritable=False)
    os.close(null)
    os.close(err)
