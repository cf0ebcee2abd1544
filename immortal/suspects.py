"""A monitor call that pumps keep dying in: skipped for its monitor after a few deaths.

A monitor that kills its pump on some lines (``os._exit``, a crash in C code) would be
handed them again by every successor, which died in turn: no line after them reached any
monitor while the daemon started pump after pump. Every call into a monitor is recorded
"in doubt" before it runs (``delivery``); a successor pump finds the one its predecessor
died in, and the journal's last word of its first page (``Ledger.suspect``) keeps that
call and how many pumps in a row died in it. At ``DEATHS`` the call's lines are marked as
that monitor's, counted in its ``dropped`` and said in the pump's log; the other monitors
are handed every line as before.
"""

from __future__ import annotations

import sys

from . import relay
from .relay import STREAMS

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from .delivery import Sink
    from .ledger import Ledger

#: pumps in a row that died in one call (the same lines, its monitor's mark unmoved)
DEATHS = 3
_SLOT_BITS, _COUNT_BITS = 6, 4  # a suspect word: mark, stream, count, slot


def suspect(sinks: list[Sink], marks: Ledger) -> None:
    """In a successor pump, before ``Sink.settle``: the call in doubt in the journal of
    ``marks`` (the first monitor's that has one) is the one its predecessor died in, if
    it was in a call of that monitor then; at ``DEATHS`` in a row, its lines are skipped
    for that monitor. A pump that died in no call, or in another, starts the count again;
    one that died before it called that monitor again leaves the count as it was."""
    found = next(((sink, doubt) for sink in sinks
                  if (doubt := marks.doubt(sink.slot)) is not None), None)
    if found is None:
        marks.set_suspect(0)
        return
    sink, (stream, end, _) = found
    # Counted only if the pump died in a call of that monitor ("busy" since it began): one
    # killed before it handed the lines over again (at its start, say) proves nothing.
    counts = sink.counts_ledger
    died_in_it = counts.busy(sink.slot) != 0
    counts.set_busy(sink.slot, 0)  # no call of the dead pump's runs now
    if not died_in_it:
        return
    # The call by where its monitor stood: its mark, unmoved while the pumps die in it.
    call = (marks.mark(sink.slot, stream) << 1 | stream) << _COUNT_BITS + _SLOT_BITS \
        | sink.slot
    last = marks.suspect()
    same = last & ~(((1 << _COUNT_BITS) - 1) << _SLOT_BITS) == call
    count = ((last >> _SLOT_BITS) & ((1 << _COUNT_BITS) - 1)) + 1 if same else 1
    if count < DEATHS:
        marks.set_suspect(call | count << _SLOT_BITS)
        return
    marks.set_suspect(0)
    _skip(sink, marks, stream, end)


def _skip(sink: Sink, marks: Ledger, stream: int, end: int) -> None:
    """The lines of the call, up to ``end`` (the first of them alone for a monitor that
    takes one line a call), are not handed to ``sink`` again: marked as its, and counted as
    dropped (in the ledger of its counts); said on stderr (the pump's log)."""
    start = marks.mark(sink.slot, stream)
    data = relay.journal_bytes(marks.journal, stream, start, end)
    if data and sink.by_line and b"\n" in data[:-1]:
        data = data[:data.index(b"\n") + 1]
        end = start + len(data)
    count = data.count(b"\n") + (not data.endswith(b"\n")) if data else 1
    marks.set_mark(sink.slot, stream, end)
    marks.clear_doubt(sink.slot)
    sink.counts_ledger.add_dropped(sink.slot, count)
    sys.stderr.write(f"immortal: monitor {sink.name!r}: {DEATHS} pumps in a row died in its "
                     f"call with {count} line(s) of {STREAMS[stream]} (offsets {start} to "
                     f"{end}); they are skipped for it (counted as dropped)\n")
    sys.stderr.flush()
