"""The platform seam: every call that only Linux answers, each with one fallback.

The rest of the package asks this module, never ``/proc``, ``prctl``, pidfds, peer
credentials, pipe sizes or memfds directly. Each function's docstring says what it does on
Linux and, in its last paragraph, the one thing it does elsewhere (or where the kernel
refuses): the package then works with less (no orphan search, polling instead of a pidfd,
no process titles), never differently.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
import sys
import time

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    import ctypes
    import socket
    from typing import Any

LINUX = sys.platform.startswith("linux")

#: Whether ``pidfd_open`` gives exit notification that ``wait_pidfd`` can collect.
#: Without it (off Linux, or Linux before 5.3) a child's death is learnt from SIGCHLD.
HAVE_PIDFD = hasattr(os, "pidfd_open") and hasattr(os, "P_PIDFD")
_PR_SET_CHILD_SUBREAPER = 36
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


# ------------------------------------------------------------------------ processes
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


def environ_values(variable: str, uid: int) -> dict[int, bytes]:
    """The value of ``variable`` in the environment of every process that has it (this
    process excepted), by pid; only processes of ``uid`` unless ``uid`` is 0 (root's look
    at every process). A process that is gone, or not ours to read, is left out.

    Without /proc: an empty dict.
    """
    try:
        names = os.listdir("/proc")
    except OSError:
        return {}
    prefix = b"\0" + variable.encode() + b"="
    me = os.getpid()
    found: dict[int, bytes] = {}
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            if uid and os.stat(f"/proc/{name}").st_uid != uid:
                continue
            with open(f"/proc/{name}/environ", "rb") as handle:
                environ = b"\0" + handle.read()
        except OSError:
            continue  # gone, a kernel thread, or not ours to read
        at = environ.find(prefix)
        if at >= 0:
            found[int(name)] = environ[at + len(prefix):].split(b"\0", 1)[0]
    return found


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


# ------------------------------------------------------------------------ pidfds
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


# ------------------------------------------------------------------------ files and sockets
def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of the unix socket ``sock`` (as it was when
    it connected); OSError if the kernel does not say.

    Without ``SO_PEERCRED``: None; the caller then relies on the socket's private
    directory.
    """
    import socket  # loaded already: the caller has a socket

    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    uid: int = struct.unpack("3i", creds)[1]
    return uid


def pass_credentials(sock: socket.socket) -> bool:
    """Have the kernel attach the sender's credentials to every datagram ``sock``
    receives (``SO_PASSCRED``), for :func:`receive_from`; whether it will.

    Without ``SO_PASSCRED``: False; senders are then not known (the caller relies on the
    socket's private directory).
    """
    import socket  # loaded already: the caller has a socket

    option = getattr(socket, "SO_PASSCRED", None)
    if option is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, 1)
    except OSError:
        return False
    return True


def receive_from(sock: socket.socket, size: int) -> tuple[bytes, int | None]:
    """One datagram of ``sock`` (at most ``size`` bytes) and the pid of its sender, as the
    kernel tells it (``SCM_CREDENTIALS``, once :func:`pass_credentials` was set); BlockingIOError
    when none waits.

    Without credentials: the pid is None.
    """
    import socket  # loaded already: the caller has a socket

    kind = getattr(socket, "SCM_CREDENTIALS", None)
    if kind is None:
        return sock.recv(size), None
    creds = struct.calcsize("3i")
    data, ancillary, _, _ = sock.recvmsg(size, socket.CMSG_SPACE(creds))
    pid = None
    for level, what, value in ancillary:
        if level == socket.SOL_SOCKET and what == kind and len(value) >= creds:
            pid = struct.unpack("3i", value[:creds])[0]
    return data, pid


def set_pipe_size(fd: int, size: int) -> None:
    """Make the pipe of ``fd`` hold ``size`` bytes.

    Where refused (no ``F_SETPIPE_SZ``, or over /proc/sys/fs/pipe-max-size for an
    unprivileged user): the pipe keeps the system's default size.
    """
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
    except OSError:
        pass


def reopen_pipe(pid: int, fd: int) -> tuple[int, int]:
    """Both ends of the pipe ``pid`` has as its fd ``fd``: (read end, non-blocking; write
    end, blocking), close-on-exec. Opening ``/proc/PID/fd/N`` of a pipe opens that same
    pipe again, even once every other holder of its ends is gone.

    The read end is opened first: it makes the write end's open succeed without waiting,
    even for a process that closed every read end it held. OSError if ``fd`` is not a pipe,
    or where it cannot be opened (off Linux, another user's process); the caller then
    spawns anew instead of adopting.
    """
    path = f"/proc/{pid}/fd/{fd}"
    flags = os.O_NONBLOCK | os.O_CLOEXEC
    read = os.open(path, os.O_RDONLY | flags)
    try:
        if not stat.S_ISFIFO(os.fstat(read).st_mode):
            raise OSError(f"fd {fd} of process {pid} is not a pipe")
        write = os.open(path, os.O_WRONLY | flags)
    except BaseException:
        os.close(read)
        raise
    os.set_blocking(write, True)  # a spawned target's stdout: it must block when full
    return read, write


def pipe_backlog(fd: int) -> int:
    """Bytes waiting in the pipe of ``fd`` (``FIONREAD``).

    Where refused: 0.
    """
    import termios

    buffer = bytearray(4)
    try:
        fcntl.ioctl(fd, termios.FIONREAD, buffer)
    except OSError:
        return 0
    return int.from_bytes(buffer, sys.byteorder)


_tee: Any = None


def tee(source: int, dest: int, count: int) -> int:
    """Copy up to ``count`` of the bytes waiting in the pipe of ``source`` into the pipe of
    ``dest``, leaving them in ``source`` (``tee(2)``, non-blocking): how many; 0 when
    ``source`` is empty or ``dest`` full.

    Where there is no ``tee``: OSError (ENOSYS).
    """
    global _tee
    if _tee is None:
        import ctypes

        library = libc()
        function = getattr(library, "tee", None) if library is not None else None
        if function is None:
            raise OSError(errno.ENOSYS, "tee is not available")
        function.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint)
        function.restype = ctypes.c_ssize_t
        _tee = function
    copied = int(_tee(source, dest, count, os.SPLICE_F_NONBLOCK))
    if copied < 0:
        import ctypes

        number = ctypes.get_errno()
        if number == errno.EAGAIN:
            return 0
        raise OSError(number, os.strerror(number))
    return copied


def memory_file(name: str, size: int) -> int:
    """A zeroed, unnamed, close-on-exec file of ``size`` bytes in memory (``memfd``), to
    share by fd.

    Without memfd: an unlinked temporary file, which does the same.
    """
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
    else:  # pragma: no cover - not Linux
        import tempfile

        fd = os.dup(tempfile.TemporaryFile().fileno())
    os.ftruncate(fd, size)
    return fd


# ------------------------------------------------------------------------ the C library
def libc() -> ctypes.CDLL | None:
    """The C library this interpreter already has loaded, for the calls the standard
    library has no binding of (``prctl``, inotify). ``find_library`` is not used: it would
    run ldconfig, and import subprocess to do it.

    Off Linux, or where it cannot be loaded: None.
    """
    if not LINUX:
        return None
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_M_TRIM_THRESHOLD = -1  # mallopt(3)'s parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_heap_kept = False


def keep_heap(kept: int, mapped: int) -> None:
    """Make malloc keep up to ``kept`` bytes freed at the top of the heap, and serve blocks
    below ``mapped`` bytes from the heap, for the rest of the process (once).

    glibc gives the top of its heap back to the kernel once 128 KiB are free there, and
    serves larger blocks with mmap, so a process that allocates and frees a few blocks of
    100-300 KiB per read (the relay's copies) would fault their pages in afresh at every
    read. The memory kept is bounded by ``kept``. Off glibc (no ``mallopt``): nothing.
    """
    global _heap_kept
    if _heap_kept:
        return
    _heap_kept = True
    library = libc()
    mallopt = getattr(library, "mallopt", None) if library is not None else None
    if mallopt is not None:
        mallopt(_M_TRIM_THRESHOLD, kept)
        mallopt(_M_MMAP_THRESHOLD, mapped)


def set_subreaper() -> bool:
    """Make orphaned descendants come back to this process, as to init: True if done.

    Off Linux: False, and orphans go to init.
    """
    library = libc()
    return library is not None and library.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


#: inotify's event bits, as <sys/inotify.h> has them.
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000
INOTIFY_EVENT = struct.Struct("iIII")  #: wd, mask, cookie, len (then len bytes of name)


def inotify() -> ctypes.CDLL | None:
    """The C library, if it has inotify (``inotify_init1``, ``inotify_add_watch``,
    ``inotify_rm_watch``; the standard library has no binding).

    Off Linux, or a C library without inotify: None; nothing is then watched.
    """
    library = libc()
    if library is None:
        return None
    try:
        library.inotify_init1, library.inotify_add_watch, library.inotify_rm_watch  # noqa
    except AttributeError:
        return None
    return library


def inotify_events(data: bytes) -> list[tuple[int, int, bytes]]:
    """The events of one read of an inotify fd: (watch descriptor, mask, name)."""
    events = []
    offset = 0
    while offset + INOTIFY_EVENT.size <= len(data):
        wd, mask, _, length = INOTIFY_EVENT.unpack_from(data, offset)
        start = offset + INOTIFY_EVENT.size
        events.append((wd, mask, data[start:start + length].rstrip(b"\0")))
        offset = start + length
    return events


_title_loaded = False
_title_module: object = None  # setproctitle's extension, once loaded (None if it cannot be)


def import_title() -> None:
    """Load what :func:`set_title` needs, ahead of time.

    Without setproctitle: nothing is loaded, and titles are not set.
    """
    global _title_loaded, _title_module
    if _title_loaded:
        return
    _title_loaded = True
    try:
        _title_module = _load_setproctitle()
    except Exception:  # pragma: no cover - a dependency; ps then shows the argv as it is
        _title_module = None


def _load_setproctitle() -> object:
    """setproctitle's C extension, loaded without its package, whose ``__init__`` imports
    logging only to report that the extension is missing (time and memory in every role)."""
    import importlib.machinery

    found = importlib.machinery.PathFinder.find_spec("setproctitle")
    if found is not None and found.submodule_search_locations:
        for directory in found.submodule_search_locations:
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                path = os.path.join(directory, "_setproctitle" + suffix)
                if os.path.exists(path):
                    name = "setproctitle._setproctitle"
                    loader = importlib.machinery.ExtensionFileLoader(name, path)
                    spec = importlib.machinery.ModuleSpec(name, loader, origin=path)
                    module = loader.create_module(spec)
                    loader.exec_module(module)
                    return module
    import setproctitle  # an unusual layout: the package as it comes

    return setproctitle


def set_title(title: str) -> None:
    """What ps shows for this process (a forked pump's argv is still the daemon's).

    Without setproctitle: nothing; ps shows the argv as it is.
    """
    import_title()
    if _title_module is not None:
        _title_module.setproctitle(title)  # type: ignore[attr-defined]
