"""Waiting, in the caller, for a group to run so many ready instances of each program (a
scale, an apply): read from ``status.json``, polled, each wait with its deadline."""

from __future__ import annotations

import time

from .errors import ImmortalError, NotRunning, StartError, StopTimeout
from .groupview import POLL
from .scalerecord import came_from
from .state import Status, read_json, read_scales

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path
    from typing import Any


def wait(status: Callable[[], Status], name: str, counts: Mapping[str, int],
         patience: float, what: str, new: tuple[str | None, int] | None = None,
         before: tuple[Path, Mapping[str, int]] | None = None,
         ticket: int | None = None, scales: Mapping[str, Any] | None = None) -> Status:
    """The status once each program of ``counts`` runs that many instances (0: gone),
    each running and ready; StopTimeout past ``patience``. ``new``: (program, the count
    before a scale up): a new instance whose target died before it was ready fails at once
    (StartError), as in a start. ``before``: the group's directory and the counts it had,
    for ``check_counts``: another command that set another count meanwhile makes the wait
    moot (an ImmortalError at once, and nothing of that command's to undo); ``ticket``,
    the id of the scale waited for: so does another scale, even to the same count.
    ``scales``: an apply's wait, the scales recorded when it began (by program, each its
    id and time): a scale asked since makes it moot too."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        now = status()
        if not now.running:
            raise NotRunning(f"group {name!r} ended (state {now.state})")
        if settled(now, counts):
            return now
        if now.state == "stopping" and now.reason == "stop":  # its instances die: not theirs
            raise NotRunning(f"group {name!r} was stopped (by a stop) before the change was "
                             f"done; nothing was undone")
        if before is not None:
            check_counts(before[0], name, counts, before[1], ticket, scales)
        dead = [entry for entry in of(now, new[0]) if entry.instance >= new[1]
                and entry.last_exit is not None and not entry.ready
                and not _asked(entry.last_exit)] if new else []
        if dead:
            raise StartError(f"group {name!r}: instance {dead[0].instance}: its target "
                             f"{dead[0].last_exit} before it was ready", dead[0].last_exit)
        time.sleep(POLL)
    raise StopTimeout(f"group {name!r} {what} within {patience:g} s")


def _asked(status: Any) -> bool:
    """Whether an exit was a restart someone asked for (``restart``, a watched file, the
    memory limit), not a death of the target's own: it is spawned again at once, and its
    readiness waited for anew."""
    return status.decision == "restart" and status.reason not in (None, "exit")


def check_counts(directory: Path, name: str, counts: Mapping[str, int],
                 before: Mapping[str, int], ticket: int | None = None,
                 scales: Mapping[str, Any] | None = None) -> None:
    """An ImmortalError if the group's ``spec.json`` records, for one of its programs,
    neither the count asked (``counts``) nor the one it had (``before``: a group that could
    not write its spec keeps it): another command set it since this one asked. With
    ``ticket`` (a scale's id, ``scalerecord``), also if another scale was asked since, to
    the same count too: its caller waits for it, and may undo it, from then on."""
    for program, count in counts.items():
        what = f"program {program!r} of group {name!r}" if program else f"group {name!r}"
        last = read_scales(directory).get(program) if ticket is not None else None
        overtaken = last is not None and last["id"] != ticket
        now = recorded(directory, program)
        if scales is not None:  # an apply's wait: a scale asked since it began
            scaled = read_scales(directory).get(program)
            if scaled is not None and (scaled.get("id"), scaled.get("at")) != scales.get(
                    program):
                raise ImmortalError(
                    f"{what} was scaled to {scaled.get('workers')} instance(s) by another "
                    f"command while this apply waited for {count}; that scale stands "
                    f"(nothing undone here; apply again for {count})")
        if ticket is not None and last is None:  # its record superseded: an apply's count
            raise ImmortalError(
                f"{what} was set to {now if now is not None else 'its'} instance(s) by an "
                f"apply (a reload) while this scale to {count} waited for them; the apply's "
                f"count stands (nothing undone here; scale it again for {count})")
        if last is not None and overtaken:
            now = last.get("workers")
        if overtaken and now == count:
            raise ImmortalError(
                f"{what} was scaled to {count} instance(s) again by another command while "
                f"this scale waited for them; that scale stands, and its caller waits for "
                f"them (nothing undone here)")
        if now is not None and (overtaken or now not in (count, before.get(program, count))):
            raise ImmortalError(
                f"{what} was scaled to {now} instance(s) by another command while this "
                f"change to {count} waited for them; it stays at {now} (scale it again "
                f"for {count})")


def under_way(directory: Path, program: str, workers: int, had: int) -> int:
    """The count a scale of ``program`` to ``workers`` came from, while its caller still
    waits for it (``scalerecord.came_from``); else ``had``. A scale to that same count asked
    meanwhile takes the wait over (``check_counts``): the new instances' deaths before they
    are ready fail it at once, as they would have failed that scale (else it waited out
    its whole patience while they died and were spawned again)."""
    return came_from(read_scales(directory).get(program), workers, had)


def recorded(directory: Path, program: str) -> int | None:
    """How many instances of ``program`` ("": the group's one program) the group's
    ``spec.json`` records; None if it cannot tell."""
    spec = read_json(directory / "spec.json")
    if not isinstance(spec, dict):
        return None
    if not spec.get("programs"):  # a group of one program's: 1 unsaid
        value = spec.get("workers", 1) if not program else None
    else:
        value = next((entry.get("workers", 1) for entry in spec["programs"]
                      if isinstance(entry, dict) and entry.get("name") == program), None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def of(status: Status, program: str | None) -> list[Any]:
    """The instances ``status`` lists of ``program`` (all, if None)."""
    return [entry for entry in status.instances if program in (None, entry.program)]


def settled(status: Status, counts: Mapping[str, int]) -> bool:
    """Whether ``status`` shows each program of ``counts`` with that many instances, each
    running and ready, or finished (0: the program gone)."""
    return all(_runs(status, program, count) for program, count in counts.items())


def _runs(status: Status, program: str, count: int) -> bool:
    """Whether ``status`` shows ``program`` with ``count`` instances, each running and
    ready, or finished (its job done: a final exit code); 0: the program gone."""
    if program and count == 0:
        return program not in status.programs()
    mine = of(status, program or None) if program else status.instances
    return (len(mine) or (1 if not program else 0)) == count and all(
        (entry.state == "running" and entry.ready) or entry.finished for entry in mine) and (
        bool(mine) or (status.state == "running" and status.ready))
