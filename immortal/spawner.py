"""The target's spawn: never two targets of one instance, and never one nobody knows about.

A target is spawned holding ``target.lock`` (instance k > 0 of a group of several:
``target.K.lock``; in a group of several programs, in each program's own directory,
``programs/NAME``), the kernel's backstop: while any earlier target of that instance (or a
descendant that inherited its fd) lives, the lock is held and nothing new is spawned.
Before that, what a dead group left running is ended, once proved: on a new start every
process carrying the group's token (``orphans``), otherwise the target ``status.json``
recorded for that instance (pid and start time).

The daemon hears of every target (``tell``) before anything that can fail or take time: a
pump that dies after the spawn leaves a target the daemon hands to the next pump.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Collection
from pathlib import Path

from . import _linux, orphans, privileges, process, rolelog
from .listen import PROGRAM_ENV, activation
from .roles import Message, Spawning, Target
from .rolefds import Pipes
from .spec import Spec
from .state import read_json, running_targets, try_lock, wait_lock
from .streams import Streams

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any

CHANNEL_ENV = "IMMORTAL_CHANNEL_FD"  #: names the target's end of the message channel
ORPHAN_WAIT = 5.0  # how long a spawn waits for a killed orphan to let go of target.lock


def lock_name(instance: int, beside: bool = False) -> str:
    """The file whose lock a target of ``instance`` holds; ``beside``: the one its
    replacement in a rolling restart holds while the old target lives (``rollout``)."""
    base = "target" if instance == 0 else f"target.{instance}"
    return f"{base}.next.lock" if beside else f"{base}.lock"


class Spawner:
    """Spawns the targets of one program of a group (``spec``: its view), each instance's
    with its own pipes (``Streams``) and the program's listen sockets, telling the daemon
    through ``tell``."""

    def __init__(self, spec: Spec, tell: Callable[[Message], None],
                 listen: tuple[int, ...] = (), offset: int = 0) -> None:
        self.spec = spec
        self.directory = Path(spec.directory)
        self.tell = tell
        #: the program's listen sockets: the group's from fd 3 + ``offset`` on
        #: (``listen.settle`` put them all at fds 3, 4, ...)
        self.listen = listen
        self.offset = offset

    @property
    def locks(self) -> Path:
        """Where its targets' locks are: its program's directory, made if need be (a
        removed instance directory is put back without it)."""
        where = self.spec.program_dir
        if where != self.directory and not where.is_dir():
            where.mkdir(mode=0o700, parents=True, exist_ok=True)
        return where

    def spawn(self, instance: int, streams: Streams, fresh: bool,
              current: Collection[int]) -> process.Child:
        """A new target of ``instance``, on its ``streams``; ``fresh``: the first of a new
        start of the name, which first ends what its last run left (its supervisors are
        gone: we hold the group lock), found by token even if it closed target.lock.
        ``current``: our own targets, never ended."""
        if fresh:
            self.end_orphans(fresh=True, current=current)
        name = lock_name(instance)
        locks = self.locks
        lock = try_lock(locks / name)
        if lock is None and self.end_orphans(fresh=False, current=current, instance=instance):
            lock = wait_lock(locks / name, ORPHAN_WAIT)
        if lock is None:
            raise process.Held(errno.EBUSY, f"the last target's descendants still hold "
                               f"{name} (did it daemonize itself? run it in the "
                               "foreground): no new target while they live; tried again "
                               "as the restart policy says")
        try:
            return self._spawn_holding(instance, streams, lock)
        finally:
            os.close(lock)  # the target's copy holds it now

    def spawn_beside(self, instance: int, streams: Streams) -> process.Child:
        """A replacement for ``instance``'s target, spawned while it still runs (a rolling
        restart): on the slot's spare pipes (``spare``: its lines are told from the old
        target's) and the same sockets, holding the slot's second lock
        (``lock_name(instance, beside=True)``), so that a slot never has more than its
        target and one replacement. The daemon is not told: until the old target is gone
        the replacement is the pump's alone (``rollout``)."""
        assert streams.spare is not None
        name = lock_name(instance, beside=True)
        lock = try_lock(self.locks / name)
        if lock is None:
            raise OSError(errno.EBUSY, f"{name} is held: an earlier replacement of instance "
                          f"{instance}, or a descendant of it, still runs")
        try:
            return self._spawn_holding(instance, streams, lock, tell=False,
                                       pipes=streams.spare)
        finally:
            os.close(lock)

    def swap_locks(self, instance: int) -> None:
        """The old target of ``instance`` is gone: its replacement's lock becomes the
        slot's (a rename: the replacement's open file holds it under the new name)."""
        os.replace(self.locks / lock_name(instance, beside=True),
                   self.locks / lock_name(instance))

    def _spawn_holding(self, instance: int, streams: Streams, lock: int,
                       tell: bool = True, pipes: Pipes | None = None) -> process.Child:
        """``pipes``: the ones it writes to (out read, out write, err read, err write), if
        not the slot's."""
        out_r, out_w, err_r, err_w = pipes or (streams.out_r, streams.out_w, streams.err_r,
                                               streams.err_w)
        if len(self.listen) != len(self.spec.listen):
            raise OSError(errno.EBADF, f"{len(self.spec.listen)} listen sockets expected, "
                          f"{len(self.listen)} held")
        # The environment has one author per part: the group's (Spec.target_env), and this
        # spawn's (its instance, its sockets: listen.activation).
        given = activation(self.listen, self.spec.listen, instance, self.spec.name)
        env = given.environ(self.spec.target_env())
        if self.spec.program:
            env[PROGRAM_ENV] = self.spec.program
        else:  # a group of one, started by an outer group's program: not that program
            env.pop(PROGRAM_ENV, None)
        # Who it runs as, looked up at each spawn: a user removed since is a failed spawn.
        drop = privileges.resolve(self.spec.user, self.spec.group) \
            if self.spec.user is not None else None
        # The read ends too: if both supervisors die, the pipes outlive them while the
        # target lives, so its writes block on a full pipe instead of killing it (EPIPE).
        keep = [lock, out_r, err_r]
        moved: dict[int, int] = {}
        for theirs, ours in given.fds.items():
            if ours != theirs + self.offset:
                raise OSError(errno.EBADF, f"listen socket {ours} is not at fd "
                              f"{theirs + self.offset}")
            if theirs != ours:  # a later program's: moved down in the child (process.spawn)
                moved[theirs] = ours
            keep.append(theirs)
        if streams.channel:
            env[CHANNEL_ENV] = str(streams.channel[1])
            keep.append(streams.channel[1])
        # 'spawning' covers a death inside the spawn itself (see orphans.find_spawned).
        program = self.spec.program
        if tell:
            self.tell(Spawning(_linux.boot_ticks(), instance, program))
        try:
            child = process.spawn(self.spec.command(), env=env, cwd=self.spec.cwd,
                                  umask=self.spec.umask, stdout=out_w,
                                  stderr=err_w, pass_fds=tuple(keep),
                                  pid_variable="LISTEN_PID" if given.pid else None,
                                  drop=drop, moved=moved)
        except OSError:
            if tell:
                self.tell(Spawning(None, instance, program))
            raise
        if tell:
            self.tell(Target(child.pid, child.started_wall, instance, program))
        return child

    def end_orphans(self, fresh: bool, current: Collection[int], instance: int = 0) -> bool:
        """Kill what supervisors that all died left running (after proving it); whether
        anything was.

        ``fresh`` (a new start of the group): every process carrying the group's token,
        each proved by its start time (``orphans``), but ``current``. Otherwise, or where
        no token can be read, the target of ``instance`` that ``status.json`` recorded,
        proved by pid and start time.
        """
        found = [(pid, started) for pid, started in orphans.find(self.directory)
                 if pid not in current] if fresh else []
        if not found:
            previous = read_json(self.directory / "status.json") or {}
            pid, started = _recorded(previous, instance, self.spec.program)
            if not pid or pid in current:
                return False
            if started is None or not _linux.is_alive(pid, started):
                return False
            found = [(pid, started)]
        pids = " ".join(str(pid) for pid, _ in found)
        rolelog.report("orphan", f"immortal: pump: killing {pids} left running by a dead "
                       "group (supervisors gone)\n")
        return bool(orphans.end(found, ORPHAN_WAIT))


def _recorded(status: dict[str, Any], instance: int,
              program: str = "") -> tuple[int | None, int | None]:
    """The pid and start time of ``instance``'s target (of ``program``) as ``status.json``
    recorded it."""
    for entry in status.get("instances") or ():
        if isinstance(entry, dict) and entry.get("instance") == instance \
                and (entry.get("program") or "") == program:
            return entry.get("pid"), entry.get("start_time")
    if status.get("instances") or instance != 0 or program:
        return None, None
    pids = running_targets(status)
    return (pids[0] if pids else None), (status.get("start_times") or {}).get("target")
