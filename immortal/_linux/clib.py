"""The C library this interpreter has loaded, for the calls the standard library has no
binding of, and malloc's thresholds."""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    import ctypes

LINUX = sys.platform.startswith("linux")


_library: list[ctypes.CDLL | None] = []  # the one loaded, once looked for


def libc() -> ctypes.CDLL | None:
    """The C library this interpreter already has loaded, for the calls the standard
    library has no binding of (``prctl``, inotify). ``find_library`` is not used: it would
    run ldconfig, and import subprocess to do it.

    Loaded once per process: each ``CDLL`` makes a class of its own, and the daemon's one,
    made before it forks, is the pump's too (the pump that made its own paid for its pages).
    Off Linux, or where it cannot be loaded: None.
    """
    if not _library:
        _library.append(_load())
    return _library[0]


def _load() -> ctypes.CDLL | None:
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
