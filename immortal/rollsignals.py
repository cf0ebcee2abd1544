"""The signals of a rolling restart (``rollout``): the operator's, to replacements not yet
their slot's target, held for one not yet ready that would die of them; and the roll's own
TERM, grace period and KILL, of old targets whose replacements are ready, of cancelled
replacements, and of every replacement at a stop, with the deadlines the pump's loop
keeps for them (``roll_deadline``, ``roll_due``).
"""

from __future__ import annotations

import signal
import time

from . import _linux, rolling
from .rolling import FAILED_ROLL, Slot

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .events import ExitStatus
    from .rollout import Replacement
    from .workers import Instance


class RollSignals:
    """What the pump (``pump.Pump``) signals during a roll; the rest ``rollout.Rollout``
    and the pump provide."""

    roll: rolling.Roll | None
    roll_info: dict[str, Any] | None
    roll_grace: float | None
    replacements: dict[Slot, Replacement]
    old_kill_at: dict[Slot, float]

    _slot: Callable[[Slot], Instance | None]  #: ``rollout.Rollout``
    _swap: Callable[[Slot, ExitStatus | None], None]  #: ``rollout.Rollout``
    _write_status: Callable[[], None]

    def _grace(self, slot: Slot) -> float:
        inst = self._slot(slot)
        if self.roll_grace is not None or inst is None:
            return self.roll_grace or 0.0
        return inst.run.spec.stop_timeout

    def _retire_old(self, k: Slot) -> None:
        """The replacement of ``k`` is ready: its old target goes (TERM, grace, KILL)."""
        inst = self._slot(k)
        target = inst.target if inst is not None else None
        if target is None:  # died meanwhile, waiting for its restart: no one to retire
            self._swap(k, None)
            return
        self.old_kill_at[k] = time.monotonic() + self._grace(k)
        target.kill_group(signal.SIGTERM)

    def _cancel(self, k: Slot) -> None:
        repl = self.replacements.get(k)
        if repl is not None and repl.child.status is None and repl.kill_at is None:
            repl.kill_at = time.monotonic() + self._grace(k)
            repl.child.kill_group(signal.SIGTERM)

    def abort_roll(self, grace: float | None) -> None:
        """A stop: the replacements stop too (TERM, ``grace``, KILL); the old targets are
        the machines' to stop."""
        if self.roll is not None and not self.roll.finished and self.roll_info is not None:
            self.roll.stopped("the group was stopped")
            self.roll_info.update(state=FAILED_ROLL, why=self.roll.why)
        self.old_kill_at.clear()
        for repl in list(self.replacements.values()):
            if repl.child.status is None:
                repl.kill_at = time.monotonic() + (self._grace(repl.k) if grace is None
                                                   else grace)
                repl.child.kill_group(signal.SIGTERM)

    def signal_replacements(self, chosen: list[Instance], number: int) -> int:
        """Send signal ``number`` to the live replacements of the ``chosen`` instances (a
        roll's, not yet their slot's target); how many there are.

        A replacement not yet ready that would die of it (it neither handles nor ignores it
        yet: a program still starting up, whose handler comes later) gets it once it is
        ready: the operator's signal would otherwise fail the roll. What is held is in the
        status (``roll.held``), for a successor that resumes the roll.
        """
        found = (self.replacements.get(inst.slot) for inst in chosen)
        live = [repl for repl in found if repl is not None and repl.child.status is None]
        held = False
        for repl in live:
            if repl.ready.ready or _linux.takes_signal(repl.child.pid, number):
                repl.child.kill_group(number)
            else:
                repl.held.append(number)
                held = True
                if self.roll_info is not None:  # for a successor, should this pump die
                    self.roll_info.setdefault("held", {})[str(repl.k)] = list(repl.held)
        if held:
            self._write_status()
        return len(live)

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
            inst = self._slot(k)
            target = inst.target if inst is not None else None
            if at <= now:
                self.old_kill_at[k] = float("inf")  # KILL once, then wait for the death
                if target is not None:
                    target.kill_group(signal.SIGKILL)

    def _release_held(self, k: Slot) -> None:
        """The signals held for the replacement of ``k``, sent now that it is ready (and
        they are no longer recorded as held: ``rollout.Rollout._ready_noted``)."""
        repl = self.replacements.get(k)
        if repl is not None and repl.child.status is None:
            for number in repl.held:
                repl.child.kill_group(number)
            repl.held.clear()
