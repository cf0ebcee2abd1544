"""A handle on one running (or finished) group: pids, status, restart, stop, wait.

The handle talks to the group through its instance directory and signals to its root
process (the daemon, or the pump when there is no daemon), after proving by start time that
the pid still names that process. What it reads (status, output, waiting for the end) is
``groupview.GroupView``'s; how a request reaches the group, and how it stops, is
``groupstop.GroupStop``'s; a new set of programs (``apply``) is
``groupapply.GroupApply``'s; what else it asks (restart, signal, scale, reopen) is here. In
a group of several programs (``start_group``) a request may name a program (``program=``),
and an instance of it.
"""

from __future__ import annotations

import os
import select
import time

from . import rolling, settling
from ._linux import is_alive, takes_signal
from .commands import parse_signal
from .errors import InvalidSpec, InvalidType, NoAnswer, NotRunning, StartError, StateDirError
from .errors import ImmortalError, StopTimeout
from .groupapply import GroupApply
from .groupstop import RETRY, targets_of
from .groupview import MARGIN, POLL
from .instance import lock_held
from .safety import check_path
from .state import (Status, check_dir, home, instance_dir, read_json, read_status,
                    read_unstarted)

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

__all__ = ["MARGIN", "POLL", "RETRY", "Group", "attach", "groups"]


class Group(GroupApply):
    """A group of processes keeping its targets alive. ``repr`` says whether it runs."""

    #: The pid of the running target the start that made this handle adopted, left by the
    #: group's dead supervisors (``immortal.adoption``); None if it spawned one.
    adopted: int | None = None

    def _deliver_kept(self) -> list[int]:
        from .drain import deliver_kept  # a stop of a group whose supervisors died only

        return deliver_kept(self.directory)

    @property
    def programs(self) -> list[str]:
        """The names of the group's programs (``start_group``); empty for a group of one
        program (``start``)."""
        spec = read_json(self.directory / "spec.json") or {}
        return [str(p.get("name")) for p in spec.get("programs") or () if p.get("workers")]

    def restart(self, timeout: float | None = None, instance: int | None = None,
                batch: int | None = None, all_at_once: bool = False,
                program: str | None = None) -> None:
        """Restart the target: TERM, ``timeout`` (default: the group's grace period), KILL,
        spawn. A group of several instances (``workers``), or one that listens, rolls
        (docs/workers.md): each instance (or ``instance`` alone) is replaced ``batch`` at a
        time (default 1), its old process retired once its replacement is ready; a
        replacement that fails aborts the roll (``StartError``: which instance, why, its
        last lines on stderr), the old processes serving on. ``all_at_once``: every
        instance restarted at once instead (with a ``batch`` too: ``InvalidSpec``).
        ``program``: that program's instances alone, in a group of several programs.
        Returns once the new targets run (and, rolling, are ready)."""
        if not isinstance(all_at_once, bool):
            raise InvalidType(f"'all_at_once' must be True or False (got "
                              f"{type(all_at_once).__name__}: {all_at_once!r})")
        if all_at_once and batch is not None:
            raise InvalidSpec(f"'batch' sets the pace of a rolling restart, 'all_at_once' "
                              f"restarts every instance at once instead: give one or the "
                              f"other (got batch={batch!r}, all_at_once=True)")
        batch = 1 if batch is None else batch
        _, before = self._root(wait=False)
        program = self._program(program, before)
        chosen = self._instance(instance, before, program)
        grace = self._grace(timeout, program)
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise InvalidSpec(f"'batch' must be an int, 1 or more (got {batch!r})")
        # As the pump decides (``PumpControl.rolls``): a program of several instances, or
        # one that listens, rolls; a group of programs of one instance each does not.
        counts = [len(entries) for name, entries in before.programs().items()
                  if program in (None, name)] or [len(settling.of(before, program))]
        if rolling.rolls(max(counts) > 1 or self._listens(program), all_at_once):
            if before.starting:
                _, before = self._root()
            self._roll(before, chosen, grace, batch, program)
            return
        self._request("restart", all_at_once=True,
                      **_given(timeout=grace, instance=chosen, program=program))
        deadline = time.monotonic() + grace + MARGIN
        while time.monotonic() < deadline:
            now = self.status()
            if not now.running:
                raise NotRunning(f"group {self.name!r} ended during the restart "
                                 f"(state {now.state})")
            if restarted(before, now, chosen, program):
                return
            time.sleep(POLL)
        raise StopTimeout(f"group {self.name!r} did not restart its target within "
                          f"{grace + MARGIN:g} s")

    def _roll(self, before: Status, chosen: int | None, grace: float | None, batch: int,
              program: str | None = None, rolling: bool = False,
              below: int | None = None) -> None:
        """A rolling restart: asked, then followed in ``status.json``'s ``roll``."""
        if (before.roll or {}).get("state") == "rolling":
            raise NotRunning(f"group {self.name!r}: a rolling restart is in progress; wait "
                             "for it to end")
        last = int((before.roll or {}).get("id", 0))
        with Changes(self.directory) as changes:  # watched before the roll can end
            asked = _given(timeout=grace, instance=chosen, program=program,
                           rolling=rolling or None, below=below)
            try:
                self._request("restart", batch=batch, **asked)
            except ImmortalError as exc:  # a group started by an immortal before 'below'
                if below is None or "takes no below" not in str(exc):
                    raise
                del asked["below"]  # all its instances rolled, as it can
                below = None
                self._request("restart", batch=batch, **asked)
            self._follow_roll(before, last, chosen, grace, batch, program, changes, below)

    def _follow_roll(self, before: Status, last: int, chosen: int | None,
                     grace: float | None, batch: int, program: str | None,
                     changes: Changes, below: int | None = None) -> None:
        slots = 1 if chosen is not None else max(len(settling.of(before, program)), 1)
        if below is not None:
            slots = min(slots, below)
        steps = -(-slots // batch)
        deadline = time.monotonic() + MARGIN + steps * (
            self._grace(grace, program) + self._spec_value("ready_timeout", program)
            + MARGIN)
        while time.monotonic() < deadline:
            now = self.status()
            roll = now.roll or {}
            if int(roll.get("id", 0)) > last and roll.get("state") != "rolling":
                if roll.get("state") == "done":
                    return
                lines = "".join(f"\n  {line}" for line in roll.get("stderr") or ())
                # Stopped, the group has nothing left serving; else the old processes do,
                # but for the failed slot's if it died too (it is spawned again).
                serving = "" if now.state in ("stopping", "stopped") or not now.running \
                    else "; the old processes keep serving" if _serves(now, roll.get(
                        "instance")) else (f"; instance {roll.get('instance')}'s old process "
                                           "is gone too, and is spawned again")
                raise StartError(f"group {self.name!r}: the rolling restart was aborted: "
                                 f"{roll.get('why')}{serving}"
                                 + (f"; its last lines on stderr:{lines}" if lines else ""),
                                 stderr=roll.get("stderr") or ())
            if not now.running:
                raise NotRunning(f"group {self.name!r} ended during the rolling restart "
                                 f"(state {now.state})")
            changes.wait()
        raise StopTimeout(f"group {self.name!r} did not end its rolling restart in time")

    def _program(self, program: str | None, status: Status) -> str | None:
        """``program`` checked against the group's programs (None: all of them)."""
        if program is None:
            return None
        if not isinstance(program, str):
            raise InvalidType(f"'program' must be a str (got {type(program).__name__}: "
                              f"{program!r})")
        names = self.programs
        if not names:
            raise InvalidSpec(f"group {self.name!r} runs one program (started by start()); "
                              f"it has no program {program!r}")
        if program not in names:
            from .errors import did_you_mean

            raise InvalidSpec(f"group {self.name!r} has no program {program!r}"
                              f"{did_you_mean(program, names)}; its programs: "
                              + ", ".join(names))
        return program

    def signal(self, number: int | str, instance: int | None = None,
               program: str | None = None) -> None:
        """Send a signal (a number or a name such as "USR1") to the target's process group;
        in a group of several instances (``workers``), to each one's, or to ``instance``'s
        alone; in a group of several programs, to ``program``'s alone, if given."""
        _, status = self._root(wait=False)
        program = self._program(program, status)
        chosen = self._instance(instance, status, program)
        value = parse_signal(number)
        try:
            self._request("signal", signal=value, **_given(instance=chosen, program=program))
        except NoAnswer:  # the root is frozen or swamped: signal the targets ourselves
            status = self.status()
            proven = [(pid, started) for pid, started in targets_of(status, chosen, program)
                      if started is not None and is_alive(pid, started)]
            if not proven:
                raise NoAnswer(f"group {self.name!r} does not answer and runs no target "
                               "that can be proven ours; try 'immortal stop'") from None
            starting = _starting_replacements(status)
            for pid, _ in proven:
                # A replacement still starting up that would die of it is left out: the
                # pump holds such a signal until it is ready, and no pump answers now.
                if pid not in starting or takes_signal(pid, value):
                    os.killpg(pid, value)

    def scale(self, workers: int, timeout: float | None = None,
              program: str | None = None) -> Status:
        """Run ``workers`` instances of the program (in a group of several programs, of
        ``program``): new ones are spawned (numbered on from the highest), or the highest
        retire (TERM, ``timeout``, default the group's grace period, then KILL). Returns
        the status once the group runs that many, each running and ready (the group's
        ``ready`` mode, as ``start()`` waits for it)."""
        from .checks import check_workers

        check_workers(workers)
        _, status = self._root()
        program = self._program(program, status)
        if program is None and status.programs():
            raise InvalidSpec(f"group {self.name!r} runs several programs: name the one to "
                              "scale (program=..., GROUP/PROGRAM)")
        grace = self._grace(timeout, program)
        had = len(settling.of(status, program)) or 1
        # A scale to that count under way: its new instances are waited for as ours.
        came = settling.under_way(self.directory, program or "", workers, had) \
            if workers == had else had
        # Our pid: a scale whose caller is gone is shown so (scalerecord); the answer, its
        # id: another scale asked meanwhile, even to the same count, is seen by it.
        ticket = self._request("scale", workers=workers, caller=os.getpid(),
                               **_given(program=program)).get("scale")
        try:
            return self._settled({program or "": workers},
                                 grace + self._spec_value("ready_timeout", program) + MARGIN,
                                 f"does not run {workers} ready instance(s)",
                                 (program, came) if workers > came else None,
                                 {program or "": had}, ticket)
        except StartError as exc:
            back = self._scale_back(had, program, workers, ticket)
            raise StartError(f"{exc}; {back}", exc.status, exc.stderr) from None
        except StopTimeout as exc:
            back = self._scale_back(had, program, workers, ticket)
            raise StopTimeout(f"{exc}; {back}") from None

    def _scale_back(self, had: int, program: str | None, asked: int,
                    ticket: int | None) -> str:
        """As a failed start leaves nothing and a failed roll keeps the old: a scale up
        that failed retires its new instances, rather than leave them restarting (unless
        another command has scaled it since: that one stands). What was done."""
        try:
            settling.check_counts(self.directory, self.name, {program or "": asked},
                                  {program or "": had}, ticket)
        except ImmortalError:
            return "not scaled back: another command scaled it meanwhile"
        if had == asked:  # asked while another scale to that count was under way
            return f"not scaled back: it had {had} instance(s) already when asked"
        try:
            self._request("scale", workers=had, caller=os.getpid(), **_given(program=program))
        except ImmortalError:
            pass  # the group ended, or cannot be asked: nothing more to undo
        return f"scaled back to {had}"

    def _listens(self, program: str | None) -> bool:
        """Whether the group (``program``, if given) listens on an address."""
        spec = read_json(self.directory / "spec.json") or {}
        if not spec.get("programs"):
            return bool(spec.get("listen"))
        return any(p.get("listen") for p in spec["programs"]
                   if program in (None, p.get("name")))

    def _spec_value(self, key: str, program: str | None) -> float:
        """A number of the group's spec.json (of ``program``'s, or the largest of its
        programs')."""
        spec = read_json(self.directory / "spec.json") or {}
        default = {"ready_timeout": 30.0, "stop_timeout": 10.0}[key]
        if not spec.get("programs"):
            return float(spec.get(key, default))
        return max(float(p.get(key, default)) for p in spec["programs"]
                   if program in (None, p.get("name")))

    def reopen(self) -> None:
        """Make the monitors reopen their files (after an external logrotate)."""
        self._root(wait=False, next_step="its monitors have no file open: nothing to "
                   "reopen")
        self._request("reopen")


def _given(**values: Any) -> dict[str, Any]:
    """The arguments given (not None), for a request."""
    return {key: value for key, value in values.items() if value is not None}


def _starting_replacements(status: Status) -> set[int]:
    """The pids of a roll's replacements not ready yet, as ``status`` records them."""
    roll = status.roll or {}
    ready = {str(k) for k in roll.get("ready") or ()}
    return {int(pid) for slot, (pid, _) in (roll.get("replacements") or {}).items()
            if str(slot) not in ready}


class Changes:
    """Wakes a client that follows ``status.json`` as soon as the pump replaces it
    (inotify on the instance directory), instead of at its next poll. Where inotify is not
    available it polls every ``POLL``; where it is, it still looks every ``WATCHED`` (a
    change missed: the directory put back, a group that ended without a word)."""

    WATCHED = 10 * POLL

    def __init__(self, directory: Path) -> None:
        from ._linux import IN_MOVED_TO
        from .dirwatch import watch_names

        self.fd = watch_names(directory, IN_MOVED_TO)

    def wait(self) -> None:
        if self.fd is None:
            time.sleep(POLL)
            return
        from .dirwatch import names

        if select.select([self.fd], [], [], self.WATCHED)[0]:
            names(self.fd)  # read: the next wait is for the next change

    def __enter__(self) -> Changes:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _serves(status: Status, slot: object) -> bool:
    """Whether the roll's slot ``slot`` (``K``, or ``PROGRAM:K``) has a target in
    ``status``; True for none named."""
    if slot is None:
        return True
    if not status.instances:
        return bool(status.pids.get("target"))
    program, _, k = str(slot).rpartition(":")
    return any(entry.pid for entry in status.instances
               if str(entry.instance) == k and (entry.program or "") == program)


def restarted(before: Status, now: Status, instance: int | None,
              program: str | None = None) -> bool:
    """Whether ``now`` shows the restart asked in ``before``: each instance restarted
    (``program``'s, ``instance`` alone, if given) and running again, or run again and
    finished (a job: a final exit code)."""
    if not before.instances or not now.instances:
        return now.spawned > before.spawned and now.state == "running"
    then = {(entry.program, entry.instance): entry.spawned for entry in before.instances}
    return all(entry.spawned > then.get((entry.program, entry.instance), 0)
               and (entry.state == "running" or entry.finished) for entry in now.instances
               if instance in (None, entry.instance) and program in (None, entry.program))


def attach(name: str) -> Group:
    """A handle on the group ``name`` started elsewhere (by another process or the CLI)."""
    from .names import check_name

    directory = instance_dir(check_name(name))
    try:
        check_dir(directory)  # what it reads, and the pids it signals, are ours or root's
        status = read_status(directory)
    except StateDirError:
        raise
    except OSError as exc:  # a file in the home's path, a home not ours to read
        from .errors import unusable_home

        raise unusable_home(exc, directory.parent) from exc
    # The lock file alone, held: a first start is under way (stop waits for it). Not held,
    # with no spec.json: what a failed start left (its lock file, its output), no group.
    if status is None and not (lock_held(directory / "lock")
                               or os.path.exists(directory / "spec.json")):
        raise NotRunning(f"no group named {name!r} in {str(home())!r}"
                         + _like(name, directory.parent)
                         + "; 'immortal list' shows the groups there")
    return Group(name, directory)


def _like(name: str, where: Path) -> str:
    """" (did you mean 'NAME'?)" for the group in ``where`` whose name is closest to
    ``name``, if one is close; else nothing."""
    from .errors import closest

    try:
        names = [entry.name for entry in os.scandir(where)
                 if entry.is_dir(follow_symlinks=False) and not entry.name.startswith(".")
                 and entry.name != name]  # (what a failed start of it left: no group)
    except OSError:
        return ""
    close = closest(name, names) if names else None  # (difflib only when there is a choice)
    return f" (did you mean {close!r}?)" if close else ""


def groups() -> list[Status]:
    """The status of every group in the immortal home, running or not: each command that
    walks the home (``list``, ``metrics``, ``save``, ``--all``) walks it here. What else
    lies there (a file someone left, ``.saved.json``) is passed over."""
    base = home()
    try:
        check_path(base)
        with os.scandir(base) as entries:
            # Not a group's: a name with a dot first (no group's has one: '.saved.json'),
            # and whatever is no directory, whose status.json would be an ENOTDIR error.
            names = sorted(entry.name for entry in entries
                           if not entry.name.startswith(".") and entry.is_dir())
    except FileNotFoundError:
        return []  # no home yet: no group ever started here
    except StateDirError:
        raise
    except OSError as exc:  # a file in its path, or the home itself; one not ours to read
        from .errors import unusable_home

        raise unusable_home(exc, base) from exc
    found = []
    for name in names:
        status = read_status(base / name) or read_unstarted(base / name)
        if status is not None:
            found.append(status)
    return found
