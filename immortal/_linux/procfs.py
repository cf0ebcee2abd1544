"""What /proc tells of processes: start times (and the clock they compare with), parents,
states, children and descendants, threads, open fds, environments, locks and resident
memory."""

from __future__ import annotations

import os
import time


def _stat(pid: int | str) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    return data[data.rindex(b")") + 2:].split()


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` in clock ticks, or None if it does not exist.

    A pid together with its start time names one process for good: pids are reused, start
    times of a reused pid differ.

    Without /proc: None for every pid.
    """
    fields = _stat(pid)
    if fields is None or fields[0] == b"Z":
        return None  # gone, or a zombie: it has exited and only waits to be reaped
    return int(fields[19])


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid``, or None if it does not exist.

    Without /proc: None for every pid.
    """
    fields = _stat(pid)
    return None if fields is None else int(fields[1])


def is_alive(pid: int | None, start_time: int | None) -> bool:
    """True if ``pid`` is still the very process that had ``start_time`` (any process of
    that pid when ``start_time`` is None); a zombie is not alive.

    Without /proc: whether any process has that pid (``kill(pid, 0)``), whatever its start.
    """
    if not pid:
        return False
    if os.path.isdir("/proc/self"):
        now = process_start_time(pid)
        return now is not None and (start_time is None or now == start_time)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def boot_ticks() -> int:
    """Now, in the unit of a process's kernel start time (clock ticks since boot), so that
    the two compare: a process started after this call has a start time no smaller.

    Without CLOCK_BOOTTIME: the monotonic clock, in the same unit.
    """
    clock = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)
    return int(time.clock_gettime(clock) * os.sysconf("SC_CLK_TCK"))


def threads() -> int:
    """How many threads this process runs, C ones too.

    Without /proc: the threads Python knows of (``threading.active_count``).
    """
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


def children(pid: int | str = "self") -> list[int]:
    """The children of ``pid`` (default: this process) as the kernel lists them: orphans
    adopted as subreaper, and zombies.

    Without /proc: an empty list.
    """
    pids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return pids
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                pids.extend(int(p) for p in handle.read().split())
        except OSError:
            continue
    return pids


def open_fds() -> list[int] | None:
    """This process's open file descriptors (the listing's own one among them, closed by
    the time the list is returned).

    Without /proc: None; the caller then closes by ranges.
    """
    try:
        return [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return None


def pipe_count(pid: int) -> int | None:
    """How many of ``pid``'s open fds are pipes (a pipe's fd links to ``pipe:[inode]``).

    Without /proc, or for a process we may not look into: None.
    """
    directory = f"/proc/{pid}/fd"
    try:
        names = os.listdir(directory)
    except OSError:
        return None
    count = 0
    for name in names:
        try:
            if os.readlink(f"{directory}/{name}").startswith("pipe:"):
                count += 1
        except OSError:
            continue  # closed between the listing and the readlink
    return count


def processes(uid: int) -> list[int]:
    """Every process (this one excepted) of ``uid``, or of any user if ``uid`` is 0 (root's
    look at every process); none without /proc. One may be gone by the time it is read."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    me = os.getpid()
    found = []
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            if uid and os.stat(f"/proc/{name}").st_uid != uid:
                continue
        except OSError:
            continue  # gone
        found.append(int(name))
    return found


def environ_values(variable: str, uid: int) -> dict[int, bytes]:
    """The value of ``variable`` in the environment of every process that has it (this
    process excepted), by pid; only processes of ``uid`` unless ``uid`` is 0. A process
    that is gone, or not ours to read, is left out.

    Without /proc: an empty dict.
    """
    prefix = b"\0" + variable.encode() + b"="
    found: dict[int, bytes] = {}
    for pid in processes(uid):
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = b"\0" + handle.read()
        except OSError:
            continue  # gone, a kernel thread, or not ours to read
        at = environ.find(prefix)
        if at >= 0:
            found[pid] = environ[at + len(prefix):].split(b"\0", 1)[0]
    return found


def shown_title(pid: int) -> str | None:
    """What ``ps`` shows ``pid`` as: its first argument, or the title ``set_title`` gave it
    (empty for a process that is exiting: its command line goes first). None if unreadable."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().split(b"\0", 1)[0].rstrip().decode(errors="replace")
    except OSError:
        return None


def command_line(pid: int) -> list[str] | None:
    """The arguments ``pid`` runs with, as its last ``exec`` was given them (or as it
    rewrote them); None if unreadable."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    return [os.fsdecode(arg) for arg in raw.split(b"\0")[:-1]]


def flock_held(info: os.stat_result) -> bool | None:
    """Whether some process holds a ``flock`` on the file ``info`` describes, read from
    the kernel's list of locks (by device and inode) without taking the lock.

    Without /proc/locks: None; the caller then probes the lock itself.
    """
    try:
        with open("/proc/locks") as handle:
            text = handle.read()
    except OSError:
        return None
    key = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF"; a waiter's line reads "1: -> ...".
    return any(len(f) > 5 and f[1] == "FLOCK" and f[5] == key
               for f in (line.split() for line in text.splitlines()))


def rss(pid: int) -> int | None:
    """The resident memory of ``pid`` in bytes (``/proc/PID/statm``), or None if it does
    not exist.

    Without /proc: None for every pid.
    """
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            fields = handle.read().split()
    except OSError:
        return None
    try:
        return int(fields[1]) * _PAGE
    except (IndexError, ValueError):
        return None


#: signals whose default action is to do nothing (or to continue a stopped process)
_HARMLESS = frozenset((17, 18, 23, 28))  # SIGCHLD, SIGCONT, SIGURG, SIGWINCH (Linux)


def takes_signal(pid: int, number: int) -> bool:
    """Whether signal ``number`` leaves ``pid`` running as it is: ``pid`` handles it or
    ignores it (``SigCgt``, ``SigIgn`` of /proc/PID/status), or its default action is to do
    nothing. False when that cannot be read (the process is gone).

    Without /proc: False for every pid.
    """
    if number in _HARMLESS:
        return True
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            text = handle.read()
    except OSError:
        return False
    bit = 1 << (number - 1)
    for line in text.splitlines():
        if line.startswith((b"SigCgt:", b"SigIgn:")) and int(line.split()[1], 16) & bit:
            return True
    return False


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` in the tree the kernel keeps (children, theirs...);
    one that left it (re-parented to a subreaper or init) is not among them.

    Without /proc: an empty list.
    """
    found: list[int] = []
    todo = [pid]
    while todo:
        for kid in children(todo.pop()):
            found.append(kid)
            todo.append(kid)
    return found


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
