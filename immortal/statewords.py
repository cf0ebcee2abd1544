"""The words of a ``Status`` alone (``str(status)``, the first lines of ``status``;
``render.py`` adds the processes' figures), and the words its states are recorded with.
Light to import, as ``state.py``: ``status`` and ``stop`` are fresh interpreters."""

from __future__ import annotations

import time

from ._linux import is_alive
from .phases import combined

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from .events import ExitStatus
    from .state import InstanceStatus, Status

GONE = "its supervisors were killed without a stop"
STALE = "stale state removed: its processes were killed without a stop"
KILLED = "killed (SIGKILL, no grace period)"
#: A stop whose group's supervisors died before they ended it: the stop ended the rest.
LEFT_ENDED = "stop: its supervisors were gone, and it ended what they left"
FINAL_STATES = ("stopped", "fatal")
#: A group whose first start holds its lock, before its supervisors wrote status.json.
STARTING = "starting"
#: The reason of a group whose start was cut short before it wrote status.json (spec.json
#: alone, the lock free): nothing of it ever ran.
NEVER_RAN = "never ran: its start was cut short before its supervisors began"
ROLES = ("daemon", "pump", "target")


def headline(s: Status) -> str:
    """The first line of ``str(status)`` and of 'status': the name, the state and whether
    it runs."""
    if s.stale:
        left = f"; left running: {' '.join(map(str, s.orphans))}" if s.orphans else ""
        return f"{s.name}: not running ({GONE}{left})"
    if s.reason == STALE and not s.running:
        return f"{s.name}: not running ({s.reason})"
    if s.state == STARTING and not s.running:
        return f"{s.name}: starting (a start is under way; nothing of it runs yet)"
    if not s.running:
        return f"{s.name}: {s.state} (not running)"
    return f"{s.name}: {s.state}" + (" (stalled)" if s.stalled else "")


def summary(s: Status) -> str:
    """``str(status)``: a few lines, from the status alone (no look at the processes)."""
    lines = [headline(s), *program_lines(s)]
    for role in ROLES:
        if role in s.pids and s.running:
            lines.append(f"  {role:<8} pid {s.pids[role]}")
    if s.running:
        for entry in s.instances:  # a group of several: each instance
            label = instance_label(s.name, entry)
            target = f"pid {entry.pid}" if entry.pid else "no target"
            lines.append(f"  {label:<8} {target}, {entry.state}{instance_ready(entry)}, "
                         f"restarts {entry.restarts}"
                         + (f", last {last_text(entry.last_exit)}" if entry.last_exit
                            else ""))
    lines.append(f"  spawned  {s.spawned}, restarts {s.restarts}")
    if s.target_started_at and s.running and s.state == "running":
        lines.append(f"  up       {time.time() - s.target_started_at:.1f} s")
    lines.extend(ready_lines(s))
    lines.extend(scale_lines(s))
    if s.last_exit:
        lines.append(f"  last     {last_text(s.last_exit)}")
    if s.next_restart_at and s.state == "backoff" and s.running:
        lines.append(f"  next     in {max(0.0, s.next_restart_at - time.time()):.1f} s")
    if s.reason and s.state in FINAL_STATES and s.reason != STALE:
        lines.append(f"  reason   {s.reason}")
    if s.listen:
        lines.append(f"  listen   {', '.join(s.listen)}")
    if s.output:
        lines.append(f"  output   {s.output}")
    return "\n".join([*lines, *delivery_lines(s)])


def scale_lines(s: Status) -> list[str]:
    """Each scale not done yet (``scalerecord``): the count asked, what runs, whether its
    caller still waits; nothing once the program runs that count, each instance ready.
    Then the programs an apply changed and has not rolled yet."""
    found = []
    for program, entry in sorted(s.scales.items()):
        asked, caller = int(entry.get("workers", 0)), entry.get("caller")
        mine = [e for e in s.instances if program in ("", e.program)]
        ready = sum(e.state == "running" and e.ready for e in mine) if mine else int(s.ready)
        if not s.running or ((len(mine) or 1) == asked and ready == asked):
            continue
        who = "no caller of it is known"
        if caller:
            who = f"its caller (pid {caller[0]}) " + (
                "waits for it" if is_alive(*caller) else
                "is gone: the count stands, nothing scales it back")
        found.append(f"  scale    {program + ' ' if program else ''}#{entry.get('id')} to "
                     f"{asked} (from {entry.get('had')}): {len(mine) or 1} instance(s), "
                     f"{ready} ready; {who}")
    if s.unrolled and s.running:
        found.append(f"  unrolled {', '.join(s.unrolled)}: changed by the last apply and not "
                     "rolled yet, they run the definition before it (the next reload rolls "
                     "them)")
    return found


#: The reasons of restarts the operator's options asked for, as 'status' words them.
RESTARTED = {"memory": "over its memory limit", "watch": "a watched file changed"}


def last_text(last: ExitStatus) -> str:
    """How the last target ended, and why it was restarted if an option asked for it."""
    why = RESTARTED.get(last.reason or "") if last.decision == "restart" else None
    return f"{last} (restarted: {why})" if why else str(last)


def instance_label(name: str, entry: InstanceStatus) -> str:
    """How ``list`` and ``status`` name an instance: ``GROUP:K``, or ``GROUP/PROGRAM:K`` in
    a group of several programs (the address the commands take)."""
    if entry.program:
        return f"{name}/{entry.program}:{entry.instance}"
    return f"{name}:{entry.instance}"


def program_lines(s: Status) -> list[str]:
    """A group of several programs: a line per program, its state and instances."""
    lines = []
    for program, entries in s.programs().items():
        ready = "" if all(e.ready for e in entries) or not s.running else " (not ready)"
        state = combined(e.state for e in entries)
        lines.append(f"  {s.name}/{program}: {state}{ready}, {len(entries)} instance(s), "
                     f"restarts {sum(e.restarts for e in entries)}")
    return lines


def ready_lines(s: Status) -> list[str]:
    """The status lines on the current target's readiness, and its notify STATUS text (a
    group of several: whether every instance is ready, each one's on its own line)."""
    if not s.running or ("target" not in s.pids and not s.instances):
        return []
    lines = [f"  ready    {'yes' if s.ready else 'not yet'}"]
    if s.notify_status:
        lines.append(f"  notify   {s.notify_status}")
    return lines


def instance_ready(entry: InstanceStatus) -> str:
    """What an instance's line says of its readiness: nothing once ready or without a
    target, else that it is not yet; its notify STATUS text if it sent one."""
    text = " (not ready)" if entry.pid and not entry.ready else ""
    if entry.notify_status:
        text += f", notify {entry.notify_status!r}"
    return text


def delivery_lines(s: Status) -> list[str]:
    """The status lines on the output's delivery: a stall, lines dropped per monitor."""
    lines = []
    if s.stalled and s.running:
        lines.append(f"  stalled  {stall_text(s.stalled)}")
    if s.dropped:
        # (backpressure "drop", or a call pumps kept dying in: ``suspects``)
        lines.append(f"  dropped  {s.dropped} lines not handed to a monitor")
        for monitor, counts in s.monitors.items():
            if counts.get("dropped"):
                lines.append(f"    {monitor}: dropped {counts['dropped']}")
    return lines


def stall_text(stalled: Mapping[str, Any]) -> str:
    """What ``stalled`` says, in words: for how long the pump has not drained the output
    and, if a monitor call is under way, which monitor and since when."""
    now = time.time()
    text = (f"the pump has not drained the target's output for "
            f"{max(0.0, now - float(stalled.get('since') or now)):.0f} s")
    if stalled.get("monitor"):
        since = float(stalled.get("monitor_since") or now)
        text += (f"; monitor {stalled['monitor']!r} has not returned from a call made "
                 f"{max(0.0, now - since):.0f} s ago")
    return text
