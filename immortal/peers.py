"""A group's supervisors as its daemon names them, proven here.

``status.json`` names the roles that wrote it; when they are dead, or were replaced while
it could not be written (a full disk: it is written again once there is room), the daemon
that serves the group's socket, and says its start is over, tells which roles run now:
their pids and start times as its own pid namespace sees them. A reader in another one (a
container's group, its home shared with the host) would find other processes under those
numbers: each role is proven here by its start time, the daemon found as the socket's peer
and the pump as its child where the numbers differ.
"""

from __future__ import annotations

from . import control
from ._linux import children, process_start_time
from .errors import ImmortalError
from .instance import SOCKET_NAME

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from .state import Status

#: the roles a daemon's status answer names
ROLES = ("daemon", "pump")


def behind(directory: Path, status: Status) -> Status:
    """``status`` with the roles the daemon names, where it answers and they are proven
    here; else as it was."""
    try:
        answer, peer = control.ask(directory / SOCKET_NAME, {"cmd": "status"}, timeout=1.0)
    except (ImmortalError, OSError):
        return status
    if not answer.get("started") or not isinstance(answer.get("daemon"), int):
        return status  # a start under way, which wait_start waits for
    roles = proven(answer, peer)
    status.pids = {**{k: v for k, v in status.pids.items() if k not in ROLES},
                   **{role: pid for role, (pid, _) in roles.items()}}
    status.start_times = {**{k: v for k, v in status.start_times.items() if k not in ROLES},
                          **{role: started for role, (_, started) in roles.items()}}
    status.running = bool(status.live_roles())
    return status


def proven(answer: dict[str, Any], peer: int | None) -> dict[str, tuple[int, int]]:
    """The daemon's and pump's pids and start times its status answer gives, each proven
    here: the pid shows the start time the daemon saw. A daemon in another pid namespace
    (a container sharing the home) names pids that are other processes here (a pid
    signalled on its word would be a bystander's): there the daemon is the socket's peer,
    and the pump its child, found by their start times; else the role is left out."""
    reported = answer.get("start_times")
    reported = reported if isinstance(reported, dict) else {}
    found: dict[str, tuple[int, int]] = {}
    for role in ROLES:
        pid, started = answer.get(role), reported.get(role)
        if not isinstance(pid, int) or not isinstance(started, int):
            continue
        if process_start_time(pid) != started:
            near = [peer] if role == "daemon" and peer else (
                children(found["daemon"][0]) if "daemon" in found else [])
            pid = next((other for other in near if process_start_time(other) == started), 0)
        if pid:
            found[role] = (pid, started)
    return found
