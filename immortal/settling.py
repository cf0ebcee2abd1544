"""Waiting, in the caller, for a group to run so many ready instances of each program (a
scale, an apply): read from ``status.json``, polled, each wait with its deadline."""

from __future__ import annotations

import time

from .errors import NotRunning, StartError, StopTimeout
from .groupview import POLL
from .state import Status

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any


def wait(status: Callable[[], Status], name: str, counts: Mapping[str, int],
         patience: float, what: str, new: tuple[str | None, int] | None = None) -> Status:
    """The status once each program of ``counts`` runs that many instances (0: gone),
    each running and ready; StopTimeout past ``patience``. ``new``: (program, the count
    before a scale up): a new instance whose target died before it was ready fails at once
    (StartError), as in a start."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        now = status()
        if not now.running:
            raise NotRunning(f"group {name!r} ended (state {now.state})")
        if settled(now, counts):
            return now
        dead = [entry for entry in of(now, new[0]) if entry.instance >= new[1]
                and entry.last_exit is not None and not entry.ready] if new else []
        if dead:
            raise StartError(f"group {name!r}: instance {dead[0].instance}: its target "
                             f"{dead[0].last_exit} before it was ready", dead[0].last_exit)
        time.sleep(POLL)
    raise StopTimeout(f"group {name!r} {what} within {patience:g} s")


def of(status: Status, program: str | None) -> list[Any]:
    """The instances ``status`` lists of ``program`` (all, if None)."""
    return [entry for entry in status.instances if program in (None, entry.program)]


def settled(status: Status, counts: Mapping[str, int]) -> bool:
    """Whether ``status`` shows each program of ``counts`` with that many instances, each
    running and ready (0: the program gone)."""
    return all(_runs(status, program, count) for program, count in counts.items())


def _runs(status: Status, program: str, count: int) -> bool:
    """Whether ``status`` shows ``program`` with ``count`` instances, each running and
    ready (0: the program gone)."""
    if program and count == 0:
        return program not in status.programs()
    mine = of(status, program or None) if program else status.instances
    return (len(mine) or (1 if not program else 0)) == count and all(
        entry.state == "running" and entry.ready for entry in mine) and (
        bool(mine) or (status.state == "running" and status.ready))
