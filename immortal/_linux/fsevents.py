"""inotify, the file system's events, which the standard library has no binding of: its event
bits, the C library's calls, and the events of one read."""

from __future__ import annotations

import struct

from .clib import libc

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    import ctypes
    from collections.abc import Iterable

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


def release_watches(library: ctypes.CDLL, fd: int, wds: Iterable[int]) -> None:
    """Remove the watches ``wds`` of the inotify fd ``fd``, the fd kept open.

    The close of an inotify fd that still has watches waits until the kernel has freed
    them (an RCU grace period); so does a process's exit, which closes it. A role whose
    stop a client waits for removes its watches as soon as they are of no more use: they
    are freed while it ends, and its exit does not wait for them (bench/notes.md).
    """
    for wd in wds:
        library.inotify_rm_watch(fd, wd)


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
