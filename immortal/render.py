"""A group's state in words and in JSON: what ``status`` shows (``list``'s table is
``listview.py``'s).

Turns a ``Status`` and the figures of its processes into text; the words of a ``Status``
alone (``str(status)``, the first lines of ``status``) are ``state.py``'s. Light
to import: ``stop`` and ``status`` are fresh interpreters that pay for every import, so
``figures`` (psutil) and ``datetime`` are imported only by the functions that need them.
"""

from __future__ import annotations

import json
import time

from .state import (FINAL_STATES, ROLES, STALE, delivery_lines, headline, instance_label,
                    last_text, program_lines, read_json, ready_lines, scale_lines)
from .state import stall_text, summary  # noqa: F401  (the words of a Status: importable here)

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any

    from .state import InstanceStatus, Status


def human_duration(seconds: float) -> str:
    """5s, 3m12s, 2h04m, 3d02h."""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    if total < 86400:
        return f"{total // 3600}h{total % 3600 // 60:02d}m"
    return f"{total // 86400}d{total % 86400 // 3600:02d}h"


def human_bytes(count: int) -> str:
    """512B, 12.3K, 12.3M, 1.2G (powers of 1024)."""
    value = float(count)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _iso(when: float | None) -> str | None:
    if when is None:
        return None
    from datetime import datetime

    return datetime.fromtimestamp(when).astimezone().isoformat(timespec="seconds")


# What the figures of the living processes add ------------------------------------------------

def uptime(s: Status, figures: dict[str, dict[str, Any]]) -> float | None:
    """Seconds the current target has run, if it runs now."""
    target = figures.get("target")
    if not s.running or target is None:
        return None
    started = s.target_started_at or target.get("started")
    return None if started is None else max(0.0, time.time() - started)


def memory(figures: dict[str, dict[str, Any]]) -> int | None:
    """The RSS of the group's living daemon, pump and target together, in bytes."""
    sizes = [f["rss"] for f in figures.values() if f.get("rss") is not None]
    return sum(sizes) if sizes else None


def interpreter(s: Status) -> str | None:
    """What runs the group's FILE (a .py file's Python, or --exec), from its spec.json."""
    from pathlib import Path

    if not s.directory:
        return None
    spec = read_json(Path(s.directory) / "spec.json") or {}
    value = spec.get("exec")
    return value if isinstance(value, str) else None


def _recorded_programs(s: Status) -> list[dict[str, Any]]:
    """A group of several programs: each program as its spec.json records it (an apply
    rewrites it)."""
    from pathlib import Path

    if not s.directory:
        return []
    spec = read_json(Path(s.directory) / "spec.json") or {}
    return [p for p in spec.get("programs") or () if isinstance(p, dict)]


def outputs(s: Status) -> dict[str, str]:
    """A group of several programs: each program's output file, from its spec.json."""
    return {str(p.get("name")): str(p["log_path"]) for p in _recorded_programs(s)
            if p.get("log_path")}


def figures_of(s: Status) -> dict[str, dict[str, Any]]:
    if not s.running:
        return {}
    from .figures import group_figures

    return group_figures(s)


def _role_line(role: str, pid: int | None, values: dict[str, Any] | None) -> str:
    if values is None:
        return f"  {role:<8} pid {pid} (gone)"
    parts = [f"pid {pid}"]
    if values.get("rss") is not None:
        parts.append(f"memory {human_bytes(values['rss'])}")
    if values.get("fds") is not None:
        pipes = values.get("pipes")
        parts.append(f"fds {values['fds']}"
                     + (f" ({pipes} pipes)" if pipes is not None else ""))
    if values.get("cpu") is not None:
        cpu = values["cpu"]
        parts.append(f"cpu {cpu:.2f}s" if cpu < 60 else f"cpu {human_duration(cpu)}")
    return f"  {role:<8} " + ", ".join(parts)


def _instance_line(name: str, entry: InstanceStatus, figures: dict[str, dict[str, Any]],
                   now: float) -> str:
    """One instance of a group of several: ``web:2    pid 123, running, up 5s, ...``."""
    values = figures.get(f"instance:{entry.program}:{entry.instance}" if entry.program
                         else f"instance:{entry.instance}")
    parts = [f"pid {entry.pid}" if entry.pid else "no target",
             entry.state + (" (not ready)" if entry.pid and not entry.ready else "")]
    if entry.pid and entry.started_at:
        parts.append(f"up {human_duration(now - entry.started_at)}")
    if entry.state == "backoff" and entry.next_restart_at:
        parts.append(f"next in {max(0.0, entry.next_restart_at - now):.1f} s")
    parts.append(f"restarts {entry.restarts}")
    if values and values.get("rss") is not None:
        parts.append(f"memory {human_bytes(values['rss'])}")
    if entry.notify_status:
        parts.append(f"notify {entry.notify_status!r}")
    if entry.last_exit:
        parts.append(f"last {last_text(entry.last_exit)}")
    if entry.reason and entry.state in FINAL_STATES:
        parts.append(f"reason {entry.reason}")
    label = instance_label(name, entry)
    return f"  {label:<8} " + ", ".join(parts)


# 'immortal status' ---------------------------------------------------------------------------

def operator_lines(s: Status) -> list[str]:
    """What the group listens on, who its targets run as, its label."""
    lines = []
    if s.listen and (s.running or s.orphans):  # a stopped group listens on nothing
        lines.append(f"  listen   {', '.join(s.listen)}")
    if s.user:
        lines.append(f"  user     {s.user}")
    if s.comment:
        lines.append(f"  comment  {s.comment}")
    return lines


def status_view(s: Status, as_json: bool = False, program: str | None = None) -> str:
    """What 'immortal status' prints: the status, with the figures of its processes;
    ``program``: what of it is that program's alone (``of_program``, 'status
    GROUP/PROGRAM')."""
    if program is not None:
        s = of_program(s, program)
    now = time.time()
    figures = figures_of(s)
    if as_json:
        target = figures.get("target")
        return json.dumps({**s.to_json(), "stale": s.stale, "orphans": s.orphans, "now": now,
                           "uptime": uptime(s, figures),
                           "children": target.get("children") if target else None,
                           "memory": memory(figures), "exec": interpreter(s),
                           "figures": figures,
                           **({} if program is None else {"program": program})}, indent=1)
    return _status_text(s, figures, now)


def of_program(s: Status, program: str) -> Status:
    """The part of a group's status that is ``program``'s (a program of a group of
    several): the group's name, state and liveness (its first line), then the program's
    instances, with their spawns, restarts and readiness, its output file, its user and
    comment, its monitors' dropped lines, and the group's last roll if it rolled this
    program. Not the group's supervisors, start, directory or addresses (``status NAME``
    shows them), nor what is another program's; not the group's last exit either (each
    instance has its own)."""
    from .state import Status

    recorded = next((p for p in _recorded_programs(s) if p.get("name") == program), {})
    entries = s.programs().get(program, [])
    roll = s.roll if any(str(slot).startswith(f"{program}:")
                         for slot in (s.roll or {}).get("slots") or ()) else None
    monitors = {name: counts for name, counts in s.monitors.items()
                if name.startswith(f"{program}/")}
    return Status(name=s.name, state=s.state, running=s.running, reason=s.reason,
                  strategy=s.strategy, stalled=s.stalled, orphans=s.orphans,
                  instances=entries, spawned=sum(e.spawned for e in entries),
                  restarts=sum(e.restarts for e in entries),
                  ready=bool(entries) and all(e.ready for e in entries),
                  output=outputs(s).get(program), roll=roll, monitors=monitors,
                  scales={p: e for p, e in s.scales.items() if p == program},
                  dropped=sum(int(c.get("dropped") or 0) for c in monitors.values()),
                  user=_text(recorded.get("user")), comment=_text(recorded.get("comment")))


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _status_text(s: Status, figures: dict[str, dict[str, Any]], now: float) -> str:
    lines = [headline(s), *program_lines(s)]
    if s.reason and s.state in FINAL_STATES and s.reason != STALE:
        lines.append(f"  reason   {s.reason}")
    if s.running:
        for role in ROLES:
            if role in s.pids:
                lines.append(_role_line(role, s.pids[role], figures.get(role)))
        lines.extend(_instance_line(s.name, entry, figures, now) for entry in s.instances)
    children = figures.get("target", {}).get("children")
    counts = [f"spawned {s.spawned}", f"restarts {s.restarts}"]
    if children is not None:
        counts.insert(0, f"children {children}")
    lines.append("  " + ", ".join(counts))
    if s.started_at:
        lines.append(f"  started  {_iso(s.started_at)}")
    lines.append(f"  now      {_iso(now)}")
    up = uptime(s, figures)
    if up is not None:
        lines.append(f"  up       {human_duration(up)} (target)")
    lines.extend(ready_lines(s))
    lines.extend(roll_lines(s))
    lines.extend(scale_lines(s))
    if s.last_exit:
        lines.append(f"  last     {last_text(s.last_exit)}")
    if s.next_restart_at and s.state == "backoff" and s.running:
        lines.append(f"  next     {_iso(s.next_restart_at)} "
                     f"(in {max(0.0, s.next_restart_at - now):.1f} s)")
    lines.extend(operator_lines(s))
    if s.output:
        lines.append(f"  output   {s.output}")
    lines.extend(f"  output   {program}: {path}" for program, path in outputs(s).items())
    runs_with = interpreter(s)
    if runs_with:
        lines.append(f"  exec     {runs_with}")
    if s.directory:
        lines.append(f"  dir      {s.directory}")
    return "\n".join([*lines, *delivery_lines(s)])


def roll_lines(s: Status) -> list[str]:
    """The line on the group's last rolling restart (``rollout``): in progress, with the
    replacements under way, or how it ended."""
    roll = s.roll
    if not roll or not s.running and roll.get("state") == "rolling":
        return []
    slots = roll.get("slots") or []
    done = f"{len(roll.get('replaced') or [])} of {len(slots)} replaced"
    head = f"  roll     #{roll.get('id')} {roll.get('state')}"
    if roll.get("state") == "rolling":
        under_way = ", ".join(f"{_slot_address(s.name, k)} pid {pid}" for k, (pid, _) in
                              sorted((roll.get("replacements") or {}).items(),
                                     key=lambda item: _slot_order(item[0])))
        return [f"{head} (batch {roll.get('batch')}): {done}"
                + (f"; replacing {under_way}" if under_way else "")]
    why = roll.get("why")
    return [f"{head}: {done}" + (f"; {why}" if why else "")]


def _slot_address(name: str, slot: str) -> str:
    """A roll's slot (``K``, or ``PROGRAM:K`` in a group of several programs) as the
    commands address it: ``NAME:K``, ``GROUP/PROGRAM:K``."""
    return f"{name}/{slot}" if ":" in slot else f"{name}:{slot}"


def _slot_order(slot: str) -> tuple[str, int]:
    program, _, number = slot.rpartition(":")
    return program, int(number) if number.isdecimal() else -1


# 'immortal monitors' ------------------------------------------------------------------------

def monitors_view(rows: list[dict[str, Any]], as_json: bool = False) -> str:
    """What 'immortal monitors' prints: one row per installed monitor."""
    if as_json:
        return json.dumps(rows, indent=1)
    return "\n".join(f"{row['name']:<16} {row['distribution'] or '?'} {row['version'] or ''}  "
                     f"({row['object']})" for row in rows)


# 'immortal run' ------------------------------------------------------------------------------

def started_view(name: str, strategy: str, s: Status) -> str:
    """What 'immortal run' prints once the group has started."""
    pids = ", ".join([*(f"{role} {s.pids[role]}" for role in ROLES if role in s.pids),
                      *(f"{instance_label(name, e)} {e.pid}" for e in s.instances if e.pid)])
    runs_with = interpreter(s)
    # The interpreter is named: from a pipx install it is not the user's environment.
    lines = [f"started {name!r} ({strategy}"
             + (f", with {runs_with}" if runs_with else "") + f"): {pids}"]
    if s.listen:
        lines.append(f"listening on: {', '.join(s.listen)}")
    if s.output:
        lines.append(f"output: {s.output}")
    lines.extend(f"output: {program}: {path}" for program, path in outputs(s).items())
    return "\n".join(lines)
