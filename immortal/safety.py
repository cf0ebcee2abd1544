"""Refusing paths and files that another local user could swap or forge.

A path is only as safe as every directory on the way to it: whoever may write a directory
may rename what is in it and put a symlink, or a directory of their own, in its place. So
``check_path`` walks a path from ``/``, following symlinks as the kernel would, and wants
every directory it passes owned by root or by us and not writable by group or others; a
directory writable by others is accepted only if it is sticky (as ``/tmp``) and the entry
taken in it is root's or ours (in a sticky directory, nobody else may rename or remove it).
Ownership and modes can be changed by the owner alone (and root), so a path found safe stays
safe: opening it by name later is as good as holding a descriptor of it.

Public for monitors: a monitor that writes files as root should call ``check_path`` on its
output and open it with ``O_NOFOLLOW`` (``open_append``), as the built-in ones do.

``check_opened`` is the check of a file once open: owned by root or us, and writable by
nobody else. A file that fails it (a status.json naming pids, a spec.json naming modules)
could have been written by someone else, and is never believed.
"""

from __future__ import annotations

import os
import stat

from .errors import StateDirError

MAX_SYMLINKS = 40  # as the kernel's own limit on a path lookup


def trusted(uid: int) -> bool:
    """Root's or ours: the owners whose files and directories we believe."""
    return uid == 0 or uid == os.geteuid()


def _others_write(mode: int) -> bool:
    return bool(mode & 0o022)


def _refuse(path: str, why: str, error: type[Exception]) -> None:
    raise error(f"refusing {path!r}: {why}")


def check_path(path: str | os.PathLike[str], error: type[Exception] = StateDirError) -> None:
    """Refuse ``path`` (raising ``error``) if a user other than root or us could change what
    it names. Components that do not exist yet end the walk: we create them ourselves."""
    text = os.path.abspath(os.fspath(path))
    todo = [part for part in text.split("/") if part][::-1]  # a stack: next part last
    current = "/"
    links = 0
    while True:
        info = os.lstat(current)
        if not trusted(info.st_uid):
            _refuse(text, f"{current!r} on its way is owned by uid {info.st_uid}, who could "
                    "swap what it holds; only root's and ours are trusted", error)
        sticky_open = _others_write(info.st_mode)
        if sticky_open and not info.st_mode & stat.S_ISVTX:
            _refuse(text, f"{current!r} on its way is writable by group or others (mode "
                    f"{stat.filemode(info.st_mode)}), who could swap what it holds", error)
        if not todo:
            return
        name = todo.pop()
        if name == ".":
            continue
        if name == "..":
            current = os.path.dirname(current)  # ``current`` has no symlink: lexical is right
            continue
        entry = os.path.join(current, name)
        try:
            found = os.lstat(entry)
        except FileNotFoundError:
            return
        if sticky_open and not trusted(found.st_uid):
            _refuse(text, f"{entry!r} is owned by uid {found.st_uid} in the shared directory "
                    f"{current!r}", error)
        if stat.S_ISLNK(found.st_mode):
            links += 1
            if links > MAX_SYMLINKS:
                _refuse(text, "too many levels of symbolic links", error)
            target = os.readlink(entry)
            todo.extend(part for part in target.split("/")[::-1] if part)
            if target.startswith("/"):
                current = "/"
            continue
        if not todo:
            if stat.S_ISDIR(found.st_mode):
                current = entry
                continue  # the last directory itself is checked as the ones before it
            return
        current = entry


def check_opened(fd: int, path: str | os.PathLike[str],
                 error: type[Exception] = StateDirError) -> os.stat_result:
    """Refuse an open file that root or we did not write, or that others may write."""
    info = os.fstat(fd)
    if not trusted(info.st_uid):
        _refuse(os.fspath(path), f"owned by uid {info.st_uid}, not by us (uid "
                f"{os.geteuid()}) or root: it could be forged", error)
    if _others_write(info.st_mode):
        _refuse(os.fspath(path), f"writable by group or others (mode "
                f"{stat.filemode(info.st_mode)}); run 'chmod go-w {os.fspath(path)}'", error)
    return info


def socket_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is no control socket to talk to, or None: a socket of root's or ours,
    or nothing (nobody listens: connecting says so). A stranger's would hear our commands
    and could answer them with a forged status."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISSOCK(info.st_mode):
        return "is not a socket"
    if not trusted(info.st_uid):
        return f"is owned by uid {info.st_uid}, not by us (uid {os.geteuid()}) or root"
    return None


def open_append(path: str | os.PathLike[str], error: type[Exception] = StateDirError) -> int:
    """An fd appending to ``path`` (created ``0666 & ~umask`` if missing), after
    ``check_path``; never through a symlink at the last component (``O_NOFOLLOW``: ELOOP)."""
    check_path(path, error)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                   0o666)
