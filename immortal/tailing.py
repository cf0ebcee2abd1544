"""Reading a group's output file as ``tail`` and ``tail -F`` do: ``Group.tail`` and
``Group.follow``, which 'immortal logs' prints.

Lines are bytes, each with its newline; a last line not (yet) ended comes without one, and
what they hold together is exactly the file's bytes. The file is never opened through a
symlink, as the monitors never write through one.
"""

from __future__ import annotations

import errno
import os
import time

from .errors import StateDirError

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import BinaryIO

FOLLOW_POLL = 0.1  # seconds between two looks at the output file while following


def _open(path: str) -> BinaryIO:
    return os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb")


def open_output(path: str) -> BinaryIO | None:
    """The output file, for reading; None if there is none (yet)."""
    try:
        return _open(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise StateDirError(f"refusing {path!r}: it is a symlink, which another user may "
                            "have planted; the group's monitor does not write through it"
                            ) from None


def last_lines(handle: BinaryIO, count: int) -> bytes:
    """The last ``count`` lines of a binary file (as ``readlines()[-count:]`` would give,
    a last line without its newline included), read backwards from the end; leaves the
    file positioned at its end."""
    end = handle.seek(0, os.SEEK_END)
    if count <= 0:
        return b""
    position, data = end, b""
    # A final newline ends the last line; it does not start one: look before it.
    while position > 0 and data[:-1].count(b"\n") < count:
        step = min(65536, position)
        position -= step
        handle.seek(position)
        data = handle.read(step) + data
    handle.seek(end)
    cut = len(data) - 1
    for _ in range(count):
        cut = data.rfind(b"\n", 0, cut)
        if cut < 0:
            return data
    return data[cut + 1:]


def last_kept(handle: BinaryIO, count: int, keep: Callable[[bytes], bool]) -> bytes:
    """The last ``count`` lines of a binary file that ``keep`` takes, read backwards from the
    end a growing number of lines at a time; leaves the file positioned at its end."""
    ask = max(count, 1) * 4
    while True:
        data = last_lines(handle, ask)
        lines = split(data)
        kept = [line for line in lines if keep(line)]
        if len(kept) >= count or len(lines) < ask:
            return b"".join(kept[len(kept) - count:] if count else [])
        ask *= 4


def split(data: bytes) -> list[bytes]:
    """``data`` as lines, each with its newline; a last piece without one as it is."""
    parts = data.split(b"\n")
    lines = [part + b"\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def tail(path: str, count: int, keep: Callable[[bytes], bool] | None = None
         ) -> Iterator[bytes]:
    """The last ``count`` lines of ``path`` (none if it does not exist); with ``keep``, of
    the lines it takes."""
    handle = open_output(path)
    if handle is None:
        return iter(())
    with handle:
        return iter(split(last_lines(handle, count) if keep is None
                          else last_kept(handle, count, keep)))


def follow(path: str, count: int, running: Callable[[], bool],
           poll: float = FOLLOW_POLL, keep: Callable[[bytes], bool] | None = None
           ) -> Iterator[bytes]:
    """The last ``count`` lines of ``path``, then every line appended to it until
    ``running()`` turns false; with ``keep``, only the lines it takes. The file is opened
    now (a symlink is refused now, not at the first line); closing the iterator closes
    it."""
    handle = open_output(path)
    first = b""
    if handle is not None:
        first = last_lines(handle, count) if keep is None else last_kept(handle, count, keep)
    return _follow(path, handle, first, running, poll, keep or _every)


def _every(line: bytes) -> bool:
    return True


def _follow(path: str, handle: BinaryIO | None, first: bytes, running: Callable[[], bool],
            poll: float, keep: Callable[[bytes], bool] = _every) -> Iterator[bytes]:
    """As ``tail -F``: when the path comes to name another file (a rotation), finish the
    old one and read the new one from its start. A reader, not a supervisor: it polls.

    The old file is finished only once the writer has moved: logrotate's ``create`` makes
    the new file before the monitor reopens its path (at ``immortal reopen``, or its own
    check a second later), and until then the monitor appends to the renamed file. So the
    new file is taken when it holds data: the writer wrote there, so it has let go of the
    old file, whose end is then read once more, and nothing written to it is missed. A
    writer that rotated more than once between two looks (the ``file`` monitor's
    ``max_bytes`` under a burst) left the files in between as ``PATH.1``, ``PATH.2``...:
    those are read too (``_rotated_between``)."""
    # The bytes of a line not ended yet: the file's, read last (a shrink is measured
    # against them), so the whole lines of ``first`` go first.
    lines = split(first)
    rest = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
    try:
        yield from (line for line in lines if keep(line))
        while True:
            # Decide before reading: what the group wrote before it ended is then read.
            ended = not running()
            data = _appended(handle, rest)
            new = _replaced(path, handle)
            if new is not None:
                if handle is not None:
                    data += handle.read()  # the last lines written to the old file
                    data += _rotated_between(path, handle, new)
                    handle.close()
                handle = new
                data += _appended(handle)
            lines = split(data)
            rest = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
            yield from (line for line in lines if keep(line))
            if ended:
                if rest and keep(rest):
                    yield rest
                return
            time.sleep(poll)
    finally:
        if handle is not None:
            handle.close()


def _appended(handle: BinaryIO | None, unended: bytes = b"") -> bytes:
    """``unended`` (the bytes last read from the open file and not yet handed out: a line
    without its newline) and what was appended since. A file that shrank had a record
    taken back, if it still holds every line handed out: a monitor whose write failed
    half-way (a full disk) cuts the part it wrote, which is then cut from ``unended`` as
    well, and reading goes on from there. Otherwise it was truncated in place, and is read
    again from its start, as tail does."""
    if handle is None:
        return unended
    data = unended + handle.read()
    try:
        size = os.fstat(handle.fileno()).st_size
    except OSError:
        return data
    end = handle.tell()
    if size < end:
        start = end - len(data)  # the end of the last line handed out
        if size >= start:
            handle.seek(size)
            return data[:size - start]
        handle.seek(0)
        data += handle.read()
    return data


MAX_ROTATED = 1000  #: the numbered files looked at for the old one (the monitors' most)


def _rotated_between(path: str, old: BinaryIO, new: BinaryIO) -> bytes:
    """What the files rotated between ``old``'s file and ``new``'s hold, oldest first:
    found as ``PATH.1``, ``PATH.2``... up to the old file (a rotation meanwhile only moves
    them up, to be met again further on). Nothing if the old file is not among them (it is
    ``PATH.1``: nothing in between; or rotated otherwise: logrotate's ``dateext``,
    ``compress``, a file removed)."""
    seen = {_identity(os.fstat(new.fileno()))}
    target = _identity(os.fstat(old.fileno()))
    between: list[BinaryIO] = []
    missing = 0
    try:
        for n in range(1, MAX_ROTATED + 1):
            try:
                handle = _open(f"{path}.{n}")
            except OSError:
                # A rotation renames from the oldest down: one name is missing while it
                # runs (its file is one further on already). Two in a row: the end.
                missing += 1
                if missing == 2:
                    return b""
                continue
            missing = 0
            found = _identity(os.fstat(handle.fileno()))
            if found == target or found in seen:
                handle.close()
                if found == target:
                    return b"".join(each.read() for each in reversed(between))
                continue
            seen.add(found)
            between.append(handle)
        return b""
    finally:
        for handle in between:
            handle.close()


def _identity(stat: os.stat_result) -> tuple[int, int]:
    return stat.st_dev, stat.st_ino


def _replaced(path: str, handle: BinaryIO | None) -> BinaryIO | None:
    """The file ``path`` names now, opened, if it is not ``handle``'s (a rotation, or the
    first file) and, in a rotation, the writer has written to it; None while it is the
    same, while the new one is empty, or while nothing (or a symlink) is there."""
    try:
        current = os.stat(path)
    except OSError:
        return None  # moved away and not yet reopened: keep reading the old file
    if handle is not None and not _moved(current, handle):
        return None
    try:
        new = _open(path)
    except OSError:
        return None
    # What was opened may not be what was looked at (a second rotation in between): the
    # open file itself decides.
    if handle is not None and not _moved(os.fstat(new.fileno()), handle):
        new.close()
        return None
    return new


def _moved(current: os.stat_result, handle: BinaryIO) -> bool:
    """Whether the writer has gone from ``handle``'s file to ``current``: another file,
    which it has written to (an empty one is logrotate's ``create``, not reopened yet)."""
    return current.st_size > 0 and not os.path.samestat(current, os.fstat(handle.fileno()))
