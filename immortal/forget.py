"""``immortal forget NAME``: a stopped group removed from the home, its record and files with
it (``list`` shows every group ever run until then).

The group's lock is taken first, as a start takes it: a group that runs, or a start under
way, holds it, and the group is refused. A group whose supervisors died and left processes
running is refused too (``immortal stop`` ends them). Its lock file goes last, while the lock
is held: a start that opened it before is told the group runs, and a start that opens the
path after finds a new file (``instance.try_lock`` locks only the file its path names).
What a start that failed left (its lock files and its monitor's output, kept to read why)
is forgotten the same way.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import AlreadyRunning, NotRunning
from .group import Group, attach
from .instance import try_lock


def forget(name: str) -> Path:
    """Remove the stopped group ``name`` and everything in its directory; the directory.
    What a start that failed left (its lock files, its output: no group ``list`` shows)
    goes the same way."""
    try:
        directory = attach(name).directory  # its directory checked
    except NotRunning:  # no such group: maybe a failed start's leftovers
        directory = _failed_start(name)
    group = Group(name, directory)
    fd = try_lock(directory / "lock", same_file=True)
    if fd is None:
        raise AlreadyRunning(f"group {name!r} is running (or starting); stop it first "
                             f"with 'immortal stop {name}'")
    try:
        left = group.orphans()
        if left:
            raise AlreadyRunning(f"group {name!r} left {len(left)} process(es) running "
                                 f"without supervisors; 'immortal stop {name}' ends them")
        _empty(directory)
        os.unlink(directory / "lock")
    finally:
        os.close(fd)
    try:
        os.rmdir(directory)
    except FileNotFoundError:
        pass
    except OSError:
        # A start of the same name made its files here since: the group is that one's now.
        raise NotRunning(f"group {name!r} was forgotten, and a new start of it began "
                         f"meanwhile in {str(directory)!r}") from None
    return directory


def _failed_start(name: str) -> Path:
    """The directory a start of ``name`` that failed left (``attach`` finds no group there:
    no ``spec.json``, no status, its lock not held), checked as ``attach`` checks a group's;
    NotRunning if there is none."""
    from .instance import check_dir
    from .names import check_name
    from .state import instance_dir

    directory = instance_dir(check_name(name))
    if not os.path.exists(directory / "lock"):
        raise NotRunning(f"no group named {name!r} in {str(directory.parent)!r}; 'immortal "
                         "list' shows the groups there")
    check_dir(directory)
    return directory


def _empty(directory: Path) -> None:
    """Everything in ``directory`` but its lock file: the group's files and its programs'
    directories (never followed through a link)."""
    for entry in os.scandir(directory):
        if entry.name == "lock":
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)
