"""``immortal forget NAME``: a stopped group removed from the home, its record and files with
it (``list`` shows every group ever run until then).

The group's lock is taken first, as a start takes it: a group that runs, or a start under
way, holds it, and the group is refused. A group whose supervisors died and left processes
running is refused too (``immortal stop`` ends them). Its lock file goes last, while the lock
is held: a start that opened it before is told the group runs, and a start that opens the
path after finds a new file (``instance.try_lock`` locks only the file its path names).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import AlreadyRunning, NotRunning
from .group import attach
from .instance import try_lock


def forget(name: str) -> Path:
    """Remove the stopped group ``name`` and everything in its directory; the directory."""
    group = attach(name)  # NotRunning if there is no such group; its directory checked
    directory = group.directory
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
