"""The rolling restart's plan (immortal/rolling.py), driven by hand: no process, no clock.

A small simulation plays the pump: it counts the processes alive and checks after every
step that the group never has fewer than N serving or more than N + batch alive."""

from __future__ import annotations

import random

import pytest

from immortal.rolling import Cancel, Finished, Replace, Retire, Roll


class Group:
    """What the pump would hold: per slot, the serving process and the replacement."""

    def __init__(self, n: int, batch: int) -> None:
        self.n, self.batch = n, batch
        self.old = set(range(n))  #: slots whose old process is alive
        self.new: set[int] = set()  #: slots with a replacement alive
        self.ready: set[int] = set()
        self.retiring: set[int] = set()
        self.finished: list[Finished] = []

    def apply(self, actions: list) -> None:
        for action in actions:
            if isinstance(action, Replace):
                assert action.slot not in self.new
                self.new.add(action.slot)
            elif isinstance(action, Retire):
                assert action.slot in self.ready, "retired before its replacement was ready"
                self.retiring.add(action.slot)
            elif isinstance(action, Cancel):
                assert action.slot not in self.ready
                self.new.discard(action.slot)
            else:
                self.finished.append(action)
        alive = len(self.old) + len(self.new)
        assert alive <= self.n + self.batch, f"{alive} alive"
        serving = {s for s in range(self.n) if s in self.old or s in self.ready}
        assert len(serving) == self.n or self.finished, f"a slot without a process: {serving}"


def test_one_at_a_time_replaces_every_slot_in_order():
    roll, group = Roll([0, 1, 2, 3]), Group(4, 1)
    actions = roll.begin()
    assert actions == [Replace(0)]
    group.apply(actions)
    for slot in range(4):
        group.ready.add(slot)
        actions = roll.ready(slot)
        assert actions == [Retire(slot)]
        group.apply(actions)
        group.old.discard(slot)
        actions = roll.old_gone(slot)
        group.apply(actions)
        expected = [Replace(slot + 1)] if slot < 3 else [Finished((0, 1, 2, 3))]
        assert actions == expected
    assert roll.finished and roll.why is None


def test_a_batch_keeps_that_many_in_flight_and_slides():
    roll, group = Roll(range(5), batch=2), Group(5, 2)
    actions = roll.begin()
    assert actions == [Replace(0), Replace(1)]
    group.apply(actions)
    group.ready.add(1)
    group.apply(roll.ready(1))
    group.old.discard(1)
    assert roll.old_gone(1) == [Replace(2)]  # the window slides without waiting for slot 0
    assert roll.in_flight == 2


def test_a_failed_replacement_aborts_and_cancels_those_not_ready():
    roll = Roll(range(6), batch=3)
    assert roll.begin() == [Replace(0), Replace(1), Replace(2)]
    assert roll.ready(0) == [Retire(0)]
    actions = roll.failed(1, "exited with status 1")
    assert actions == [Cancel(2)]  # slot 0 goes on: its replacement is ready
    assert roll.why == "instance 1: exited with status 1"
    assert not roll.finished
    assert roll.old_gone(0) == [Finished((0,), "instance 1: exited with status 1")]
    assert roll.begin() == [] and roll.ready(3) == [] and roll.failed(4, "x") == []


def test_an_abort_with_nothing_else_in_flight_finishes_at_once():
    roll = Roll([0, 1])
    roll.begin()
    assert roll.failed(0, "not ready within 5 s") == [
        Finished((), "instance 0: not ready within 5 s")]


def test_events_for_slots_not_in_flight_are_ignored():
    roll = Roll([0, 1])
    roll.begin()
    assert roll.ready(1) == [] and roll.old_gone(0) == [] and roll.failed(1, "x") == []
    assert roll.pending(0) and not roll.pending(1)


def test_a_stop_ends_the_roll_and_what_comes_of_its_replacements_after():
    """A replacement ready, or one dead, after the group's stop is no longer the roll's:
    no slot is retired or swapped, no failure is reported."""
    roll = Roll([0, 1, 2], batch=2)
    assert roll.begin() == [Replace(0), Replace(1)]
    assert roll.ready(0) == [Retire(0)]
    roll.stopped("the group was stopped")
    assert roll.finished and roll.why == "the group was stopped"
    assert roll.ready(1) == [] and roll.old_gone(0) == [] and roll.failed(1, "x") == []
    assert not roll.pending(0) and not roll.pending(1) and roll.replaced == ()
    roll.stopped("again")
    assert roll.why == "the group was stopped"


def test_bad_plans_are_refused():
    with pytest.raises(ValueError, match="batch"):
        Roll([0], batch=0)
    with pytest.raises(ValueError, match="distinct"):
        Roll([0, 0])


def test_an_empty_group_finishes_at_once():
    assert Roll([]).begin() == [Finished(())]


@pytest.mark.parametrize("seed", range(40))
def test_random_orders_keep_the_bounds(seed):
    """Replacements become ready, fail, and old processes go, in random orders: the
    bounds hold at every step and the roll always finishes."""
    rng = random.Random(seed)
    n, batch = rng.randint(1, 8), rng.randint(1, 3)
    roll, group = Roll(list(range(n)), batch), Group(n, batch)
    group.apply(roll.begin())
    fail_at = rng.choice([None, rng.randrange(n)])
    for _ in range(200):
        if group.finished:
            break
        choices = ([("ready", s) for s in group.new - group.ready] +
                   [("gone", s) for s in group.retiring])
        what, slot = rng.choice(choices)
        if what == "ready" and slot == fail_at:
            group.new.discard(slot)
            group.apply(roll.failed(slot, "died"))
        elif what == "ready":
            group.ready.add(slot)
            group.apply(roll.ready(slot))
        else:
            group.old.discard(slot)
            group.retiring.discard(slot)
            group.apply(roll.old_gone(slot))
    assert len(group.finished) == 1
    done = group.finished[0]
    if done.why is None:
        assert sorted(done.replaced) == list(range(n))
    assert group.old | group.ready >= set(range(n)) - set(done.replaced) - {fail_at}


def test_a_resumed_roll_takes_over_replacements_in_flight():
    """A dead pump's successor: slot 0 replaced already, slot 1's replacement ready (its
    old process to retire again), slot 2's not ready yet; slot 3 waits for the window."""
    roll = Roll([1, 2, 3], batch=2, replaced=[0])
    roll.adopt(1)
    roll.adopt(2)
    assert roll.begin() == []  # two in flight: the window is full
    assert roll.ready(1) == [Retire(1)]
    assert roll.ready(2) == [Retire(2)]
    assert roll.old_gone(1) == [Replace(3)]  # one slot done: the window slides
    assert roll.old_gone(2) == []
    assert roll.ready(3) == [Retire(3)]
    assert roll.old_gone(3) == [Finished((0, 1, 2, 3))]
