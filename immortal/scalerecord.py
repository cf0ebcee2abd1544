"""The last scale asked of each program (``Group.scale``, ``immortal scale``): its count,
the count it found, and who asked, in ``scale.json`` in the instance directory; written
here, by the group's root (its daemon, or a pump without one) as it takes the request;
read by ``instance.read_scales``, for the callers that wait for a scale and for ``status``
(``statewords.scale_lines``).

A scale's caller waits for its count and undoes a failed scale up; a later scale of the
same program, even to the same count, takes that over: it has another ``id``, and the
earlier caller, seeing it, fails at once and undoes nothing. A caller that dies while it
waits undoes nothing either: the count it asked stands, and ``status`` shows it beside
what runs, and that nobody waits for it any more.
"""

from __future__ import annotations

import time

from ._linux import is_alive, process_start_time
from .instance import SCALES, read_json, read_scales, write_json

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any


def note(directory: Path, program: str, workers: int, had: int,
         caller: int | None) -> int:
    """Record a scale of ``program`` ("": the group's one program) to ``workers``, from
    ``had``, asked by the process ``caller``; its id. Every scale is recorded, one that
    changes no count too: it is the one its caller's wait is for from then on."""
    records = read_scales(directory)
    if workers == had:  # the wait of a scale to this count taken over: from where it came
        had = came_from(records.get(program), workers, had)
    ident = max((int(entry.get("id", 0)) for entry in records.values()), default=0) + 1
    started = process_start_time(caller) if caller else None
    status = read_json(directory / "status.json") or {}
    records[program] = {"id": ident, "workers": workers, "had": had, "at": time.time(),
                        "caller": [caller, started] if caller and started else None,
                        "group_started_at": status.get("started_at")}
    write_json(directory / SCALES, records)
    return ident


def came_from(last: dict[str, Any] | None, workers: int, had: int) -> int:
    """The count a scale to ``workers`` came from, by its record ``last``, while its caller
    still waits for it (alive, by its start time); else ``had``. A scale to that same count
    asked meanwhile takes the wait over (``settling.under_way``), and is recorded as coming
    from there too, so that a third one takes it over in turn."""
    if last is None or last.get("workers") != workers:
        return had
    came, caller = last.get("had"), last.get("caller")
    if type(came) is not int or not 0 < came < had or not caller:
        return had
    try:
        return came if is_alive(int(caller[0]), int(caller[1])) else had
    except (TypeError, ValueError, IndexError):
        return had


def noted(directory: Path, program: str, workers: int, had: int,
          caller: int | None) -> dict[str, Any]:
    """The scale recorded (``note``): its id, as its caller's answer; none if it cannot be
    written (the scale is carried out all the same)."""
    try:
        return {"scale": note(directory, program, workers, had, caller)}
    except OSError as exc:
        from . import rolelog  # a role's: imported only then

        rolelog.report("spec", f"immortal: cannot write {SCALES}: {exc}\n")
        return {}


def superseded(directory: Path, programs: list[str]) -> None:
    """An apply set the count of ``programs``: a scale of them asked before is no longer
    the one in force (nor shown as not done yet). Its caller, if it still waits, sees the
    count another command set (``settling.check_counts``)."""
    try:
        records = read_scales(directory)
        if any(program in records for program in programs):
            write_json(directory / SCALES, {program: entry for program, entry
                                            in records.items() if program not in programs})
    except OSError as exc:
        from . import rolelog  # a role's: imported only then

        rolelog.report("spec", f"immortal: cannot write {SCALES}: {exc}\n")
