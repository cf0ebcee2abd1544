"""What each monitor was handed: the ledger, in the journal's first page after the
streams' heads (``relay``).

The pump's ``progress`` (u64, one more for each read of a pipe), then one slot per monitor
of the group (the first ``SLOTS``, in the order the group names them): how far each stream
was delivered *to that monitor* (``mark``, the stream offset just past the last line it
returned from, always on a line boundary), how many lines it lost to backpressure "drop"
(``dropped``), and since when a call into it runs (``busy``, ``time.monotonic_ns()``, 0
between calls), and with backpressure "drop" how many lines were queued for it and how many
it took (``queued``, ``taken``: what a dead pump had queued and the monitor not taken is
counted as dropped by the successor), and the call in doubt (``doubt``: the stream and the
offset its lines end at, stored before each call into a monitor, with ``witness``, the
position of a monitor that can tell what it received; a call whose end lies past the
stream's mark had not been recorded as returned: its lines may or may not have reached the
monitor, which a successor asks, ``delivery.py``). A successor hands each monitor only the
lines past its own mark, so a block one monitor had taken and another not yet reaches each
exactly once. The daemon reads ``progress``, marks and ``busy`` to tell a pump that no
longer drains its pipes (``stall.py``). The page's last word is the call in doubt that the
last pumps died in, one after another, with their count (``suspect``): a monitor that kills
its pump on some lines is handed them no more after a few deaths (``suspects``).
"""

from __future__ import annotations

import functools
import mmap
import struct
from collections.abc import Callable

PAGE = 4096  #: the journal's first page: the streams' heads (``relay``), then the ledger
#: where the ledger begins: past the heads of two streams, each ``active`` and two buffers'
#: ``length``, ``done`` and ``origin`` (u64s; ``relay`` checks it against its layout)
LEDGER = 2 * (8 + 2 * 24)
#: monitors with a slot in the ledger; those past it are handed whole blocks again. As many
#: as the first page holds with the heads: the ledger is read at every stall check.
SLOTS = 62
_SLOT = 64  # mark (stdout), mark (stderr), dropped, busy, queued, taken, doubt, witness: u64s
_WORD = struct.Struct("=Q")
_PAIR = struct.Struct("=QQ")
_END = LEDGER + 8 + SLOTS * _SLOT
_SUSPECT = _END  # the call pumps died in, in a row: the first page's last word
assert _SUSPECT + 8 <= PAGE


def _nothing(value: int) -> None:
    """A store into the ledger of a monitor past ``SLOTS``: none."""


class Ledger:
    """The ledger part of a journal: per monitor slot, marks, drops and the running call.

    Each method (but ``snapshot``, a copy) is one or two stores or loads of 8 or 16
    bytes in shared memory, no system call: cheap enough to run around every monitor call.
    """

    def __init__(self, journal: mmap.mmap) -> None:
        self._map = journal

    def progress(self) -> int:
        """How many reads of the pipes the pumps made so far."""
        return _WORD.unpack_from(self._map, LEDGER)[0]

    def mark(self, slot: int, stream: int) -> int:
        """How far ``stream`` (0 stdout, 1 stderr) was delivered to monitor ``slot``."""
        if slot >= SLOTS:
            return 0
        return _WORD.unpack_from(self._map, LEDGER + 8 + slot * _SLOT + stream * 8)[0]

    def set_mark(self, slot: int, stream: int, offset: int) -> None:
        if slot < SLOTS:
            _WORD.pack_into(self._map, LEDGER + 8 + slot * _SLOT + stream * 8, offset)

    def mark_store(self, slot: int, stream: int) -> Callable[[int], None]:
        """``set_mark(slot, stream, offset)`` as one call of ``offset``, for a loop over
        lines."""
        if slot >= SLOTS:
            return _nothing
        return functools.partial(_WORD.pack_into, self._map, LEDGER + 8 + slot * _SLOT
                                 + stream * 8)

    def dropped(self, slot: int) -> int:
        """Lines monitor ``slot`` lost to backpressure "drop", across pumps."""
        if slot >= SLOTS:
            return 0
        return _WORD.unpack_from(self._map, LEDGER + 8 + slot * _SLOT + 16)[0]

    def add_dropped(self, slot: int, count: int) -> None:
        if slot < SLOTS:
            _WORD.pack_into(self._map, LEDGER + 8 + slot * _SLOT + 16,
                            self.dropped(slot) + count)

    def busy(self, slot: int) -> int:
        """Since when (``time.monotonic_ns()``) a call into monitor ``slot`` runs; 0: none."""
        if slot >= SLOTS:
            return 0
        return _WORD.unpack_from(self._map, LEDGER + 8 + slot * _SLOT + 24)[0]

    def set_busy(self, slot: int, since: int) -> None:
        if slot < SLOTS:
            _WORD.pack_into(self._map, LEDGER + 8 + slot * _SLOT + 24, since)

    def busy_store(self, slot: int) -> Callable[[int], None]:
        """``set_busy(slot, since)`` as one call of ``since``."""
        if slot >= SLOTS:
            return _nothing
        return functools.partial(_WORD.pack_into, self._map, LEDGER + 8 + slot * _SLOT + 24)

    def queued(self, slot: int) -> int:
        """Backpressure "drop": lines queued for monitor ``slot`` so far (by the pump's
        thread only)."""
        return self._word(slot, 32)

    def add_queued(self, slot: int, count: int) -> None:
        if slot < SLOTS:
            self._put(slot, 32, self._word(slot, 32) + count)

    def taken(self, slot: int) -> int:
        """Backpressure "drop": of those, the lines monitor ``slot`` has taken (by its own
        thread only: each word has one writer)."""
        return self._word(slot, 40)

    def add_taken(self, slot: int, count: int) -> None:
        if slot < SLOTS:
            self._put(slot, 40, self._word(slot, 40) + count)

    def doubt_store(self, slot: int) -> Callable[[int, int], None] | None:
        """For monitor ``slot``, a function storing the call in doubt in one 16-byte store:
        ``store(end << 1 | stream, witness)``, before a call with the lines of ``stream``
        up to ``end``; ``witness``: 1 + the monitor's position then (``Monitor.position``),
        0 for none. None past ``SLOTS``."""
        if slot >= SLOTS:
            return None
        return functools.partial(_PAIR.pack_into, self._map, LEDGER + 8 + slot * _SLOT + 48)

    def doubt(self, slot: int) -> tuple[int, int, int | None] | None:
        """``(stream, end, witness)`` of a call into monitor ``slot`` that began and was not
        recorded as returned (its end past the stream's mark), or None."""
        if slot >= SLOTS:
            return None
        word, witness = _PAIR.unpack_from(self._map, LEDGER + 8 + slot * _SLOT + 48)
        stream, end = word & 1, word >> 1
        if not word or self.mark(slot, stream) >= end:
            return None
        return stream, end, witness - 1 if witness else None

    def clear_doubt(self, slot: int) -> None:
        if slot < SLOTS:
            _PAIR.pack_into(self._map, LEDGER + 8 + slot * _SLOT + 48, 0, 0)

    def suspect(self) -> int:
        """The call in doubt that the last pumps died in, one after another, and how many
        (``suspects`` writes and reads it); 0: none."""
        return _WORD.unpack_from(self._map, _SUSPECT)[0]

    def set_suspect(self, value: int) -> None:
        _WORD.pack_into(self._map, _SUSPECT, value)

    @property
    def journal(self) -> mmap.mmap:
        """The journal this ledger is part of (``relay.journal_bytes`` reads its streams)."""
        return self._map

    def _word(self, slot: int, at: int) -> int:
        if slot >= SLOTS:
            return 0
        return _WORD.unpack_from(self._map, LEDGER + 8 + slot * _SLOT + at)[0]

    def _put(self, slot: int, at: int, value: int) -> None:
        _WORD.pack_into(self._map, LEDGER + 8 + slot * _SLOT + at, value)

    def snapshot(self) -> bytes:
        """Progress and every slot, to compare with a later one: equal means no read and
        no monitor call returned in between."""
        return self._map[LEDGER:_END]
