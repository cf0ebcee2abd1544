"""A start's answer to its caller: given once every instance's target is ready, or why the
start failed (``readiness``).

The pump of a first start is *pending* until then. Each instance's ``ReadyWatch`` tells
``_ready_changed`` when its target's state moves: once every instance is ready, the daemon
is told ``Started`` and then the caller ``ok`` (once the caller has its answer, a pump's
death is a restart). A target that dies before it is ready, or is not ready in time, gives
the whole start up: every instance stops (TERM, grace, KILL), and the group's end answers
the caller with that instance's reason, exit status and last lines on stderr
(``_fail_start``), so nothing is left. One that a restart asked during the start kills
does not: the start waits for its new target as it did for the first. After the start a
change is only recorded in ``status.json`` (a time limit passed is logged too): the restart
policy goes on as for any target. A new ``STATUS=`` text is recorded as it comes, ready
or not. A scale's new instances are not waited for here: ``Group.scale`` waits in the
caller until the status shows every instance ready.
"""

from __future__ import annotations

from . import rolelog
from .events import PUMP_START
from .holder import PAUSE, pause_at
from .machine import RESTARTING, STOPPING
from .readiness import FAILED
from .roles import Started

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any

    from .detach import Handshake
    from .link import DaemonLink
    from .readiness import Readiness
    from .roles import RoleArgs
    from .workers import Instance


class StartAnswer:
    """What the pump (``pumpstart.PumpStart``) does to answer its caller; the rest it
    provides."""

    args: RoleArgs

    @property
    def instances(self) -> list[Instance]:  # the pump's: every program's
        raise NotImplementedError

    handshake: Handshake
    link: DaemonLink
    previous: dict[str, Any] | None
    pending: bool  #: a first start whose caller still waits
    answered: bool  #: the start-up steps are over: a change of readiness is acted on
    stopped_for: str | None  #: why the group stops, once it does
    failure: str | None  #: why the start is given up
    failed: Instance | None  #: the instance it is given up for

    @property
    def all_ready(self) -> bool:
        """Every instance's target is ready."""
        return all(inst.ready.ready for inst in self.instances)

    def _answer_once_ready(self) -> None:
        """The start-up steps are over: the caller is answered now if every target is
        ready, else when the last one is (or the start fails)."""
        self.answered = True
        if not self.pending or self.all_ready:
            self._started()

    def _started(self) -> None:
        """The start is over: the daemon is told first (from then on a pump's death is a
        restart, not a failed start), then the status says so, then the caller (who may
        read the status at once). So whoever reads in the status that the start is over
        may kill the pump and the group goes on; a pump that dies before its answer
        leaves that answer to its daemon (``Daemon._answer_for``)."""
        if PAUSE:
            pause_at("ready")  # a test hook: unset in use
        self.link.tell(Started())
        if self.pending:
            self.pending = False
            self._write_status()
        if PAUSE:
            pause_at("answer")  # a test hook: unset in use
        first = self.instances[0].target
        self.handshake.send(ok=True, target=first.pid if first else None,
                            adopted=self.args.adopt is not None and self.args.why == PUMP_START)
        self.handshake.close()

    def _ready_changed(self, inst: Instance, state: Readiness) -> None:
        """The current target of ``inst`` became ready, or failed to."""
        if not self.answered:
            return  # _answer_once_ready looks at them all
        if state.ready:
            if self.pending and self.all_ready:
                self._started()
            else:
                self._write_status()
        elif state.state == FAILED:
            if self.pending and state.exit is not None and \
                    inst.machine.phase in (RESTARTING, STOPPING):
                # Killed by a restart or a stop asked during the start, not dead of its
                # own: the restart's new target decides; the stop's end answers the
                # caller (``_fail_start``: stopped before its target was ready).
                return
            if self.pending:
                self._give_up(inst, state.reason or "not ready")
            elif state.exit is None:
                rolelog.report("ready", f"immortal: pump: {self._named(inst, state.reason)}\n")
                self._write_status()

    def _notice_changed(self, inst: Instance) -> None:
        """The current target of ``inst`` sent a new STATUS text, its state unmoved: it is
        recorded (before the start-up steps are over, their own write records it)."""
        if self.answered:
            self._write_status()

    def _named(self, inst: Instance, text: str | None) -> str:
        """``text`` about ``inst``, naming it in a group of several (its program too, in
        a group of several programs)."""
        if inst.program and len(inst.run.instances) == 1:
            return f"program {inst.program!r}: {text}"
        if inst.program or len(self.instances) > 1:
            return f"instance {inst.slot}: {text}"
        return str(text)

    def _give_up(self, inst: Instance | None, reason: str) -> None:
        """A start that will not be ready (for ``inst``, or for all): the group stops, and
        its end (``_fail_start``) answers the caller. Only the first reason counts: the
        other targets' deaths in that stop are its consequence."""
        if self.failure is not None:
            return
        self.failure = self._named(inst, reason) if inst is not None else reason
        self.failed = inst
        self._stop_all(f"start failed: {self.failure}")

    def _fail_start(self) -> None:
        """The group ended before every target was ready: the caller gets why, with the
        failed instance's exit status and its last lines on stderr."""
        self.pending = False
        inst = self.failed or next((each for each in self.instances if not each.ready.ready),
                                   self.instances[0])
        last = inst.machine.last_exit
        reason = self.failure or self._named(
            inst, f"it was stopped before its target was ready ({inst.machine.reason or 'stop'})")
        current = inst.ready.current
        if last is not None and (current is None or current.exit is None):
            reason += f"; it was stopped: {last}"  # how it ended: the time limit's stop
        self.handshake.send(error="StartError", message=reason,
                            status=last.to_json() if last else None,
                            stderr=list(current.stderr) if current else [],
                            stopped=self.stopped_for)
        self.handshake.close()

    def _was_ready(self, inst: Instance, pid: int) -> tuple[bool, str | None]:
        """Whether the adopted target ``pid`` of ``inst`` was ready, and its last notify
        STATUS text: one a new start adopts ran before (ready); a successor's, as the last
        status.json says."""
        if self.args.why == PUMP_START:
            return True, None
        previous = self.previous or {}
        for entry in previous.get("instances") or ():
            if isinstance(entry, dict) and entry.get("instance") == inst.k \
                    and (entry.get("program") or "") == inst.program:
                previous = {"pids": {"target": entry.get("pid")}, **entry}
                break
        same = (previous.get("pids") or {}).get("target") == pid
        return same and bool(previous.get("ready")), \
            previous.get("notify_status") if same else None

    # What the pump provides.
    def _stop_all(self, reason: str) -> None:
        raise NotImplementedError

    def _write_status(self) -> None:
        raise NotImplementedError
