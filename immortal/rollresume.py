"""A rolling restart resumed by the next pump, after the pump carrying it out died (or the
daemon, whose successor forked a new pump): ``rollout`` carries it on from there.

A pump records its roll in ``status.json`` as it goes (``rollout``): the slots, those
``replaced``, the live ``replacements`` (pid and start time, by slot) and those ``ready``.
Its successor takes over the replacements still alive (proved by their start time; they
are the daemon's children now, whose pidfds tell their end, or found among them by token,
program and instance when the dead pump spawned one it had not recorded yet), each ready
or still waiting to be; then, once its loop watches, retires again the old targets of
those that are ready, and replaces the slots left. A slot the daemon hands it as its
target already had taken the slot: replaced. One of a slot that a scale retired meanwhile
is ended. The signals the dead pump held for a replacement not yet ready (``roll.held``)
are its successor's to send once it is ready.
"""

from __future__ import annotations

import os
import time

from . import _linux, adoption, orphans, process, rolling
from .listen import INSTANCE_ENV, PROGRAM_ENV
from .readywatch import ReadyWatch
from .rolling import ROLLING, Slot
from .workers import label

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any

    from .readiness import Readiness
    from .roles import Key
    from .rollout import Replacement
    from .workers import Instance


def _slot_named(key: str) -> Slot | None:
    """A slot as status.json's ``replacements`` (and ``orphans.spawned_by``) name it:
    ``K`` or ``PROGRAM:K``; None if it is neither."""
    program, colon, number = key.rpartition(":")
    if not number.isdecimal():
        return None
    return f"{program}:{int(number)}" if colon else int(number)


class RollResume:
    """What the pump (``pump.Pump``) does to resume a roll; the rest ``rollout.Rollout``
    and the pump provide."""

    previous: dict[str, Any] | None
    daemon_pid: int | None
    directory: Path
    roll: rolling.Roll | None
    roll_info: dict[str, Any] | None
    roll_grace: float | None

    @property
    def instances(self) -> list[Instance]:  # the pump's: every program's
        raise NotImplementedError

    _slot: Callable[[Slot], Instance | None]  #: ``rollout.Rollout``
    _follow: Callable[[Slot, process.Child, ReadyWatch], Replacement]
    _replacement_changed: Callable[[Slot, Readiness], None]
    _roll_act: Callable[[list[rolling.Action]], None]
    _write_status: Callable[[], None]

    def resume_roll(self, adopted: dict[Key, int]) -> None:
        """A successor pump: the roll its predecessor left in progress, taken over (see the
        module's docstring); carried on by ``continue_roll`` once the loop watches.
        ``adopted``: the targets we were handed, by instance."""
        left = (self.previous or {}).get("roll")
        if not isinstance(left, dict) or left.get("state") != ROLLING:
            return
        held = {label(*key): pid for key, pid in adopted.items()}
        here = {inst.slot for inst in self.instances}
        alive = {slot: (int(pid), int(started)) for key, (pid, started)
                 in (left.get("replacements") or {}).items()
                 if (slot := _slot_named(key)) is not None and started is not None
                 and _linux.is_alive(pid, started)}
        alive.update(self._unrecorded(left, alive, held))
        # One the daemon hands us as its slot's target had taken the slot already.
        replaced = [k for k in left.get("replaced") or () if k in here] + [
            k for k, (pid, _) in alive.items() if held.get(k) == pid]
        slots = [k for k in left.get("slots") or () if k in here and k not in replaced]
        grace = left.get("grace")
        self.roll_grace = None if grace is None else float(grace)
        self.roll = rolling.Roll(slots, int(left.get("batch") or 1), replaced)
        self.roll_info = {**left, "replaced": replaced, "replacements": {}, "ready": [],
                          "held": {}}
        ready = set(left.get("ready") or ())
        held_left = left.get("held")
        if not isinstance(held_left, dict):
            held_left = {}
        for k, (pid, started) in alive.items():
            if k in slots:
                numbers = held_left.get(str(k))
                self._take_over(k, pid, started, k in ready,
                                [n for n in numbers if type(n) is int]
                                if isinstance(numbers, list) else [])
        leftover = [found for k, found in alive.items()
                    if k not in slots and held.get(k) != found[0]]
        if leftover:  # of slots retired by a scale meanwhile: nobody's
            orphans.end(leftover)

    def _unrecorded(self, left: dict[str, Any], alive: dict[Slot, tuple[int, int]],
                    held: dict[Slot, int]) -> dict[Slot, tuple[int, int]]:
        """Replacements the dead pump spawned but died before recording: its parent's
        children now, found by their token, program and instance (``orphans.spawned_by``)."""
        if self.daemon_pid is None or left.get("since") is None:
            return {}
        known = {pid for pid, _ in alive.values()} | set(held.values())
        found = orphans.spawned_by(self.daemon_pid, int(left["since"]), self.directory,
                                   (PROGRAM_ENV, INSTANCE_ENV), known)
        return {slot: found[key] for key in found
                if (slot := _slot_named(key)) is not None and slot not in alive}

    def _take_over(self, k: Slot, pid: int, started: int, ready: bool,
                   held: list[int]) -> None:
        """The replacement of ``k`` a dead pump spawned, alive: ours to follow, with the
        signals that pump held for it (sent once it is ready, at once if it is)."""
        assert self.roll is not None and self.roll_info is not None
        inst = self._slot(k)
        assert inst is not None
        age = max(0.0, (_linux.boot_ticks() - started) / os.sysconf("SC_CLK_TCK"))
        child = process.Child(pid, time.monotonic() - age, None, own=False)
        child.pidfd = adoption.watch(pid)
        view = inst.run.spec
        watch = ReadyWatch(view.ready_mode, view.ready_timeout,
                           lambda state: self._replacement_changed(k, state))
        watch.spawned(child.started_at, ready)
        repl = self._follow(k, child, watch)
        self.roll.adopt(k)
        self.roll_info["replacements"][str(k)] = [pid, started]
        if watch.ready:  # known so, or ready="spawn"
            self.roll_info["ready"].append(k)
            for number in held:
                child.kill_group(number)
        elif held:
            repl.held = held
            self.roll_info["held"][str(k)] = list(held)

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
