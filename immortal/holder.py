"""The pipe holder: a process that keeps the targets' pipes readable while no supervisor
does.

A target's write to a pipe that nobody can read fails (EPIPE, or SIGPIPE kills it). The
daemon and the pump hold every read end, and each target is given its own read ends too,
so that its writes only block when both supervisors are killed together. A target that
closes every inherited fd when it starts (as many daemons do) drops those: killed together,
the two supervisors would take it down with them at its next write.

The holder, started by the daemon, holds the read ends besides, and each instance's journal,
and nothing else: not the lock, not a write end, no socket. The target's writes then block
on a full pipe, as any target's do, until the next start adopts it (``adoption``), which
also takes the journal from the holder: what the dead pump had read but not delivered is
delivered then, instead of dying with the two supervisors. It is ``sleep`` under the
title ``immortal: holder DIR``, not an interpreter: a fork of the daemon would come to own
every page the daemon writes to after the fork, and a fresh interpreter costs a dozen
times what ``sleep`` does (bench/notes.md). It makes no wake-up at all.

It carries the group's token, so that whatever ends the group's processes after its
supervisors died ends it too (``stop``, the next start). The searches for the target, and
what ``list`` and ``status`` show as left running, leave it out (``orphans.find``): it is
the group's own, as a supervisor is. It runs in a session of its own, so that a daemon
looking for the target a dying pump was spawning (``orphans.find_spawned``) never takes it
for that target. The daemon ends it with the group, and ends any other holder of the group
(a dead daemon's, or one beside an adopted target) once its own holds the files.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal

from . import orphans
from .orphans import TOKEN, holder_title, token

#: where a start adopting the target finds its journal in the holder (``KeptFiles.held``)
JOURNAL_FD = 3
#: where ``sleep`` is looked for (no PATH search: the daemon's PATH is the caller's)
_SLEEP = ("/bin/sleep", "/usr/bin/sleep")
#: as long as any ``sleep`` takes (BSD's has no "infinity")
_FOREVER = "2147483647"


def start(directory: str, held: list[int]) -> int:
    """Start a holder of ``held`` (``KeptFiles.held``); its pid. OSError if it cannot be started.

    Only from the daemon: a single-threaded process (a fork of one with threads could
    leave a lock held in the child).
    """
    program = next((path for path in _SLEEP if os.access(path, os.X_OK)), None)
    if program is None:
        raise FileNotFoundError(errno.ENOENT, "no sleep program found", _SLEEP[0])
    argv = [holder_title(directory), _FOREVER]
    env = {TOKEN: token(directory)}
    # Blocked across the fork: the child must not run the daemon's handlers (they write to
    # its wake-up pipe) before the exec resets them.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFAULTS + (signal.SIGCHLD,))
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        raise
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        return pid
    try:  # nothing of Python's runs here but what the exec needs
        os.setsid()
        _place(held)
        for number in _DEFAULTS:
            signal.signal(number, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        os.execve(program, argv, env)
    finally:
        os._exit(127)


#: what the roles ignore or handle, back to the defaults for ``sleep`` (SIGTERM ends it)
_DEFAULTS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE, signal.SIGXFSZ)


def _place(held: list[int]) -> None:
    """0, 1 and 2 on /dev/null, ``held`` at 3, 4, ... in order (inheritable), every other
    fd closed: a write end held here would keep a pipe open for writers after the group;
    the lock or the control socket would hide the daemon's death."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd != null:
            os.dup2(null, fd)
    # Copied above every source and destination first, so that no move overwrites a
    # file still to be moved.
    floor = max([3 + len(held), null, *held]) + 1
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor) for fd in held]
    for at, fd in enumerate(moved, start=3):
        os.dup2(fd, at, inheritable=True)
    os.closerange(3 + len(held), os.sysconf("SC_OPEN_MAX"))


def end_others(directory: str, keep: int | None) -> None:
    """End the group's other holders (a predecessor daemon's, or the one a group whose
    supervisors all died left beside the target this start adopts): ``keep`` holds the
    pipes now. Found by title among our processes, proved by start time; none off Linux,
    and none without titles (they then end with the group, as above)."""
    found = [(pid, started) for pid, started in orphans.holders(directory) if pid != keep]
    if found:
        orphans.end(found)
