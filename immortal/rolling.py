"""A rolling restart: the instances of a group replaced a few at a time, never one missing.

For each instance (a *slot*), a replacement is spawned beside the process it replaces; only
once the replacement is ready is the old one retired (TERM, grace, KILL), so that a slot
always has a process serving. At most ``batch`` replacements are in flight at once (a
window that slides: the next slot's replacement starts as soon as a retired process is
gone), so a group of N instances never has more than N + ``batch`` processes alive.

A replacement that fails (it dies, or is not ready in time) aborts the roll: no other slot
is touched, the replacements not yet ready are cancelled, and the processes they were to
replace keep serving. Replacements already ready stay: their old processes are retired as
planned.

Pure: the pump feeds it what happened and carries out the actions it answers with. It has no
clock (readiness and its deadline are each replacement's own) and no processes.
"""

from __future__ import annotations

from collections.abc import Sequence

from .records import Record

#: a slot's name: an instance's number, or ``PROGRAM:k`` in a group of several programs
Slot = int | str
#: a roll's states, as status.json's ``roll`` records them (``rollout``)
ROLLING, DONE, FAILED_ROLL = "rolling", "done", "failed"


def rolls(several: bool, all_at_once: bool, asked: bool = False) -> bool:
    """Whether a restart is a rolling one: of ``several`` instances of a program (or of
    one that listens), or ``asked`` to roll, unless ``all_at_once``. The caller, the
    daemon and the pump each decide it from what they hold, by this one rule."""
    return not all_at_once and (several or asked)


class Replace(Record):
    """Spawn a replacement for ``slot``, beside the process that serves it now."""

    slot: Slot


class Retire(Record):
    """Stop the old process of ``slot`` (TERM, grace, KILL): its replacement is ready."""

    slot: Slot


class Cancel(Record):
    """Stop the replacement of ``slot``, not ready yet: the roll is aborted."""

    slot: Slot


class Finished(Record):
    """Nothing is left in flight. ``why`` is None when every slot was replaced, else why
    the roll was aborted (and ``replaced`` says which slots were)."""

    replaced: tuple[Slot, ...]
    why: str | None = None


Action = Replace | Retire | Cancel | Finished


class Roll:
    """One rolling restart of ``slots`` (in that order), ``batch`` at a time. A roll that a
    dead pump's successor resumes (``rollout``) names the slots replaced already
    (``replaced``), and those whose replacement it took over (``adopt``)."""

    def __init__(self, slots: Sequence[Slot], batch: int = 1,
                 replaced: Sequence[Slot] = ()) -> None:
        if batch < 1:
            raise ValueError(f"batch must be 1 or more (got {batch})")
        if len(set(slots)) != len(slots):
            raise ValueError(f"slots must be distinct (got {list(slots)})")
        self.batch = batch
        self._waiting: list[Slot] = list(slots)  #: slots not started yet, in order
        self._spawned: set[Slot] = set()  #: replacements spawned, not ready yet
        self._retiring: set[Slot] = set()  #: replacements ready, old process stopping
        self._replaced: list[Slot] = list(replaced)  #: slots whose old process is gone
        self.why: str | None = None  #: why the roll was aborted, once it is
        self.finished = False

    @property
    def replaced(self) -> tuple[Slot, ...]:
        """The slots whose old process is gone, their replacement their process now."""
        return tuple(self._replaced)

    @property
    def in_flight(self) -> int:
        """Replacements alive beside the processes they replace."""
        return len(self._spawned) + len(self._retiring)

    def pending(self, slot: Slot) -> bool:
        """Whether ``slot`` has a replacement in flight (spawned or its old one retiring)."""
        return slot in self._spawned or slot in self._retiring

    def begin(self) -> list[Action]:
        """The first replacements to spawn."""
        return self._fill()

    def adopt(self, slot: Slot) -> None:
        """``slot`` has a replacement already (spawned by a pump that died): it is in
        flight, as if ``Replace(slot)`` had been answered; ``ready`` and ``failed`` follow."""
        if slot in self._waiting:
            self._waiting.remove(slot)
        self._spawned.add(slot)

    def ready(self, slot: Slot) -> list[Action]:
        """The replacement of ``slot`` is ready: its old process is retired."""
        if slot not in self._spawned:
            return []  # cancelled, or not ours: nothing to do
        self._spawned.discard(slot)
        self._retiring.add(slot)
        return [Retire(slot)]

    def failed(self, slot: Slot, why: str) -> list[Action]:
        """The replacement of ``slot`` died or was not ready in time: the roll is aborted."""
        if slot not in self._spawned and slot not in self._retiring:
            return []
        self._spawned.discard(slot)
        self._retiring.discard(slot)
        actions: list[Action] = []
        if self.why is None:
            self.why = f"instance {slot}: {why}"
            self._waiting.clear()
            actions = [Cancel(other) for other in sorted(self._spawned)]
            self._spawned.clear()
        return actions + self._end()

    def stopped(self, why: str) -> None:
        """The group stops: the roll ends here, the replacements with the group. What
        comes of them after (one ready, one dead) is no longer the roll's: a replacement
        ready only as it stops takes no slot, nor is its death a failure."""
        if self.finished:
            return
        self.why = why
        self._waiting.clear()
        self._spawned.clear()
        self._retiring.clear()
        self.finished = True

    def old_gone(self, slot: Slot) -> list[Action]:
        """The old process of ``slot`` has exited after its retirement: its replacement
        serves the slot now, and the window slides to the next slot."""
        if slot not in self._retiring:
            return []
        self._retiring.discard(slot)
        self._replaced.append(slot)
        return self._fill()

    def _fill(self) -> list[Action]:
        actions: list[Action] = []
        while self._waiting and self.why is None and self.in_flight < self.batch:
            slot = self._waiting.pop(0)
            self._spawned.add(slot)
            actions.append(Replace(slot))
        return actions + self._end()

    def _end(self) -> list[Action]:
        if self.finished or self.in_flight or (self._waiting and self.why is None):
            return []
        self.finished = True
        return [Finished(tuple(self._replaced), self.why)]
