"""What ``immortal list`` prints: a row per group, and below a running group a row per
program and per instance, in columns as wide as their widest cell; or ``--json``."""

from __future__ import annotations

import json
import time

from .render import figures_of, human_bytes, human_duration, memory, uptime
from .state import FINAL_STATES, ROLES, instance_label

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


def _list_table(rows: list[tuple[Status, float | None, int | None]]) -> list[str]:
    # TARGET repeats the target's pid as a column of its own, for scripts that pick it out.
    # A name longer than the column widens it: the columns stay aligned.
    wide = max(20, *(len(s.name) for s, _, _ in rows),
               *(len(instance_label(s.name, e)) for s, _, _ in rows for e in s.instances))
    # LISTEN, last, only when a group listens: the columns before it stay as they were.
    listens = any(s.listen for s, _, _ in rows)
    lines = [f"{'NAME':<{wide}} {'STATE':<11} {'PIDS':<20} {'TARGET':>8} {'UPTIME':>7} "
             f"{'RESTARTS':>8} {'MEMORY':>7}" + ("  LISTEN" if listens else "")]
    for s, uptime_, memory_ in rows:
        state = s.state if s.running or s.state in FINAL_STATES else f"{s.state}*"
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
        lines.append(f"{s.name:<{wide}} {state:<11} {pids:<20} {target!s:>8} {up:>7} "
                     f"{s.restarts:>8} {mem:>7}"
                     + (f"  {','.join(s.listen) or '-'}" if listens else ""))
        if s.running:
            lines.extend(_program_row(s, program, entries, wide)
                         for program, entries in s.programs().items())
            lines.extend(_instance_row(s, entry, wide) for entry in s.instances)
    return lines


def _program_row(s: Status, program: str, entries: list[InstanceStatus], wide: int) -> str:
    """A row of ``list`` for one program of a group of several programs: ``site/web``,
    its state and its instances' restarts."""
    from .phases import combined

    label = f"{s.name}/{program}"
    return (f"{label:<{wide}} {combined(e.state for e in entries):<11} "
            f"{f'{len(entries)} instance(s)':<20} {'-':>8} {'-':>7} "
            f"{sum(e.restarts for e in entries):>8} {'-':>7}")


def _instance_row(s: Status, entry: InstanceStatus, wide: int) -> str:
    """A row of ``list`` for one instance of a group of several: ``web:2``, or
    ``site/web:2`` in a group of several programs."""
    label = instance_label(s.name, entry)
    up = human_duration(time.time() - entry.started_at) \
        if entry.pid and entry.started_at else "-"
    return (f"{label:<{wide}} {entry.state:<11} {'':<20} {entry.pid or '-'!s:>8} {up:>7} "
            f"{entry.restarts:>8} {'-':>7}")


def _list_notes(found: list[Status]) -> list[str]:
    notes = []
    if any(s.orphans for s in found):
        notes.append("orphaned: its supervisors were killed but these processes run on; "
                     "'immortal stop NAME' ends them, and so does 'immortal run'")
    if any(s.stale and not s.orphans for s in found):
        notes.append("* its processes are gone (killed without a stop); 'immortal run' "
                     "starts it anew")
    return notes
