"""What the kernel does with fds that the standard library has no words for: the uid and
pid of a unix socket's peer, a pipe's size, backlog and copy (``tee``), a pipe reopened
through another process's /proc entry, and a file in memory (``memfd``)."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
import sys

from .clib import libc

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    import socket
    from typing import Any

_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


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


def peer_pid(sock: socket.socket) -> int | None:
    """The pid of the process at the other end of the unix socket ``sock`` (for a client:
    the one that listens), as this process's pid namespace numbers it; None if the kernel
    does not say, or the peer is in no namespace this one sees."""
    import socket  # loaded already: the caller has a socket

    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    except OSError:
        return None
    pid: int = struct.unpack("3i", creds)[0]
    return pid or None


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


def reader_watchable(fd: int) -> bool:
    """Whether ``fd`` is a pipe's write end that an epoll watch for reading reports only
    once the pipe's last reader has gone (as an error): Linux, a pipe opened write-only.

    Elsewhere: False.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode) \
            and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY
    except OSError:
        return False


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
