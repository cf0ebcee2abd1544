"""What ``immortal list`` prints: a row per group, and below a running group a row per
program and per instance, in columns as wide as their widest cell; or ``--json``."""

from __future__ import annotations

import json
import time

from .render import figures_of, human_bytes, human_duration, memory, uptime
from .state import ROLES, instance_label

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from pathlib import Path

    from .state import InstanceStatus, Status


def _with_orphans(found: list[Status]) -> None:
    """Fill in ``orphans`` for the groups that do not run: one pass over the processes,
    only when some group does not run."""
    if all(s.running for s in found):
        return
    from .orphans import scan, token

    carriers = scan()
    for s in found:
        if not s.running and s.directory:
            s.orphans = [pid for pid, _ in carriers.get(token(s.directory), [])]


def list_view(found: list[Status], home: Path, as_json: bool = False) -> str:
    """What 'immortal list' prints for the groups ``found`` in ``home``."""
    _with_orphans(found)
    rows = []
    for s in found:
        figures = figures_of(s)
        rows.append((s, uptime(s, figures), memory(figures)))
    if as_json:
        return json.dumps([{**s.to_json(), "stale": s.stale, "orphans": s.orphans,
                            "uptime": up, "memory": mem} for s, up, mem in rows], indent=1)
    if not found:
        return f"no groups in {home}"
    return "\n".join([*_list_table(rows), *_list_notes(found), f"home: {home}"])


# The columns of 'list': heading, least width, alignment. A wider cell (a long name, the
# 7-digit pids of a high pid_max) widens its column: the columns stay aligned.
_COLUMNS = (("NAME", 20, "<"), ("STATE", 11, "<"), ("PIDS", 20, "<"), ("TARGET", 8, ">"),
            ("UPTIME", 7, ">"), ("RESTARTS", 8, ">"), ("MEMORY", 7, ">"))


def _list_table(rows: list[tuple[Status, float | None, int | None]]) -> list[str]:
    # TARGET repeats the target's pid as a column of its own, for scripts that pick it out.
    cells: list[tuple[str, ...]] = []
    listening: list[str | None] = []  # a group's LISTEN cell; None for its rows below it
    for s, uptime_, memory_ in rows:
        cells.append(_group_cells(s, uptime_, memory_))
        # Only while something holds the sockets: a stopped group listens on nothing.
        listening.append(",".join(s.listen) if s.running or s.orphans else "")
        if s.running:
            for program, entries in s.programs().items():
                cells.append(_program_cells(s, program, entries))
                listening.append(None)
            for entry in s.instances:
                cells.append(_instance_cells(s, entry))
                listening.append(None)
    widths = [max(least, *(len(row[at]) for row in cells))
              for at, (_, least, _) in enumerate(_COLUMNS)]

    def line(row: tuple[str, ...]) -> str:
        return " ".join(f"{cell:{align}{width}}"
                        for cell, width, (_, _, align) in zip(row, widths, _COLUMNS))

    # LISTEN, last, only when a group listens: the columns before it stay as they were.
    listens = any(listening)
    lines = [line(tuple(heading for heading, _, _ in _COLUMNS))
             + ("  LISTEN" if listens else "")]
    for row, listen in zip(cells, listening):
        lines.append(line(row) + (f"  {listen or '-'}" if listens and listen is not None
                                  else ""))
    return lines


def _group_cells(s: Status, uptime_: float | None, memory_: int | None) -> tuple[str, ...]:
    state = f"{s.state}*" if s.stale else s.state
    if s.running:
        pids = "/".join(str(s.pids.get(role, "-")) for role in ROLES)
        target = s.pids.get("target", "-")
    elif s.orphans:
        state = "orphaned"
        pids = "-/-/" + ",".join(map(str, s.orphans))
        target = s.pids["target"] if s.pids.get("target") in s.orphans else "-"
    else:
        pids, target = "-", "-"
    up = human_duration(uptime_) if uptime_ is not None else "-"
    mem = human_bytes(memory_) if memory_ is not None else "-"
    return s.name, state, pids, str(target), up, str(s.restarts), mem


def _program_cells(s: Status, program: str, entries: list[InstanceStatus]
                   ) -> tuple[str, ...]:
    """A row of ``list`` for one program of a group of several programs: ``site/web``,
    its state and its instances' restarts."""
    from .phases import combined

    return (f"{s.name}/{program}", combined(e.state for e in entries),
            f"{len(entries)} instance(s)", "-", "-",
            str(sum(e.restarts for e in entries)), "-")


def _instance_cells(s: Status, entry: InstanceStatus) -> tuple[str, ...]:
    """A row of ``list`` for one instance of a group of several: ``web:2``, or
    ``site/web:2`` in a group of several programs."""
    up = human_duration(time.time() - entry.started_at) \
        if entry.pid and entry.started_at else "-"
    return (instance_label(s.name, entry), entry.state, "", str(entry.pid or "-"), up,
            str(entry.restarts), "-")


def _list_notes(found: list[Status]) -> list[str]:
    notes = []
    if any(s.orphans for s in found):
        notes.append("orphaned: its supervisors were killed but these processes run on; "
                     "'immortal stop NAME' ends them; 'immortal run' of the same "
                     "command adopts them (of another, ends them)")
    if any(s.stale and not s.orphans for s in found):
        notes.append("* its processes are gone (killed without a stop); 'immortal run' "
                     "starts it anew")
    return notes
