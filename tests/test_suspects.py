"""The count of pumps that died in one monitor call (immortal/suspects.py), driven by hand
on a journal in memory: no process."""

from __future__ import annotations

import mmap

from immortal import relay, suspects
from immortal.ledger import Ledger


class Sink:
    """What ``suspects`` needs of a monitor: its slot, name, counts, and how it takes."""

    def __init__(self, ledger: Ledger, slot: int = 0, by_line: bool = True) -> None:
        self.slot, self.name, self.by_line, self.counts_ledger = slot, "m", by_line, ledger


def journal(text: bytes) -> Ledger:
    """A ledger whose stdout holds ``text``, read and not yet delivered."""
    memory = mmap.mmap(-1, relay.SIZE)
    # The journal's layout, written by hand: stdout's active buffer is its first (the
    # word at 0), whose head (length, done, origin) follows; its data from origin 0.
    relay._HEADS.pack_into(memory, 8, len(text), 0, 0)
    data = relay._data(8)
    memory[data:data + len(text)] = text
    return Ledger(memory)


def die_in_call(ledger: Ledger, end: int, slot: int = 0) -> None:
    """A pump enters a call of the monitor of ``slot`` with stdout up to ``end``, and dies
    there."""
    ledger.doubt_store(slot)(end << 1 | 0, 0)
    ledger.set_busy(slot, 123)


def test_three_deaths_in_one_call_skip_its_first_line_for_a_monitor_of_lines(capsys):
    ledger = journal(b"a\npoison\nb\n")
    sink = Sink(ledger)
    ledger.set_mark(0, 0, 2)  # "a" delivered
    for _ in range(suspects.DEATHS - 1):
        die_in_call(ledger, 11)
        suspects.suspect([sink], ledger)
        assert ledger.mark(0, 0) == 2 and ledger.busy(0) == 0
    die_in_call(ledger, 11)
    suspects.suspect([sink], ledger)
    assert ledger.mark(0, 0) == 9  # past "poison\n" alone
    assert ledger.dropped(0) == 1 and ledger.suspect() == 0
    assert "3 pumps in a row died in its call with 1 line(s) of stdout" in \
        capsys.readouterr().err


def test_a_monitor_of_blocks_has_the_whole_call_skipped():
    ledger = journal(b"a\npoison\nb\n")
    sink = Sink(ledger, by_line=False)
    for _ in range(suspects.DEATHS):
        die_in_call(ledger, 11)
        suspects.suspect([sink], ledger)
    assert ledger.mark(0, 0) == 11 and ledger.dropped(0) == 3


def test_a_pump_killed_before_it_called_the_monitor_again_does_not_count():
    """Killed at its start, before it handed the lines over again: "busy" says it never
    called the monitor, and the count stays as it was (neither raised nor reset)."""
    ledger = journal(b"a\npoison\nb\n")
    sink = Sink(ledger)
    die_in_call(ledger, 11)
    suspects.suspect([sink], ledger)  # one death in the call
    for _ in range(5):  # five pumps killed at their start: the doubt stays, busy does not
        suspects.suspect([sink], ledger)
    assert ledger.mark(0, 0) == 0 and ledger.dropped(0) == 0
    for _ in range(suspects.DEATHS - 1):
        die_in_call(ledger, 11)
        suspects.suspect([sink], ledger)
    assert ledger.mark(0, 0) == 2  # the third death in the call: its line, "a", skipped


def test_progress_or_a_death_elsewhere_starts_the_count_again():
    ledger = journal(b"a\npoison\nb\n")
    sink = Sink(ledger)
    die_in_call(ledger, 11)
    suspects.suspect([sink], ledger)
    ledger.set_mark(0, 0, 2)  # a line went through: another call
    die_in_call(ledger, 11)
    suspects.suspect([sink], ledger)
    die_in_call(ledger, 11)
    suspects.suspect([sink], ledger)
    assert ledger.mark(0, 0) == 2  # two deaths at this mark: not yet
    ledger.set_mark(0, 0, 11)  # every line delivered: no call in doubt
    suspects.suspect([sink], ledger)
    assert ledger.suspect() == 0
