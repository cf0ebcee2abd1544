"""How a role's process ends without the teardown of every module: its objects freed (its
monitors' files flushed and closed), its exit functions run, its streams flushed.

A forked role (the daemon's pump, a monitor's own process) must never return into the
code of the process it was forked from, nor run that process's clean-up.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import NoReturn


def finish() -> None:
    """What the exit of a fresh interpreter does that matters to a role, without the
    teardown of every module, which a client's stop would wait for (bench/notes.md): the
    role's objects freed (``free``), and the exit functions run."""
    free()
    atexit._run_exitfuncs()


def free() -> None:
    """Free the objects the role leaves (a pump's monitors among them; cycles too), which
    closes the files a monitor left open; each buffered file flushed first.

    Freed with the objects around it, a file is freed in no set order with the buffer
    below it (CPython finalizes the objects of a cycle in any order): a text file freed
    after its binary buffer, or a buffer after its raw file, loses what it held, as it
    would at an interpreter's exit. Flushed from the top down first, they hold nothing.
    """
    import io  # loaded already (sys.stderr is one): no cost

    found = gc.get_objects()
    for kind in (io.TextIOWrapper, (io.BufferedWriter, io.BufferedRandom)):
        for each in found:
            if isinstance(each, kind):
                try:
                    if not each.closed:
                        each.flush()
                except Exception:  # noqa: BLE001 - a file that cannot be flushed: as at an exit
                    pass
    del found
    gc.collect()


def leave(code: int) -> NoReturn:
    """End this process now with ``code``, its stdout and stderr flushed (``finish``
    first: nothing else is run)."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)
