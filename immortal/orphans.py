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

Processes' environments are read through ``_linux.environ_values``: off Linux ``find`` and
``scan`` find nothing, and the group then relies on ``target.lock`` and the target pid
``status.json`` recorded.
"""

from __future__ import annotations

import os
import signal
import time

from ._linux import (boot_ticks, children, environ_values, pidfd_open, process_start_time,
                     processes, shown_title, signal_pidfd)

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence
    from pathlib import Path

TOKEN = "IMMORTAL_GROUP_DIR"  #: names the instance directory in a target's environment


def token(directory: Path | str) -> str:
    """The token's value for a group: its absolute instance directory."""
    return os.path.abspath(directory)


def scan(holders: bool = False) -> dict[str, list[tuple[int, int]]]:
    """Every process of ours that carries a token, by token value (empty off Linux); the
    groups' pipe holders (``holder``) only with ``holders``."""
    found: dict[str, list[tuple[int, int]]] = {}
    for pid, value in environ_values(TOKEN, os.getuid()).items():
        started = process_start_time(pid)
        directory = os.fsdecode(value)
        if started is not None and (holders or not _is_holder(pid, directory)):
            found.setdefault(directory, []).append((pid, started))
    return found


def carrying(variable: str) -> list[tuple[int, int]]:
    """The living processes of ours (root: of any user) whose environment has
    ``variable``, with their start times (none off Linux)."""
    found = []
    for pid in environ_values(variable, os.getuid()):
        started = process_start_time(pid)
        if started is not None:
            found.append((pid, started))
    return found


def holder_title(directory: Path | str) -> str:
    """The title of a group's pipe holder (``holder``), which carries the token too."""
    return f"immortal: holder {token(directory)}"


def role_title(role: str, directory: Path | str, labels: str = "") -> str:
    """The title of a group's supervisor (``role``: daemon or pump), with its programs'
    comments as ``labels``."""
    title = f"immortal: {role} {directory}"
    return f"{title} [{labels}]" if labels else title


def wears_title(pid: int, role: str, directory: Path | str) -> bool:
    """Whether ``pid`` wears the title of ``directory``'s ``role``, whatever its labels."""
    shown = shown_title(pid)
    return shown is not None and _titles(shown, role, directory)


def _titles(shown: str, role: str, directory: Path | str) -> bool:
    """Whether the title ``shown`` is ``directory``'s ``role``'s, whatever its labels."""
    title = role_title(role, directory)
    return shown == title or shown.startswith(title + " [")


def supervisors(directory: Path | str) -> dict[str, int]:
    """The living processes of ours (root: of any user) that wear the title of
    ``directory``'s daemon or pump, by role (empty off Linux, or without titles): a
    group's supervisors found without its files. A scan of every process: for the rare
    start that finds a group's lock file gone (``state.Lock``)."""
    found: dict[str, int] = {}
    for pid in processes(os.getuid()):
        shown = shown_title(pid)
        for role in ("daemon", "pump"):
            if shown is not None and role not in found and _titles(shown, role, directory):
                found[role] = pid
    return found


def _is_holder(pid: int, directory: str) -> bool:
    return shown_title(pid) == holder_title(directory)


def find(directory: Path | str, holders: bool = False) -> list[tuple[int, int]]:
    """The living processes of ours that carry ``directory``'s token: its targets and
    their descendants; with ``holders``, its pipe holders too (every process of the group
    left when no supervisor runs)."""
    return scan(holders).get(token(directory), [])


def holders(directory: Path | str) -> list[tuple[int, int]]:
    """The group's pipe holders alive."""
    value = token(directory)
    return [(pid, started) for pid, started in scan(holders=True).get(value, [])
            if _is_holder(pid, value)]


def _signal(pid: int, started: int, number: int) -> bool:
    """Signal ``pid`` if it is still the process that started at ``started``."""
    try:
        fd = pidfd_open(pid)
    except ProcessLookupError:
        return False
    except OSError:
        fd = -1  # refused: see signal_pidfd
    try:
        if process_start_time(pid) != started:
            return False
        signal_pidfd(fd, pid, number)
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


def end_group(directory: Path | str, timeout: float = 5.0,
              since: int | None = None) -> list[int]:
    """End every process that still carries ``directory``'s token, pipe holders too; the
    pids ended but the holders' (a holder is the group's own, as a supervisor is).

    ``since`` (a start that failed: a boot tick, ``_linux.boot_ticks``): only the holders
    started since then (in that tick too: a tick is long enough for a start to spawn
    its holder), its own. An older one is a dead group's, which keeps what that group's
    targets wrote and no monitor got for the next start to take (``adoption``); it was
    started while its daemon held the group lock, which this start took after it."""
    every = find(directory, holders=True)
    held = {pid: started for pid, started in every if _is_holder(pid, token(directory))}
    chosen = [(pid, started) for pid, started in every
              if since is None or pid not in held or started >= since]
    return [pid for pid in end(chosen, timeout) if pid not in held]


def find_spawned(since: int, others: Collection[int] = ()) -> tuple[int, float] | None:
    """For the daemon: the target a pump spawned but died before naming, as (pid,
    wall-clock start), or None.

    It is our child now (re-parented to us, the subreaper), in our session, and started
    since the pump said it would spawn (``since``, in boot ticks); the oldest if several,
    since whatever it starts in turn is younger. It need not lead its process group yet: a
    pump killed between its fork and the child's ``setpgid`` leaves a child that does so,
    and execs the program, a moment later. An escaped grandchild in a session of its own is
    left out; one born since the spawn is the target's, so younger than the target. Without
    /proc (no list of children, no start times) nothing is found, and the new pump spawns
    anew. ``others``: the known targets of the group's other instances, never this one.
    """
    session = os.getsid(0)
    best: tuple[int, int] | None = None
    for pid in children():
        if pid in others:
            continue
        try:
            if os.getsid(pid) != session:
                continue
        except OSError:
            continue
        start = process_start_time(pid)  # None for a zombie
        if start is not None and start >= since and (best is None or start < best[1]
                                                     or (start == best[1] and pid < best[0])):
            best = (pid, start)
    if best is None:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return best[0], time.time() - (boot_ticks() - best[1]) / ticks


def spawned_by(parent: int, since: int, directory: Path | str, variables: Sequence[str],
               known: Collection[int] = ()) -> dict[str, tuple[int, int]]:
    """The processes a dead pump spawned and named to nobody, by the values of
    ``variables`` in their environment, those set joined by ":" (the slot: ``K``, or
    ``PROGRAM:K`` where the program is set): children of ``parent`` now (the subreaper
    that took them), leading their own process group, carrying ``directory``'s token,
    started since ``since`` (boot ticks), not ``known``; the oldest for each slot; the last
    variable must be set. Off Linux, nothing."""
    ours = b"\0" + TOKEN.encode() + b"=" + os.fsencode(token(directory)) + b"\0"
    found: dict[str, tuple[int, int]] = {}
    for pid in children(parent):
        try:
            if pid in known or os.getpgid(pid) != pid:
                continue
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = b"\0" + handle.read() + b"\0"
        except OSError:
            continue
        values = [_variable(environ, name) for name in variables]
        started = process_start_time(pid)
        if ours not in environ or not values or values[-1] is None or started is None \
                or started < since:
            continue
        value = ":".join(v for v in values if v is not None)
        if value not in found or started < found[value][1]:
            found[value] = (pid, started)
    return found


def _variable(environ: bytes, name: str) -> str | None:
    """The value of ``name`` in ``environ`` (NUL-separated, with a NUL at each end)."""
    prefix = b"\0" + name.encode() + b"="
    at = environ.find(prefix)
    if at < 0:
        return None
    return os.fsdecode(environ[at + len(prefix):].split(b"\0", 1)[0])
