"""Reading back what a monitor wrote to its file, to answer ``Monitor.delivered``.

Before each output call the pump keeps the monitor's ``position``: here the inode (its low
24 bits) and the size of the file written to. A successor, before its own setup writes
anything, finds that file again — at its path, or renamed ``path.1``, ``path.2``... by
rotations the call itself made — and reads what lies past that size, then the files the
call started, from their first byte: only the call in doubt wrote there.
"""

from __future__ import annotations

import os

_SIZE_BITS = 40  # a position: the inode's low 24 bits above the file's size
_SIZE_MASK = (1 << _SIZE_BITS) - 1
_INODE_MASK = (1 << 24) - 1


def position_of(inode: int, size: int) -> int | None:
    """A file's inode and size in one integer for the journal; None past a terabyte."""
    return None if size > _SIZE_MASK else (inode & _INODE_MASK) << _SIZE_BITS | size


def _inode(path: str) -> int | None:
    try:
        return os.lstat(path).st_ino & _INODE_MASK
    except OSError:
        return None


def since(path: str, position: int | None, backups: int) -> list[tuple[str, int]] | None:
    """Where the writes since ``position`` lie, oldest first: ``(file, start)`` for the file
    ``position`` was taken in (at its path or rotated to ``path.N``, N up to ``backups``),
    then each newer one from 0. None if that file is not found (removed, or renamed
    otherwise)."""
    if position is None:
        return None
    names = [path] + [f"{path}.{n}" for n in range(1, backups + 1)]
    for index, name in enumerate(names):
        if _inode(name) == position >> _SIZE_BITS:
            return [(name, position & _SIZE_MASK)] + [(names[n], 0)
                                                      for n in range(index - 1, -1, -1)]
    return None


def read(path: str, start: int, limit: int) -> bytes | None:
    """Up to ``limit`` bytes of the file at ``path`` from ``start``; None if unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)  # never a symlink
        with os.fdopen(fd, "rb") as handle:
            handle.seek(start)
            return handle.read(limit)
    except OSError:
        return None
