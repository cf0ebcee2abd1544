"""How the roles hold on to their processes: pidfds (exit notification, reaping and signals
that cannot reach a process that reused the pid) and the child subreaper (orphaned
descendants come back to be reaped)."""

from __future__ import annotations

import os

from .clib import libc

#: Whether ``pidfd_open`` gives exit notification that ``wait_pidfd`` can collect.
#: Without it (off Linux, or Linux before 5.3) a child's death is learnt from SIGCHLD.
HAVE_PIDFD = hasattr(os, "pidfd_open") and hasattr(os, "P_PIDFD")
_PR_SET_CHILD_SUBREAPER = 36


def pidfd_open(pid: int) -> int:
    """An fd that becomes readable when ``pid`` ends, and names that process only, even
    once its pid is reused; ProcessLookupError if there is no such process, OSError if the
    kernel refuses one.

    Without pidfds: -1; the caller then polls, or learns of the death from SIGCHLD.
    """
    if not hasattr(os, "pidfd_open"):
        return -1
    return os.pidfd_open(pid)


def wait_pidfd(fd: int) -> os.waitid_result | None:
    """Reap the child of the pidfd ``fd`` if it has ended, without blocking; None if it
    runs on.

    Without pidfds: never called (``HAVE_PIDFD`` is False); callers use ``waitpid``.
    """
    return os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG)


def signal_pidfd(fd: int, pid: int, number: int) -> None:
    """Send signal ``number`` to the process of the pidfd ``fd`` (which cannot be another
    that reused its pid).

    Without a pidfd (``fd`` is -1): ``kill(pid)``, so a pid reused between the caller's
    check and the signal is not excluded.
    """
    if fd >= 0:
        import signal

        signal.pidfd_send_signal(fd, number)
    else:
        os.kill(pid, number)


def set_subreaper() -> bool:
    """Make orphaned descendants come back to this process, as to init: True if done.

    Off Linux: False, and orphans go to init.
    """
    library = libc()
    return library is not None and library.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
