"""A group's processes found by a token in their environment, whatever fds they closed.

Every target starts with ``IMMORTAL_GROUP_DIR=<absolute instance directory>`` in its
environment, and its descendants inherit it (unless they clear their environment). That
finds them after every supervisor of the group is gone, even when they closed
``target.lock`` (many daemons call ``closerange(3, ...)``) or escaped to another session:
a new start of the name ends them before it spawns, ``list`` shows them and ``stop`` ends
them. The supervisors never carry the token (``standby.role_env`` removes it), so a group
started from inside another group's target is not taken for part of it.

A process counts only if it is ours (our uid; root's token holders of any uid, since a
target started as root may drop its privileges) and is signalled only while it is still
the process found: its pid together with its kernel start time.

Linux reads ``/proc/PID/environ``. Elsewhere ``find`` and ``scan`` find nothing: the group
then relies on ``target.lock`` and the target pid ``status.json`` recorded.
"""

from __future__ import annotations

import os
import signal
import time

from .state import process_start_time

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from pathlib import Path

TOKEN = "IMMORTAL_GROUP_DIR"  #: names the instance directory in a target's environment
_PREFIX = b"\0" + TOKEN.encode() + b"="


def token(directory: Path | str) -> str:
    """The token's value for a group: its absolute instance directory."""
    return os.path.abspath(directory)


def _environ(pid: str) -> bytes | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return b"\0" + handle.read()
    except OSError:
        return None  # gone, a kernel thread, or not ours to read


def scan() -> dict[str, list[tuple[int, int]]]:
    """Every process of ours that carries a token, by token value (empty off Linux)."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return {}
    uid, me = os.getuid(), os.getpid()
    found: dict[str, list[tuple[int, int]]] = {}
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            if uid and os.stat(f"/proc/{name}").st_uid != uid:
                continue
        except OSError:
            continue
        environ = _environ(name)
        at = -1 if environ is None else environ.find(_PREFIX)
        if at < 0:
            continue
        value = environ[at + len(_PREFIX):].split(b"\0", 1)[0]
        started = process_start_time(int(name))
        if started is not None:
            found.setdefault(os.fsdecode(value), []).append((int(name), started))
    return found


def find(directory: Path | str) -> list[tuple[int, int]]:
    """The living processes of ours that carry ``directory``'s token."""
    return scan().get(token(directory), [])


def _signal(pid: int, started: int, number: int) -> bool:
    """Signal ``pid`` if it is still the process that started at ``started``."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):
        fd = -1  # no pidfds: a pid reused between the check and the kill is not excluded
    try:
        if process_start_time(pid) != started:
            return False
        if fd >= 0:
            signal.pidfd_send_signal(fd, number)
        else:
            os.kill(pid, number)
        return True
    except (ProcessLookupError, PermissionError):
        return False
    finally:
        if fd >= 0:
            os.close(fd)


def end(found: list[tuple[int, int]], timeout: float = 5.0) -> list[int]:
    """SIGKILL the processes ``found`` (each proven by its start time); return the pids
    signalled once they are gone, or ``timeout`` has passed."""
    killed = [(pid, started) for pid, started in found
              if _signal(pid, started, signal.SIGKILL)]
    deadline = time.monotonic() + timeout
    for pid, started in killed:
        # A zombie counts as gone: it has no start time any more (its parent reaps it).
        while process_start_time(pid) == started and time.monotonic() < deadline:
            time.sleep(0.001)  # SIGKILL was sent: a matter of microseconds
    return [pid for pid, _ in killed]


def end_group(directory: Path | str, timeout: float = 5.0) -> list[int]:
    """End every process that still carries ``directory``'s token; the pids ended."""
    return end(find(directory), timeout)
