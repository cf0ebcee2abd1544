"""A new start of a group adopts the target its dead supervisors left running.

When the daemon and the pump of a group both die, the target runs on (it holds its pipes'
read ends, so its writes block rather than fail). The next start of the name takes the
group lock (they held it, so they are gone), and then, before ``spec.json`` is rewritten:

1. ``decide`` (in the caller, lock held: two starts of one name never both look): the
   target ``status.json`` recorded, proved alive by pid plus kernel start time and carrying
   the group's token (``orphans``), is adopted if the new spec runs the same command
   (argv, cwd, umask, user; a changed environment applies from its next restart). A changed
   command ends it instead, as does the ``development`` strategy (its group lives as long
   as its caller): the first pump ends every token carrier before its first spawn, and
   the role log says why.
2. ``claim`` (in the first role, daemon or unattached pump): the target is proved again,
   and its stdout and stderr pipes are opened anew through ``/proc/PID/fd/1`` and ``2``
   (``_linux.reopen_pipe``): the same pipes, so every line still in them comes through.
   Where that fails (off Linux, the target gone, fd 1 or 2 no longer a pipe) the role
   drops the adoption: the target is ended and a new one spawned, as without adoption,
   and what the holder kept is taken as below.

A group of several instances (``workers`` > 1), or one whose last run had several, adopts
nothing: its first pump ends every token carrier, as for a changed command.

A start that adopts no target (it died with its supervisors, or is ended now) still takes
the pipes and the journal the dead group's pipe holder kept, where the monitors are the
same (``leftover``): what the dead pump had read but not handed to every monitor, and
what the target wrote after its pump died, come first, each monitor from its own mark.
The new target writes after them in the same pipes (a last line the dead one left
without its newline is joined to the new one's first). A group of several instances
takes each instance's for the same instance of the new start; one the new start does not
run (fewer ``workers`` of a group of one program) leaves its lines untaken, and a group
of several programs takes them only with the same programs, each with as many instances.

The adopted target is not a child of ours: it is watched through a pidfd, and its exit
status is unknown. Its message channel (``channel=True``) is lost: its peer end died with
the supervisors, so its sends fail; a target spawned later by the group gets a new one.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from . import _linux, holder, orphans, relay, rolelog
from .errors import ImmortalError
from .events import PUMP_START
from .records import replace
from .keptfiles import wanted
from .rolefds import Files
from .roles import Adopt, Key, RoleArgs
from .spec import Spec, Strategy
from .state import FINAL_STATES, STALE, read_json

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any


def decide(spec: Spec) -> Adopt | None:
    """The orphan target of ``spec``'s group to adopt, or None (none, or one to end).

    Called with the group lock held, before ``spec.json`` is rewritten: the old one tells
    what the orphan runs."""
    if spec.strategy == Strategy.DEVELOPMENT:
        return None  # its group lives as long as its caller: the orphan is ended
    if spec.workers > 1 or spec.several:
        return None  # a group of several instances ends its orphans (none is adopted)
    directory = Path(spec.directory)
    try:
        status = read_json(directory / "status.json") or {}
        old = read_json(directory / "spec.json")
    except (OSError, ValueError, ImmortalError):  # unreadable, or not ours: not believed
        return None
    found = _orphan(directory, status, old)
    if found is None:
        return None
    pid, ticks = found
    before, why = _runs_the_same(spec, old)
    if before is None:
        note(spec, f"immortal: start: the target {pid} left running by a dead group is "
             f"ended, not adopted: {why}\n")
        return None
    if before.target_env() != spec.target_env():
        note(spec, f"immortal: start: the target {pid} is adopted with the environment it "
             "was started with; this run's applies from its next restart\n")
    same = before.to_json()
    return Adopt(pid, _wall(ticks), ticks=ticks,
                 journal=same["monitors"] == spec.to_json()["monitors"])


def _orphan(directory: Path, status: dict[str, Any],
            old: dict[str, Any] | None) -> tuple[int, int] | None:
    """The dead group's living target, as (pid, start time): the one ``status.json``
    names, proved by its start time and the group's token; else the one its pump spawned
    and had not written there yet when both supervisors died (the status follows a spawn
    by a moment). None if none, or no proof it is the group's (no token: not Linux).
    A group that ended by itself (a stop, its restarts given up) ended its targets: no
    search of /proc at every start of such a group."""
    if status.get("state") in FINAL_STATES and status.get("reason") != STALE:
        return None
    carriers = orphans.find(directory)
    pid = (status.get("pids") or {}).get("target")
    ticks = (status.get("start_times") or {}).get("target")
    if isinstance(pid, int) and isinstance(ticks, int) and (pid, ticks) in carriers \
            and _linux.is_alive(pid, ticks):
        return pid, ticks
    try:
        before = Spec.from_json(old) if old else None
    except (TypeError, ValueError, KeyError):
        return None
    if before is None or before.workers > 1 or before.several:
        return None
    command = before.command()
    # A target leads a process group of its own and runs the group's command; what it
    # starts carries the token too, but stays in its group (or runs another program).
    # The oldest: a descendant is younger than the target that started it.
    leaders = sorted((started, pid) for pid, started in carriers
                     if _leads_group(pid) and _linux.command_line(pid) == command)
    return (leaders[0][1], leaders[0][0]) if leaders else None


def _leads_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except OSError:
        return False


def leftover(spec: Spec, old: dict[str, Any]) -> bool:
    """Whether a start that adopts no target (none was found, or the one found died before
    the first role claimed it) is to take the journals its dead group's pipe holder kept
    (``claim``): with the same monitors (a journal's ledger holds each one's
    mark by its place in the list); a group of several programs, with the same programs,
    each with as many instances (the holder keeps each instance's files in their order).

    Its target died with its supervisors, or is ended now: what its pump had read but not
    handed to every monitor (killed in the middle of a block, the first monitors had it,
    the others not) is in that journal, and what it wrote after its pump died is in its
    pipes; both are delivered before the new target's lines, each monitor from its own
    mark. Without them those lines were lost."""
    if spec.strategy == Strategy.DEVELOPMENT or not old:
        return False
    try:
        before = Spec.from_json(old)
    except (TypeError, ValueError, KeyError):
        return False
    if _layout(before, spec.several) != _layout(spec, spec.several):
        return False
    # A group that ended by itself (a stop, or its restarts given up) ended its holder:
    # no search of /proc for one at every such start.
    try:
        status = read_json(Path(spec.directory) / "status.json") or {}
    except (OSError, ValueError, ImmortalError):
        return True
    return not (status.get("state") in FINAL_STATES and status.get("reason") != STALE)


def _layout(spec: Spec, counted: bool) -> list[tuple[Any, ...]]:
    """What the journals of ``spec``'s instances depend on: each program's name and
    monitors, and with ``counted`` its number of instances (a group of one program takes
    as many of its dead instances' files as it runs)."""
    return [(view.program, view.monitors, view.workers if counted else None)
            for view in spec.each()]


def _runs_the_same(spec: Spec, old: dict[str, Any] | None) -> tuple[Spec | None, str]:
    """The ``old`` spec.json if ``spec`` runs the same command; else None, and why not."""
    if old is None:
        return None, "its spec.json is gone"
    try:
        before = Spec.from_json(old)
    except (TypeError, ValueError, KeyError) as exc:
        return None, f"its spec.json cannot be read ({exc})"
    # Not the environment: a run from another shell (another OLDPWD, SSH_TTY...) is the
    # same program, and ending it for that would be the one thing adoption avoids. The new
    # environment applies from its next restart (the role log says so).
    if before.several:
        return None, "it ran a group of several programs"
    if before.listen or spec.listen:
        # Its sockets would have to be taken from it (pidfd_getfd: ptrace rights), and a
        # new start binds its own: it is ended before they are bound (launcher).
        return None, "a group that listens binds its sockets anew"
    for what, then, now in (("command", before.command(), spec.command()),
                            ("cwd", before.cwd, spec.cwd),
                            ("umask", before.umask, spec.umask),
                            ("user", (before.user, before.group), (spec.user, spec.group))):
        if then != now:
            return None, f"its {what} changed"
    return before, ""


def _wall(ticks: int) -> float:
    """The wall-clock time of a kernel start time (clock ticks since boot)."""
    return time.time() - (_linux.boot_ticks() - ticks) / os.sysconf("SC_CLK_TCK")


def note(spec: Spec, text: str) -> None:
    """A line in the first role's log, written by the caller before the role starts."""
    log = "daemon.log" if spec.strategy == Strategy.DAEMON else "pump.log"
    try:
        with open(Path(spec.directory) / log, "a") as handle:
            handle.write(text)
    except OSError:
        pass  # only a note: the start goes on


def claim(args: RoleArgs, spec: Spec) -> RoleArgs:
    """``args`` of a first role with the adopted target's pipes opened as its ``out`` and
    ``err``; without the adoption if they cannot be (the target is then ended and a new
    one spawned); or, adopting none, with the files of ``spec``'s instances the dead
    group's pipe holder kept (``leftover``). Any other ``args`` are returned as they are."""
    adopt = args.adopt
    if adopt is None and args.leftover and args.why == PUMP_START \
            and not args.fds.instances():
        return _claim_journal(args, sorted(wanted(spec)))
    if adopt is None or args.why != PUMP_START or args.fds.out or adopt.ticks is None:
        return args
    try:
        if not _linux.HAVE_PIDFD:
            raise OSError("no pidfd to learn when it ends (it is not our child)")
        out, err = _reopen(adopt.pid, adopt.ticks)
    except OSError as exc:
        rolelog.report("adopt", f"immortal: {args.role}: cannot adopt the running target "
                       f"{adopt.pid} ({exc}); it is ended and a new one spawned\n")
        # Dead since the caller chose it (or not adoptable): what it wrote that no monitor
        # got is in the holder's pipes, taken as for a start that found no target.
        return claim(replace(args, adopt=None), spec)
    journal = _held_journal(args.dir, out[0], err[0]) if adopt.journal else None
    rolelog.report("adopt", f"immortal: {args.role}: adopted the running target "
                   f"{adopt.pid} left by a dead group"
                   f"{', and its journal' if journal is not None else ''}\n")
    return replace(args, fds=replace(args.fds, out=out, err=err, journal=journal))


def _claim_journal(args: RoleArgs, keys: list[Key]) -> RoleArgs:
    """``args`` with the journals and the pipes of the group's newest pipe holder
    (``leftover``), each instance's for the same instance (``keys``, in the holder's
    order): each new target writes after what the dead one left in them. Without
    ``leftover`` if no holder keeps them."""
    found = sorted(orphans.holders(args.dir), key=lambda each: (each[1], each[0]),
                   reverse=True)
    for pid, started in found:
        files = _held_files(pid, started, len(keys))
        if not files:
            continue
        rolelog.report("adopt", f"immortal: {args.role}: took the pipes and the journal"
                       f"{'s' if len(files) > 1 else ''} of the dead group's pipe holder {pid}: "
                       "its last targets' undelivered lines come first\n")
        return replace(args, fds=args.fds.with_instances(dict(zip(keys, files))))
    # The dead group's last lines, if it left any, are not delivered: said, so that the
    # loss is seen (its holder died with it, or keeps files that are not its own).
    shown = ", ".join(str(pid) for pid, _ in found) or "none"
    rolelog.report("adopt", f"immortal: {args.role}: the dead group left no pipe holder "
                   f"whose files could be taken (holders found: {shown}): what its last "
                   "targets wrote and no monitor got is not delivered\n")
    return replace(args, leftover=False)


def _held_files(pid: int, started: int, count: int) -> list[Files]:
    """The files of the first ``count`` instances the pipe holder ``pid`` keeps (each its
    journal and its pipes' read ends, from ``holder.JOURNAL_FD`` on: ``KeptFiles.held``),
    opened: (out read, out write, err read, err write, journal) each; as many as it
    keeps, from the first, up to one that cannot be opened."""
    files: list[Files] = []
    step = 1 + len(holder.PIPE_FDS)
    for k in range(count):
        at = holder.JOURNAL_FD + k * step
        journal = _journal_of(pid, started, at=at)
        if journal is None:
            break
        opened: list[int] = []
        try:
            out = _linux.reopen_pipe(pid, at + 1)
            opened.extend(out)
            err = _linux.reopen_pipe(pid, at + 2)
        except OSError:
            for fd in (*opened, journal):
                os.close(fd)
            break
        files.append((*out, *err, journal))
    return files


def _journal_of(pid: int, started: int, pipes: tuple[int, int] | None = None,
                at: int = holder.JOURNAL_FD) -> int | None:
    """The journal the pipe holder ``pid`` (started at ``started``) keeps at fd ``at``,
    opened; None if it is not one (or, with ``pipes``, not kept beside pipes of those
    inodes)."""
    path = f"/proc/{pid}/fd/{at}"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        ours = (os.readlink(path).startswith("/memfd:immortal-journal")
                and os.fstat(fd).st_size == relay.SIZE
                and (pipes is None
                     or tuple(os.stat(f"/proc/{pid}/fd/{number}").st_ino
                              for number in holder.PIPE_FDS) == pipes)
                and _linux.process_start_time(pid) == started)
    except OSError:
        ours = False
    if ours:
        return fd
    os.close(fd)
    return None


def _held_journal(directory: str, out: int, err: int) -> int | None:
    """The dead group's journal, opened through its pipe holder (``holder``): the lines
    its pump had read but not delivered are delivered by the new one. None if no holder
    of the group holds the journal of the pipes ``out`` and ``err`` (the target's, as
    reopened).

    Only the journal held beside those very pipes, by the newest such holder: an older
    holder (a group whose target died with its supervisors, and whose successor's daemon
    died before it ended that holder) holds another journal, whose lines are not this
    target's and whose taking would lose what the dead pump had read."""
    pipes = (os.fstat(out).st_ino, os.fstat(err).st_ino)
    found = sorted(orphans.holders(directory), key=lambda each: (each[1], each[0]),
                   reverse=True)
    for pid, started in found:
        fd = _journal_of(pid, started, pipes)
        if fd is not None:
            return fd
    return None


def _reopen(pid: int, ticks: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The target's stdout and stderr pipes, each (read end, write end), opened while it
    is proved to be the process that started at ``ticks``, before and after."""
    if _linux.process_start_time(pid) != ticks:
        raise ProcessLookupError(f"process {pid} is gone")
    opened: list[int] = []
    try:
        out = _linux.reopen_pipe(pid, 1)
        opened.extend(out)
        err = _linux.reopen_pipe(pid, 2)
        opened.extend(err)
        if os.fstat(out[0]).st_ino == os.fstat(err[0]).st_ino:
            raise OSError(f"process {pid} writes stdout and stderr to one pipe: not ours")
        if _linux.process_start_time(pid) != ticks:
            raise ProcessLookupError(f"process {pid} ended while its pipes were opened")
    except BaseException:
        for fd in opened:
            os.close(fd)
        raise
    return out, err


def watch(pid: int) -> int:
    """An fd that becomes readable when the adopted target ``pid`` ends: its pidfd (see
    ``claim``: there are pidfds). A target gone already gets an fd readable at once (a
    pipe whose write end is closed), so its end is handled as any other."""
    try:
        return _linux.pidfd_open(pid)
    except OSError:
        read, write = os.pipe()
        os.close(write)
        return read
