"""Steps 3 to 5 of a start (``launcher.py``'s docstring lists them), the same for a group
of one program and of several: the instance directory found safe to use, then made and
locked, the orphaned target to adopt decided, the listen sockets bound and ``spec.json``
written. A failure after the lock removes the files they wrote, while the lock is still
held (never a directory or a lock file: another start may have opened them).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import adoption, orphans
from . import listen as listening
from .errors import ImmortalError, StartError, unusable_home
from .instance import UNROLLED
from .roles import Adopt
from .spec import Spec
from .state import Lock, check_dir, check_socket_path, ensure_dir, read_json, write_json


def check_place(directory: Path) -> None:
    """Step 3: the instance directory, if it exists, is safe to use (not a symlink, ours,
    not writable by others), and its socket paths fit. Nothing is created."""
    check_socket_path(directory)
    with _home_errors(directory.parent):
        check_dir(directory)


@contextlib.contextmanager
def prepared(spec: Spec) -> Iterator[tuple[Spec, Lock, Adopt | None, tuple[int, ...], bool]]:
    """Steps 4 and 5: the directory made and locked, the orphan to adopt decided, the listen
    sockets bound and ``spec.json`` written; yields the spec as written, the lock, the
    target to adopt, the sockets' fds and whether a dead group's journal is to be taken
    (``adoption.leftover``), for step 6 (a detached first role, or the daemon role
    ``exec``'d in the caller: ``foreground``). A failure inside removes what they wrote;
    our copies of the lock and the sockets are closed when it ends."""
    directory = Path(spec.directory)
    lock, created = _take_directory(directory)
    before: dict[str, Any] = {}
    status: dict[str, Any] = {}
    with _undone_on_failure(directory, created, lock, before, status):
        adopt = adoption.decide(spec)
        before.update(read_json(directory / "spec.json") or {})
        status.update(read_json(directory / "status.json") or {} if before else {})
        # Also with a target to adopt: if it dies before the first role claims it, that
        # role takes what the holder kept instead (``adoption.claim``).
        leftover = adoption.leftover(spec, before)
        if spec.several:
            with _home_errors(directory.parent):
                for view in spec.each():
                    ensure_dir(view.program_dir)
        with _listening(spec) as (spec, sockets):
            _write_spec(spec)
            yield spec, lock, adopt, sockets, leftover


def _take_directory(directory: Path) -> tuple[Lock, bool]:
    """Step 4: create the instance directory if needed and take its lock; the lock, and
    whether this call created the directory."""
    with _home_errors(directory.parent):
        created = bool(ensure_dir(directory))
        # Losing the lock leaves everything as it is, even a directory this call created:
        # the winner may have opened its lock file, or run in it already.
        return Lock.take(directory, created), created


@contextlib.contextmanager
def _undone_on_failure(directory: Path, created: bool, lock: Lock,
                       before: dict[str, Any] | None = None,
                       status: dict[str, Any] | None = None) -> Iterator[None]:
    """Steps 5 and 6 remove what they wrote if they fail (``before``: the spec.json that
    was there, put back, with its ``status``), and let go of our copy of the lock in any
    case (the roles hold it then: the same open file description)."""
    try:
        yield
    except BaseException:
        _clean(directory, created, before, status)
        raise
    finally:
        lock.close()


@contextlib.contextmanager
def _listening(spec: Spec) -> Iterator[tuple[Spec, tuple[int, ...]]]:
    """Step 5: the listen sockets, bound here (``listen.bind``), and the spec with the
    addresses as bound. Our copies are closed once the first role has its own; a failed
    start also removes the unix socket files nobody listens on any more
    (``listen.release``)."""
    if not spec.listening:
        yield spec, ()
        return
    _end_orphans(spec)
    sockets, bound = listening.bind(spec.listening)
    try:
        yield spec.bound(bound), tuple(sock.fileno() for sock in sockets)
    except BaseException:
        for sock in sockets:
            sock.close()
        listening.release(bound)
        raise
    finally:
        for sock in sockets:
            sock.close()


def _end_orphans(spec: Spec) -> None:
    """A target its dead supervisors left running holds the group's old listen sockets:
    it is ended (proved by token and start time) before they are bound again. Never
    adopted (``adoption.decide``): the sockets the new start binds are not its own."""
    found = orphans.find(spec.directory, holders=True)
    if found:
        pids = " ".join(str(pid) for pid, _ in found)
        adoption.note(spec, f"immortal: start: killing {pids} left running by a dead group "
                      "(its listen sockets are bound anew)\n")
        orphans.end(found)


def _write_spec(spec: Spec) -> None:
    """Step 5: ``spec.json``, which the roles read."""
    path = Path(spec.directory) / "spec.json"
    try:
        write_json(path, spec.to_json())
    except OSError as exc:  # a full disk, say: one clear error, nothing detached
        raise StartError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
    # Each program starts on this spec's definition: no apply has any left to roll.
    with contextlib.suppress(OSError):  # else the next apply rolls it needlessly, no more
        os.unlink(Path(spec.directory) / UNROLLED)


@contextlib.contextmanager
def _home_errors(base: Path) -> Iterator[None]:
    """An OSError of the home itself (a file in its path, no permission, /proc) is a
    StateDirError naming it; our own errors pass as they are."""
    try:
        yield
    except ImmortalError:
        raise
    except OSError as exc:
        raise unusable_home(exc, base) from exc


def _clean(directory: Path, created: bool, before: dict[str, Any] | None = None,
           status: dict[str, Any] | None = None) -> None:
    """Remove what a failed start wrote, while it still holds the group lock.

    Files only: never a directory (another start may have opened the lock file in it, or
    another group may live in a parent this call created) and never a lock file (a start
    that opened it would lock a file nobody else can find). The role logs go only if the
    directory is this call's own. A ``spec.json`` a stopped group had left (``before``) is
    put back: a recorded group (``immortal start-recorded``, a systemd unit's) can be
    started again from it after a start that failed (an address in use at boot); and its
    ``status``, so that the group stays listed as it last ran.
    """
    names = ["spec.json", "status.json", "notify.sock"]
    if created:
        names += ["daemon.log", "pump.log", "pump.log.1"]
    for name in names:
        try:
            os.unlink(directory / name)
        except FileNotFoundError:
            pass
    if before:
        try:
            write_json(directory / "spec.json", before)
            if status:  # the group as it last ran, still listed as it was
                write_json(directory / "status.json", status)
        except OSError:
            pass  # a full disk: the record is lost, as the start was
