"""A rolling restart carried out by the pump: ``rolling.Roll`` decides, this acts.

A replacement of instance K is spawned beside K's target (``Spawner.spawn_beside``): it is
instance K (``IMMORTAL_INSTANCE``, the listen sockets), writes to K's pipes (its lines reach
the monitors as K's, and are journaled as K's), holds K's second lock and has a readiness
of its own. Once it is ready the old target is retired (TERM, the grace period, KILL); once
the old one is gone the replacement *is* K's target: the locks are swapped, the daemon is
told (``Exited`` of the old, ``Target`` of the new), K's machine takes it as its running
target. A replacement that dies, or is not ready in time, aborts the roll (``Roll.failed``):
the other replacements not yet ready are stopped, the old targets keep serving.

What a caller sees is ``status.json``'s ``roll``: its ``id``, ``state`` (rolling, done,
failed), ``why``, the failed ``instance`` and its last ``stderr`` lines, the slots
``replaced``, the live ``replacements`` (pid and start time, by instance) and those of
them ``ready``. A pump that dies during a roll leaves those, and its successor resumes the
roll from them (``resume_roll``): it takes over the replacements still alive (proved by
their start time; they are the daemon's children now, whose pidfds tell their end), each
ready or still waiting to be, retires again the old targets of those that are ready, and
replaces the slots left; the old targets, handed to it as always, keep serving meanwhile.
"""

from __future__ import annotations

import os
import signal
import time

from . import _linux, adoption, orphans, process, rolelog, rolling, supervise
from .errors import NotRunning
from .events import ExitStatus
from .listen import INSTANCE_ENV
from .readiness import FAILED, Readiness
from .readywatch import ReadyWatch
from .records import replace
from .roles import Exited, Target

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from selectors import BaseSelector
    from typing import Any

    from .link import DaemonLink
    from .loop import Loop
    from .monitoring import Host
    from .spawner import Spawner
    from .spec import Spec
    from .statusfile import StatusFile
    from .workers import Instance

ROLLING, DONE, FAILED_ROLL = "rolling", "done", "failed"


class Replacement:
    """One replacement in flight: its process, its readiness, when to KILL it (cancelled)."""

    def __init__(self, k: int, child: process.Child, ready: ReadyWatch) -> None:
        self.k = k
        self.child = child
        self.ready = ready
        self.kill_at: float | None = None


class Rollout:
    """What the pump (``pump.Pump``) does to roll; the rest it provides."""

    spec: Spec
    instances: list[Instance]
    host: Host | None
    link: DaemonLink
    loop: Loop
    selector: BaseSelector
    spawner: Spawner
    status_file: StatusFile
    previous: dict[str, Any] | None
    retiring: int | None
    daemon_pid: int | None
    directory: Path
    shown: Callable[[Instance], int | None]

    roll: rolling.Roll | None  #: the roll in progress, or the last one
    roll_info: dict[str, Any] | None  #: status.json's ``roll``
    roll_grace: float
    replacements: dict[int, Replacement]  #: by slot
    old_kill_at: dict[int, float]  #: the slots whose old target retires: when it gets KILL
    finish_waiting: supervise.Finish | None  #: the group ended: it waits for replacements

    @property
    def roll_running(self) -> bool:
        return self.roll is not None and not self.roll.finished

    def start_roll(self, slots: list[int], batch: int, grace: float) -> int:
        """Replace the targets of ``slots``, ``batch`` at a time; the roll's id."""
        if self.roll_running or self.replacements:
            raise NotRunning("a rolling restart is in progress; wait for it to end")
        if self.retiring is not None:
            raise NotRunning("instances are still retiring after the last scale; try again "
                             "in a moment")
        if all(supervise.ending(inst.machine) for inst in self.instances):
            raise NotRunning("the group is stopping; it cannot restart")
        ident = int((self.roll_info or (self.previous or {}).get("roll") or {}).get("id", 0)) + 1
        self.roll_grace = grace
        self.roll = rolling.Roll(slots, batch)
        self.roll_info = {"id": ident, "state": ROLLING, "batch": batch, "slots": slots,
                          "replaced": [], "why": None, "instance": None, "stderr": [],
                          "replacements": {}, "ready": [], "since": _linux.boot_ticks(),
                          "grace": grace}
        self._roll_act(self.roll.begin())
        self._write_status()
        return ident

    def _roll_act(self, actions: list[rolling.Action]) -> None:
        for action in actions:
            if isinstance(action, rolling.Replace):
                self._replace(action.slot)
            elif isinstance(action, rolling.Retire):
                self._retire_old(action.slot)
            elif isinstance(action, rolling.Cancel):
                self._cancel(action.slot)
            elif isinstance(action, rolling.Finished) and self.roll_info is not None:
                self.roll_info.update(state=DONE if action.why is None else FAILED_ROLL,
                                      why=action.why, replaced=list(action.replaced))
                if action.why is not None:
                    rolelog.report("roll", f"immortal: pump: rolling restart aborted: "
                                   f"{action.why}\n")

    def _replace(self, k: int) -> None:
        assert self.roll is not None and self.host is not None and self.roll_info is not None
        inst = self.instances[k]
        watch = ReadyWatch(self.spec.ready_mode, self.spec.ready_timeout,
                           lambda state: self._replacement_changed(k, state))
        try:
            child = self.spawner.spawn_beside(k, inst.streams)
        except OSError as exc:
            self._failed(k, f"its replacement could not be spawned: {exc.strerror or exc}", [])
            return
        watch.spawned(child.started_at)
        repl = self.replacements[k] = Replacement(k, child, watch)
        if child.pidfd >= 0:
            self.loop.watch(child.pidfd, lambda fd: self._replacement_died(repl))
        self.roll_info["replacements"][str(k)] = [child.pid,
                                                  _linux.process_start_time(child.pid)]
        self._write_status()  # first: a successor of a pump that dies now finds it
        self.host.call("respawn", pid=child.pid, why="roll", instance=self.shown(inst))
        if watch.ready:  # ready="spawn"
            self._ready_noted(k)
            self._roll_act(self.roll.ready(k))

    def _replacement_changed(self, k: int, state: Readiness) -> None:
        assert self.roll is not None
        repl = self.replacements.get(k)
        if repl is None:
            return
        if state.ready:
            self._ready_noted(k)
            self._roll_act(self.roll.ready(k))
        elif state.state == FAILED:
            self._failed(k, state.reason or "not ready", list(state.stderr))
            if repl.child.status is None:
                self._cancel(k)
        self._write_status()

    def _ready_noted(self, k: int) -> None:
        """Recorded before its old target is retired: a successor of a pump that dies then
        retires it again, instead of waiting for a readiness it would not see anew."""
        if self.roll_info is not None and k not in self.roll_info.setdefault("ready", []):
            self.roll_info["ready"].append(k)
            self._write_status()

    def _failed(self, k: int, why: str, stderr: list[str]) -> None:
        assert self.roll is not None and self.roll_info is not None
        if self.roll_info["instance"] is None and self.roll.why is None:
            self.roll_info.update(instance=k, stderr=stderr)
        self._roll_act(self.roll.failed(k, why))

    def _retire_old(self, k: int) -> None:
        """The replacement of ``k`` is ready: its old target goes (TERM, grace, KILL)."""
        target = self.instances[k].target
        if target is None:  # died meanwhile, waiting for its restart: no one to retire
            self._swap(k, None)
            return
        self.old_kill_at[k] = time.monotonic() + self.roll_grace
        target.kill_group(signal.SIGTERM)

    def _cancel(self, k: int) -> None:
        repl = self.replacements.get(k)
        if repl is not None and repl.child.status is None and repl.kill_at is None:
            repl.kill_at = time.monotonic() + self.roll_grace
            repl.child.kill_group(signal.SIGTERM)

    def _replacement_died(self, repl: Replacement) -> None:
        if repl.child.own:
            status = repl.child.reap(time.monotonic(), close=False)
            if status is None:
                return
        else:  # taken over from a dead pump: its pidfd says it ended, not how
            status = ExitStatus(pid=repl.child.pid,
                                uptime=time.monotonic() - repl.child.started_at)
            repl.child.dead(status, close=False)
        self._forget(repl)
        if self.host is not None:
            inst = self.instances[repl.k] if repl.k < len(self.instances) else None
            record = replace(status, decision="stop", reason="a rolling restart's replacement",
                             instance=self.shown(inst) if inst is not None else None)
            self.host.call("exit", status=record, instance=record.instance)
        if self.roll is not None and self.roll.pending(repl.k):
            repl.ready.exited(status)  # a failure, through _replacement_changed
            if self.roll.pending(repl.k):
                self._failed(repl.k, f"its replacement {status}", list(
                    repl.ready.current.stderr if repl.ready.current else ()))
        self._write_status()
        waiting, self.finish_waiting = self.finish_waiting, None
        if waiting is not None and not self.replacements:
            self._finish(waiting)
        else:
            self.finish_waiting = waiting

    def _forget(self, repl: Replacement, close: bool = True) -> None:
        """``repl`` is no longer the roll's: dead (``close``: its pidfd too), or the
        slot's target now (its pidfd watched by the pump from then on)."""
        if repl.child.pidfd >= 0:
            self.selector.unregister(repl.child.pidfd)
        if close:
            repl.child.close()
        self.replacements.pop(repl.k, None)
        if self.roll_info is not None:
            self.roll_info["replacements"].pop(str(repl.k), None)
            if repl.k in self.roll_info.get("ready", ()):
                self.roll_info["ready"].remove(repl.k)

    def old_gone(self, inst: Instance, status: ExitStatus) -> bool:
        """The target of ``inst`` died: whether it was one a roll retired (its
        replacement takes the slot), else the machine decides as for any death."""
        k = inst.k
        repl = self.replacements.get(k)
        if k not in self.old_kill_at or repl is None or repl.child.status is not None:
            self.old_kill_at.pop(k, None)
            return False
        del self.old_kill_at[k]
        self._swap(k, status)
        return True

    def _swap(self, k: int, status: ExitStatus | None) -> None:
        """The replacement of ``k`` becomes its target."""
        assert self.roll is not None and self.host is not None
        inst = self.instances[k]
        repl = self.replacements[k]
        record = None
        if status is not None and inst.target is not None:
            dead = inst.target.pid
            self._unwatch_target(inst)
            self.status_file.forget(dead)
            inst.streams.drain()
            self.link.tell(Exited(dead, k))
            record = replace(status, decision="stop", reason="replaced (rolling restart)",
                             instance=self.shown(inst))
        self._forget(repl, close=False)
        try:
            self.spawner.swap_locks(k)
        except OSError as exc:
            rolelog.report("roll", f"immortal: pump: instance {k}: lock swap: {exc}\n")
        child = repl.child
        if not child.own and self.daemon_pid is not None:
            child.close()  # the daemon reaps it and tells us, as any target it handed us
        inst.target = child
        self.link.tell(Target(child.pid, child.started_wall, k))
        self._watch_target(inst)
        machine = inst.machine
        template = replace(machine, spawned=machine.spawned + 1, restarts=machine.restarts + 1,
                           why="manual", last_exit=record or machine.last_exit)
        inst.machine = supervise.adopt(child.pid, child.started_at, template)
        inst.deadline = None
        inst.ready.spawned(child.started_at, True, repl.ready.notice)
        if record is not None:
            self.status_file.last_exit = record
            self.host.call("exit", status=record, instance=self.shown(inst))
        self._roll_act(self.roll.old_gone(k))
        self._write_status()

    def abort_roll(self, grace: float | None) -> None:
        """A stop: the replacements stop too (TERM, ``grace``, KILL); the old targets are
        the machines' to stop."""
        if self.roll is not None and not self.roll.finished and self.roll_info is not None:
            self.roll.finished = True
            self.roll.why = "the group was stopped"  # the replacements' deaths: no failure
            self.roll_info.update(state=FAILED_ROLL, why=self.roll.why)
        self.old_kill_at.clear()
        for repl in list(self.replacements.values()):
            if repl.child.status is None:
                repl.kill_at = time.monotonic() + (self.roll_grace if grace is None
                                                   else grace)
                repl.child.kill_group(signal.SIGTERM)

    def roll_lines(self, k: int, stream: str, block: bytes) -> None:
        """Output of slot ``k`` while its replacement waits to be ready: for its
        readiness (the slot's pipes are shared: see docs/workers.md)."""
        repl = self.replacements.get(k)
        if repl is not None:
            repl.ready.lines(stream, block)

    def roll_watches(self) -> dict[int, ReadyWatch]:
        return {repl.child.pid: repl.ready for repl in self.replacements.values()}

    def roll_deadline(self) -> float | None:
        due = [at for at in (repl.ready.deadline() for repl in self.replacements.values())
               if at is not None]
        due += [repl.kill_at for repl in self.replacements.values() if repl.kill_at]
        due += [at for at in self.old_kill_at.values() if at != float("inf")]
        return min(due) if due else None

    def roll_due(self) -> None:
        now = time.monotonic()
        for repl in list(self.replacements.values()):
            at = repl.ready.deadline()
            if at is not None and at <= now:
                repl.ready.due()
            if repl.kill_at is not None and repl.kill_at <= now:
                repl.kill_at = None
                repl.child.kill_group(signal.SIGKILL)
        for k, at in list(self.old_kill_at.items()):
            target = self.instances[k].target
            if at <= now:
                self.old_kill_at[k] = float("inf")  # KILL once, then wait for the death
                if target is not None:
                    target.kill_group(signal.SIGKILL)

    def resume_roll(self, adopted: dict[int, int]) -> None:
        """A successor pump: the roll its predecessor left in progress, taken over (see the
        module's docstring); carried on by ``continue_roll`` once the loop watches.
        ``adopted``: the targets we were handed, by instance."""
        left = (self.previous or {}).get("roll")
        if not isinstance(left, dict) or left.get("state") != ROLLING:
            return
        count = len(self.instances)
        alive = {int(key): (int(pid), int(started)) for key, (pid, started)
                 in (left.get("replacements") or {}).items()
                 if started is not None and _linux.is_alive(pid, started)}
        alive.update(self._unrecorded(left, alive, adopted))
        # One the daemon hands us as its slot's target had taken the slot already.
        replaced = [k for k in left.get("replaced") or () if k < count] + [
            k for k, (pid, _) in alive.items() if adopted.get(k) == pid]
        slots = [k for k in left.get("slots") or () if k < count and k not in replaced]
        self.roll_grace = float(left.get("grace") or self.spec.stop_timeout)
        self.roll = rolling.Roll(slots, int(left.get("batch") or 1), replaced)
        self.roll_info = {**left, "replaced": replaced, "replacements": {}, "ready": []}
        ready = set(left.get("ready") or ())
        for k, (pid, started) in alive.items():
            if k in slots:
                self._take_over(k, pid, started, k in ready)
        leftover = [found for k, found in alive.items()
                    if k not in slots and adopted.get(k) != found[0]]
        if leftover:  # of slots retired by a scale meanwhile: nobody's
            orphans.end(leftover)

    def _unrecorded(self, left: dict[str, Any], alive: dict[int, tuple[int, int]],
                    adopted: dict[int, int]) -> dict[int, tuple[int, int]]:
        """Replacements the dead pump spawned but died before recording: its parent's
        children now, found by their token and instance (``orphans.spawned_by``)."""
        if self.daemon_pid is None or left.get("since") is None:
            return {}
        known = {pid for pid, _ in alive.values()} | set(adopted.values())
        found = orphans.spawned_by(self.daemon_pid, int(left["since"]), self.directory,
                                   INSTANCE_ENV, known)
        return {int(k): found[k] for k in found if k.isdigit() and int(k) not in alive}

    def _take_over(self, k: int, pid: int, started: int, ready: bool) -> None:
        """The replacement of ``k`` a dead pump spawned, alive: ours to follow."""
        assert self.roll is not None and self.roll_info is not None
        age = max(0.0, (_linux.boot_ticks() - started) / os.sysconf("SC_CLK_TCK"))
        child = process.Child(pid, time.monotonic() - age, None, own=False)
        child.pidfd = adoption.watch(pid)
        watch = ReadyWatch(self.spec.ready_mode, self.spec.ready_timeout,
                           lambda state: self._replacement_changed(k, state))
        watch.spawned(child.started_at, ready)
        repl = self.replacements[k] = Replacement(k, child, watch)
        self.loop.watch(child.pidfd, lambda fd: self._replacement_died(repl))
        self.roll.adopt(k)
        self.roll_info["replacements"][str(k)] = [pid, started]
        if watch.ready:  # known so, or ready="spawn"
            self.roll_info["ready"].append(k)

    def continue_roll(self) -> None:
        """A resumed roll goes on: the old targets of the replacements that are ready are
        retired (again), the slots left are replaced."""
        roll = self.roll
        if roll is None or roll.finished or self.roll_info is None:
            return
        for k in list(self.roll_info["ready"]):
            self._roll_act(roll.ready(k))
        self._roll_act(roll.begin())
        self._write_status()

    # What the pump provides.
    def _write_status(self) -> None:
        raise NotImplementedError

    def _finish(self, action: supervise.Finish) -> None:
        raise NotImplementedError

    def _watch_target(self, inst: Instance) -> None:
        raise NotImplementedError

    def _unwatch_target(self, inst: Instance) -> None:
        raise NotImplementedError
