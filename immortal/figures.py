"""Figures of a group's living processes: memory, open fds and pipes, children, CPU time.

The only module that imports ``psutil``: it reads these portably where reading the
kernel's process files by hand would not (the count of pipes, which psutil lacks, comes
from ``_linux.pipe_count``). A figure is given only for a process proven alive, by its pid
together with the kernel start time ``status.json`` recorded for it (see
``_linux.is_alive``): a pid alone may name a stranger that reused it.
"""

from __future__ import annotations

import psutil

from ._linux import is_alive, pipe_count

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any

    from .state import Status

ROLES = ("daemon", "pump", "target")


def _get(call: Any) -> Any:
    """One figure; None where the system refuses it (a field we may not read)."""
    try:
        return call()
    except (psutil.AccessDenied, NotImplementedError):
        return None


def figures(pid: int, start_time: int | None = None) -> dict[str, Any] | None:
    """The figures of ``pid`` if it is alive and, when ``start_time`` (clock ticks, as in
    ``status.json``'s ``start_times``) is given, still the process that started then.

    Keys: ``pid``, ``rss`` (bytes), ``memory_percent`` (of physical memory), ``fds`` (open
    file descriptors), ``pipes`` (how many of those are pipes), ``children`` (direct
    children now), ``cpu`` (user + system seconds), ``started`` (wall clock, epoch
    seconds). A figure the system does not give is None. Returns None if the process is
    gone, is a zombie, or is another process that reused the pid.
    """
    if not pid or not is_alive(pid, start_time):
        return None
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            memory = _get(process.memory_info)
            percent = _get(process.memory_percent)
            fds = _get(process.num_fds)
            cpu = _get(process.cpu_times)
            started = _get(process.create_time)
            children = _get(process.children)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    pipes = pipe_count(pid)
    # Read again: had the pid died and been reused while we read, the figures are a
    # stranger's.
    if not is_alive(pid, start_time):
        return None
    return {
        "pid": pid,
        "rss": memory.rss if memory is not None else None,
        "memory_percent": round(percent, 3) if percent is not None else None,
        "fds": fds,
        "pipes": pipes,
        "children": len(children) if children is not None else None,
        "cpu": round(cpu.user + cpu.system, 3) if cpu is not None else None,
        "started": started,
    }


def group_figures(status: Status) -> dict[str, dict[str, Any]]:
    """The figures of the group's daemon, pump and target, for those proven alive now."""
    found = {}
    for role in ROLES:
        pid = status.pids.get(role)
        if not pid:
            continue
        values = figures(pid, status.start_times.get(role))
        if values is not None:
            found[role] = values
    for entry in status.instances:  # a group of several: each instance's target
        if entry.pid:
            values = figures(entry.pid, entry.start_time)
            if values is not None:
                found[instance_key(entry.instance, entry.program)] = values
    return found


def instance_key(k: int, program: str | None = None) -> str:
    """Where ``group_figures`` puts the figures of instance ``k``'s target (of
    ``program``'s, in a group of several programs)."""
    return f"instance:{program}:{k}" if program else f"instance:{k}"
