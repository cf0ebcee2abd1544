"""A rolling restart carried out by the pump: ``rolling.Roll`` decides, this acts.

A slot is an instance: ``K`` in a group's one program, ``PROGRAM:K`` in a group of several
programs (``Instance.slot``); a roll may take instances of several programs, each replaced
with its own program's definition, readiness and (unless the request names one) grace.

A replacement of instance K is spawned beside K's target (``Spawner.spawn_beside``): it is
instance K (``IMMORTAL_INSTANCE``, the listen sockets), writes to K's spare pipes, whose
lines are moved into K's pipes (``spare``: they reach the monitors as K's, and are
journaled as K's) once its readiness has seen them (its own lines only, never the old
target's), and holds K's second lock. Once it is ready the old target is retired (TERM, the
grace period, KILL); once the old one is gone the replacement *is* K's target: the locks
are swapped, and the pipes (the spare ones are K's from then on), the daemon is told
(``Exited`` of the old, ``Target(swap=True)`` of the new), K's machine takes it as its
running target. A replacement that dies, or is not ready in time, aborts the roll
(``Roll.failed``): the other replacements not yet ready are stopped, the old targets keep
serving.

What a caller sees is ``status.json``'s ``roll``: its ``id``, ``state`` (rolling, done,
failed), ``why``, the failed ``instance`` and its last ``stderr`` lines, the slots
``replaced``, the live ``replacements`` (pid and start time, by instance) and those of
them ``ready``. A pump that dies during a roll leaves those, and its successor resumes the
roll from them (``rollresume``); the old targets, handed to it as always, keep serving
meanwhile.
"""

from __future__ import annotations

import time

from . import _linux, process, rolelog, rolling, spare, supervise
from .errors import NotRunning
from .events import ExitStatus
from .readiness import FAILED, Readiness
from .readywatch import ReadyWatch
from .records import replace
from .roles import Exited, Spare, Target
from .rolling import DONE, FAILED_ROLL, ROLLING, Slot

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Callable
    from selectors import BaseSelector
    from typing import Any

    from .link import DaemonLink
    from .loop import Loop
    from .spare import Spares
    from .spec import Spec
    from .statusfile import StatusFile
    from .workers import Instance, Run


class Replacement:
    """One replacement in flight: its process, its readiness, when to KILL it (cancelled),
    the signals held for it until it is ready (``Rollout.signal_replacements``)."""

    def __init__(self, k: Slot, child: process.Child, ready: ReadyWatch) -> None:
        self.k = k
        self.child = child
        self.ready = ready
        self.kill_at: float | None = None
        self.held: list[int] = []


class Rollout:
    """What the pump (``pump.Pump``) does to roll; the rest it provides."""

    spec: Spec
    runs: dict[str, Run]

    @property
    def instances(self) -> list[Instance]:  # the pump's: every program's
        raise NotImplementedError

    link: DaemonLink
    loop: Loop
    spares: Spares
    selector: BaseSelector
    status_file: StatusFile
    previous: dict[str, Any] | None
    daemon_pid: int | None
    shown: Callable[[Instance], int | None]

    roll: rolling.Roll | None  #: the roll in progress, or the last one
    roll_info: dict[str, Any] | None  #: status.json's ``roll``
    roll_grace: float | None  #: the roll's grace period; None: each program's own
    replacements: dict[Slot, Replacement]  #: by slot
    old_kill_at: dict[Slot, float]  #: the slots whose old target retires: when it gets KILL
    finish_waiting: supervise.Finish | None  #: the group ended: it waits for replacements

    # What ``rollsignals.RollSignals`` provides.
    _retire_old: Callable[[Slot], None]
    _cancel: Callable[[Slot], None]
    _release_held: Callable[[Slot], None]

    @property
    def roll_running(self) -> bool:
        return self.roll is not None and not self.roll.finished

    def _slot(self, slot: Slot) -> Instance | None:
        """The instance of ``slot``, if it is still there."""
        return next((inst for inst in self.instances if inst.slot == slot), None)

    def start_roll(self, chosen: list[Instance], batch: int, grace: float | None) -> int:
        """Replace the targets of the ``chosen`` instances, ``batch`` at a time; the
        roll's id. ``grace``: of the old targets (None: each program's own)."""
        if self.roll_running or self.replacements:
            raise NotRunning("a rolling restart is in progress; wait for it to end")
        if any(run.retiring is not None for run in self.runs.values()):
            raise NotRunning("instances are still retiring after the last scale; try again "
                             "in a moment")
        if all(supervise.ending(inst.machine) for inst in self.instances):
            raise NotRunning("the group is stopping; it cannot restart")
        ident = int((self.roll_info or (self.previous or {}).get("roll") or {}).get("id", 0)) + 1
        self.roll_grace = grace
        slots = [inst.slot for inst in chosen]
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

    def _replace(self, k: Slot) -> None:
        assert self.roll is not None and self.roll_info is not None
        inst = self._slot(k)
        if inst is None or inst.run.host is None:
            self._failed(k, "it is gone", [])
            return
        view = inst.run.spec
        watch = ReadyWatch(view.ready_mode, view.ready_timeout,
                           lambda state: self._replacement_changed(k, state))
        try:
            self._spare(inst)
            child = inst.run.spawner.spawn_beside(inst.k, inst.streams)
        except OSError as exc:
            self._failed(k, f"its replacement could not be spawned: {exc.strerror or exc}", [])
            return
        watch.spawned(child.started_at)
        self._follow(k, child, watch)
        self.roll_info["replacements"][str(k)] = [child.pid,
                                                  _linux.process_start_time(child.pid)]
        self._write_status()  # first: a successor of a pump that dies now finds it
        inst.run.host.call("respawn", pid=child.pid, why="roll", instance=self.shown(inst))
        if watch.ready:  # ready="spawn"
            self._ready_noted(k)
            self._roll_act(self.roll.ready(k))

    def _spare(self, inst: Instance) -> None:
        """The spare pipes of ``inst``, made (and handed to the daemon) at its first roll."""
        streams = inst.streams
        if streams.spare is None:
            streams.spare = spare.make()
            self.link.tell_fds(Spare(inst.k, inst.program), list(streams.spare))
            self.spares.add(streams)

    def _follow(self, k: Slot, child: process.Child, watch: ReadyWatch) -> Replacement:
        """``child`` is the replacement of ``k`` in flight: its death watched, its lines
        read by its readiness."""
        repl = self.replacements[k] = Replacement(k, child, watch)
        inst = self._slot(k)
        if inst is not None:
            inst.streams.seen = watch.lines
        if child.pidfd >= 0:
            self.loop.watch(child.pidfd, lambda fd: self._replacement_died(repl))
        return repl

    def _replacement_changed(self, k: Slot, state: Readiness) -> None:
        assert self.roll is not None
        repl = self.replacements.get(k)
        if repl is None or not self.roll.pending(k):  # the roll ended (a stop): not its
            return
        if state.ready:
            self._ready_noted(k)  # written there, before the old target is told to go
            self._roll_act(self.roll.ready(k))
            return
        if state.state == FAILED:
            self._failed(k, state.reason or "not ready", list(state.stderr))
            if repl.child.status is None:
                self._cancel(k)
        self._write_status()

    def _ready_noted(self, k: Slot) -> None:
        """Recorded before its old target is retired: a successor of a pump that dies then
        retires it again, instead of waiting for a readiness it would not see anew. The
        signals held for it until then are sent, once they are no longer recorded as
        held: a pump that dies in between loses them rather than have its successor send
        them twice."""
        info = self.roll_info
        changed = info is not None and (info.get("held") or {}).pop(str(k), None) is not None
        if info is not None and k not in info.setdefault("ready", []):
            info["ready"].append(k)
            changed = True
        if changed:
            self._write_status()
        self._release_held(k)

    def _failed(self, k: Slot, why: str, stderr: list[str]) -> None:
        assert self.roll is not None and self.roll_info is not None
        if self.roll_info["instance"] is None and self.roll.why is None:
            self.roll_info.update(instance=k, stderr=stderr)
        self._roll_act(self.roll.failed(k, why))

    def _replacement_died(self, repl: Replacement) -> None:
        if repl.child.own:
            status = repl.child.reap(time.monotonic(), close=False)
            if status is None:
                return
        else:  # taken over from a dead pump: its pidfd says it ended, not how
            status = ExitStatus(pid=repl.child.pid,
                                uptime=time.monotonic() - repl.child.started_at)
            repl.child.dead(status, close=False)
        inst = self._slot(repl.k)
        if inst is not None and inst.streams.spare is not None:
            # Its last lines: seen by its readiness (its last words on stderr), and
            # delivered before its exit.
            self.spares.move(inst.streams, final=True)
        self._forget(repl)
        if inst is not None and inst.run.host is not None:
            record = replace(status, decision="stop", reason="a rolling restart's replacement",
                             instance=self.shown(inst))
            inst.run.host.call("exit", status=record, instance=record.instance)
        if self.roll is not None and self.roll.pending(repl.k):
            ready = repl.ready.ready
            repl.ready.exited(status)  # its last lines on stderr kept (it is forgotten)
            current = repl.ready.current
            self._failed(repl.k, f"its replacement {status}" + (
                "" if ready else f" before it was ready (ready={repl.ready.mode})"),
                list(current.stderr if current else ()))
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
        inst = self._slot(repl.k)
        if inst is not None:
            inst.streams.seen = None
        if self.roll_info is not None:
            self.roll_info["replacements"].pop(str(repl.k), None)
            (self.roll_info.get("held") or {}).pop(str(repl.k), None)
            if repl.k in self.roll_info.get("ready", ()):
                self.roll_info["ready"].remove(repl.k)

    def old_gone(self, inst: Instance, status: ExitStatus) -> bool:
        """The target of ``inst`` died: whether it was one a roll retired (its
        replacement takes the slot), else the machine decides as for any death."""
        k = inst.slot
        repl = self.replacements.get(k)
        if k not in self.old_kill_at or repl is None or repl.child.status is not None:
            self.old_kill_at.pop(k, None)
            return False
        del self.old_kill_at[k]
        self._swap(k, status)
        return True

    def _swap(self, k: Slot, status: ExitStatus | None) -> None:
        """The replacement of ``k`` becomes its target."""
        inst = self._slot(k)
        assert self.roll is not None and inst is not None and inst.run.host is not None
        repl = self.replacements[k]
        record = None
        if status is not None and inst.target is not None:
            dead = inst.target.pid
            self._unwatch_target(inst)
            self.status_file.forget(dead)
            self.link.tell(Exited(dead, inst.k, inst.program))
            record = replace(status, decision="stop", reason="replaced (rolling restart)",
                             instance=self.shown(inst))
        swapped = self._swap_pipes(inst)
        self._forget(repl, close=False)
        try:
            inst.run.spawner.swap_locks(inst.k)
        except OSError as exc:
            rolelog.report("roll", f"immortal: pump: instance {k}: lock swap: {exc}\n")
        child = repl.child
        if not child.own and self.daemon_pid is not None:
            child.close()  # the daemon reaps it and tells us, as any target it handed us
        inst.target = child
        self.link.tell(Target(child.pid, child.started_wall, inst.k, inst.program, swapped))
        self._watch_target(inst)
        machine = inst.machine
        template = replace(machine, spawned=machine.spawned + 1, restarts=machine.restarts + 1,
                           why="manual", last_exit=record or machine.last_exit)
        inst.machine = supervise.adopt(child.pid, child.started_at, template)
        inst.deadline = None
        inst.ready.spawned(child.started_at, True, repl.ready.notice)
        if record is not None:
            self.status_file.last_exit = record
            inst.run.host.call("exit", status=record, instance=self.shown(inst))
        actions = self.roll.old_gone(k)
        if self.roll_info is not None:  # before the next slot's replacement is recorded
            self.roll_info["replaced"] = list(self.roll.replaced)  # a successor keeps it
        self._roll_act(actions)
        self._write_status()

    def _swap_pipes(self, inst: Instance) -> bool:
        """The slot's pipes drained (its old target is gone), its spare pipes, which the
        replacement writes to, are its pipes from now on, and the old ones the spare;
        whether they were (a slot has spare pipes once a replacement was spawned)."""
        streams = inst.streams
        streams.drain()
        if streams.spare is None:
            return False
        self.spares.remove(streams)
        for fd in (streams.out_r, streams.err_r):
            self.selector.unregister(fd)
        streams.swap_spare()
        self._watch_streams(inst)
        self.spares.add(streams)
        return True

    def roll_watches(self) -> dict[int, ReadyWatch]:
        return {repl.child.pid: repl.ready for repl in self.replacements.values()}

    # What the pump provides.
    def _write_status(self) -> None:
        raise NotImplementedError

    def _finish(self, action: supervise.Finish) -> None:
        raise NotImplementedError

    def _watch_target(self, inst: Instance) -> None:
        raise NotImplementedError

    def _unwatch_target(self, inst: Instance) -> None:
        raise NotImplementedError

    def _watch_streams(self, inst: Instance) -> None:
        raise NotImplementedError
