"""The platform seam: every call that only Linux answers, each with one fallback.

The rest of the package asks this package, by the names imported here, never ``/proc``,
``prctl``, pidfds, peer credentials, pipe sizes or memfds directly. Each function's
docstring says what it does on Linux and, in its last paragraph, the one thing it does
elsewhere (or where the kernel refuses): the package then works with less (no orphan
search, polling instead of a pidfd, no process titles), never differently.

Its parts: procfs, what /proc tells of processes; reaping, pidfds and the child subreaper;
fds, a socket peer's credentials, pipes and memfds; clib, the C library and malloc's
thresholds; fsevents, inotify; titles, the process title.

Layers (a part imports only from lower ones, and nothing else of immortal's;
tests/test_layering.py checks it):
0 clib, procfs, titles ·
1 fds, fsevents, reaping ·
2 __init__
"""

from __future__ import annotations

from .clib import LINUX, keep_heap, libc
from .fds import (memory_file, pass_credentials, peer_pid, peer_uid, pipe_backlog,
                  reader_watchable, receive_from, reopen_pipe, set_pipe_size, tee)
from .fsevents import (IN_ATTRIB, IN_CLOSE_WRITE, IN_CREATE, IN_DELETE, IN_DELETE_SELF,
                       IN_IGNORED, IN_ISDIR, IN_MODIFY, IN_MOVE_SELF, IN_MOVED_FROM,
                       IN_MOVED_TO, IN_ONLYDIR, IN_Q_OVERFLOW, INOTIFY_EVENT, inotify,
                       inotify_events, release_watches)
from .procfs import (boot_ticks, children, command_line, descendants, environ_values,
                     flock_held, is_alive, open_fds, parent_pid, pipe_count,
                     process_start_time, processes, rss, shown_title, takes_signal,
                     threads)
from .reaping import HAVE_PIDFD, pidfd_open, set_subreaper, signal_pidfd, wait_pidfd
from .titles import import_title, set_title

__all__ = [
    "HAVE_PIDFD",
    "INOTIFY_EVENT",
    "IN_ATTRIB",
    "IN_CLOSE_WRITE",
    "IN_CREATE",
    "IN_DELETE",
    "IN_DELETE_SELF",
    "IN_IGNORED",
    "IN_ISDIR",
    "IN_MODIFY",
    "IN_MOVED_FROM",
    "IN_MOVED_TO",
    "IN_MOVE_SELF",
    "IN_ONLYDIR",
    "IN_Q_OVERFLOW",
    "LINUX",
    "boot_ticks",
    "children",
    "command_line",
    "descendants",
    "environ_values",
    "flock_held",
    "import_title",
    "inotify",
    "inotify_events",
    "release_watches",
    "is_alive",
    "keep_heap",
    "libc",
    "memory_file",
    "open_fds",
    "parent_pid",
    "pass_credentials",
    "peer_pid",
    "peer_uid",
    "pidfd_open",
    "pipe_backlog",
    "pipe_count",
    "process_start_time",
    "processes",
    "reader_watchable",
    "receive_from",
    "reopen_pipe",
    "rss",
    "takes_signal",
    "set_pipe_size",
    "set_subreaper",
    "set_title",
    "signal_pidfd",
    "tee",
    "shown_title",
    "threads",
    "wait_pidfd",
]
