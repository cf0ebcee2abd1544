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
import os
import signal

from . import _linux, orphans
from .orphans import TOKEN, holder_title, token

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any

#: set to "0" in the environment of the process that starts a group (the daemon inherits
#: it) to run the group without a pipe holder: a process fewer, and a target that closes
#: every inherited fd then dies at its next write when both supervisors are killed together.
ENV = "IMMORTAL_PIPE_HOLDER"


def enabled() -> bool:
    """Whether this daemon's groups get a pipe holder (``ENV``): yes unless it says "0"."""
    return os.environ.get(ENV, "1") != "0"


#: where a start adopting the target finds its journal in the holder (``KeptFiles.held``)
JOURNAL_FD = 3
#: and the read ends of the pipes that journal goes with (stdout's, stderr's)
PIPE_FDS = (4, 5)
#: where ``sleep`` is looked for (no PATH search: the daemon's PATH is the caller's)
_SLEEP = ("/bin/sleep", "/usr/bin/sleep")
#: as long as any ``sleep`` takes (BSD's has no "infinity")
_FOREVER = "2147483647"


def start(directory: str, held: list[int]) -> int:
    """Start a holder of ``held`` (``KeptFiles.held``); its pid. OSError if it cannot be
    started.

    By ``posix_spawn``: no Python runs in the child, and it never wears the daemon's
    title (a fork would, until its exec: a census of the group's processes would see two
    daemons).
    """
    program = next((path for path in _SLEEP if os.access(path, os.X_OK)), None)
    if program is None:
        raise FileNotFoundError(errno.ENOENT, "no sleep program found", _SLEEP[0])
    return os.posix_spawn(program, [holder_title(directory), _FOREVER],
                          {TOKEN: token(directory)}, file_actions=_placed(held),
                          setsid=True, setsigmask=(), setsigdef=_DEFAULTS)


#: what the roles ignore, back to the defaults for ``sleep`` (SIGTERM ends it; a handled
#: signal is at its default after any exec)
_DEFAULTS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _placed(held: list[int]) -> list[tuple[Any, ...]]:
    """The child's file actions: 0, 1 and 2 on /dev/null, ``held`` at 3, 4, ... in order,
    every other inheritable fd of ours closed (the others close at the exec): a write end
    held there would keep a pipe open for writers after the group; the lock or the
    control socket would hide the daemon's death."""
    listed = _linux.open_fds()
    if listed is None:  # not listed: every fd the listing would give, up to the limit
        listed = list(range(os.sysconf("SC_OPEN_MAX")))
    ours = [fd for fd in listed if fd > 2 and _inheritable(fd)]
    # Copied above every source and destination first, so that no move overwrites a
    # file still to be moved.
    above = max([2 + len(held), *held, *ours]) + 1
    actions: list[tuple[Any, ...]] = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDWR, 0),
                                      (os.POSIX_SPAWN_DUP2, 0, 1), (os.POSIX_SPAWN_DUP2, 0, 2)]
    actions += [(os.POSIX_SPAWN_DUP2, fd, above + i) for i, fd in enumerate(held)]
    actions += [(os.POSIX_SPAWN_DUP2, above + i, 3 + i) for i in range(len(held))]
    actions += [(os.POSIX_SPAWN_CLOSE, above + i) for i in range(len(held))]
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in ours if fd >= 3 + len(held)]
    return actions


def _inheritable(fd: int) -> bool:
    try:
        return os.get_inheritable(fd)
    except OSError:
        return False  # the listing's own fd, closed already


#: A test hook, unset in use: ``"POINT PATH"``. The role that reaches ``POINT`` of a start
#: (the daemon: ``"pump"``, its first pump forked; ``"others"``, about to end the other
#: holders; the pump: ``"ready"`` and ``"answer"``, ``answer.StartAnswer``) and removes the
#: file ``PATH`` stops itself (SIGSTOP) there, so that a test can kill it (and the other
#: role) at that instant, whatever the other does meanwhile.
PAUSE = os.environ.get("IMMORTAL_TEST_PAUSE")


def pause_at(point: str) -> None:
    """The test hook above: unset in use."""
    name, _, path = (PAUSE or "").partition(" ")
    if name != point:
        return
    try:
        os.unlink(path)
    except OSError:
        return
    os.kill(os.getpid(), signal.SIGSTOP)


def end_others(directory: str, keep: int | None) -> None:
    """End the group's other holders (a predecessor daemon's, or the one a group whose
    supervisors all died left beside the target this start adopts): ``keep`` holds the
    pipes now. Found by title among our processes, proved by start time; none off Linux,
    and none without titles (they then end with the group, as above)."""
    found = [(pid, started) for pid, started in orphans.holders(directory) if pid != keep]
    if found:
        orphans.end(found)
