"""Delivering output and events to one monitor: exactly once, in isolation, and with
backpressure "drop" on a thread of its own.

A ``Sink`` is one monitor as the host calls it: output through the one hook it takes it by
(``block``, ``lines``, or ``stdout``/``stderr`` line by line), each call bracketed in the
journal's ledger by "busy since" and, after it returns, the monitor's own mark: how far
that stream has reached it. A block that starts below the mark (a successor pump hands
over again what its predecessor had not recorded as done) is cut to the lines past it, so a
monitor that takes lines one by one is repeated nothing, whatever the others had taken.

What the marks cannot tell is a call that returned (the monitor wrote the line) in a pump
killed before the mark was stored. Each call is preceded by a record "in doubt" in the
ledger: the stream, the offset its lines end at, and, for a monitor that can check its own
output (``Monitor.delivered``), its ``position`` then. A successor, before the monitors'
setup, hands the lines of a call still in doubt to ``delivered`` on the new instance,
which says how many of them its output holds: those are marked as delivered and not handed
over again (``Sink.settle``). Without ``delivered``, or when it cannot tell (None), the
lines are handed over again: at least once. A call that pumps die in, one after another,
is skipped for its monitor at the third (``suspects``).

With backpressure "drop" each sink sits behind a thread of its own (``monitorthread``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable

from . import relay
from .errors import MONITOR_ERRORS
from .ledger import Ledger

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any

REPORT_EVERY = 1.0  # seconds between two tracebacks of one monitor and hook


class Failed(Exception):
    """A strict call (``setup`` at "pump start") raised; names the monitor."""

    def __init__(self, monitor: str, exc: BaseException) -> None:
        super().__init__(f"monitor {monitor!r}: {type(exc).__name__}: {exc}")
        self.monitor = monitor

    @classmethod
    def said(cls, monitor: str, text: str) -> Failed:
        """The same, from what it said in the monitor's own process (``monitorprocess``):
        ``text`` is "Type: message"."""
        failed = cls.__new__(cls)
        Exception.__init__(failed, f"monitor {monitor!r}: {text}")
        failed.monitor = monitor
        return failed


Line = Callable[..., object]  # (line, offset) or, where it takes no offset, (line)
WITNESS_MAX = (1 << 64) - 1  #: positions from 0 to this, less one, are kept
Position = Callable[[], "int | None"]
Delivered = Callable[[str, "list[bytes]", int, "int | None"], "int | None"]

#: A test hook, unset in use: the path of a file. A pump that removes it SIGKILLs itself
#: just after a monitor's output call returned, before the monitor's mark is stored, the
#: one instant whose delivery stays in doubt (the tests of ``Sink.settle`` aim at it).
KILL_AFTER_CALL = os.environ.get("IMMORTAL_TEST_KILL_AFTER_CALL")


def _kill_after_call() -> None:
    try:
        os.unlink(KILL_AFTER_CALL or "")
    except OSError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


class Sink:
    """One monitor: its calls, its slot in the ledger, its error reports."""

    def __init__(self, name: str, slot: int, ledger: Ledger,
                 events: dict[str, Callable[..., Any]],
                 block: Callable[[str, bytes, int], Any] | None = None,
                 lines: Callable[[str, list[bytes], int], Any] | None = None,
                 line: tuple[Line | None, Line | None] = (None, None),
                 doubt: tuple[Position | None, Delivered | None] = (None, None),
                 ledgers: list[Ledger] | None = None,
                 tell: Callable[[int | None], None] | None = None,
                 with_instance: bool = False,
                 offsets: tuple[bool, bool] = (True, True)) -> None:
        self.name = name
        self.slot = slot
        self._ledger = ledger
        #: one ledger per instance of the group's program (``workers``): each instance's
        #: marks and call in doubt are in its own journal; the first is ``ledger``, which
        #: also holds this monitor's counts and "busy since"
        self._ledgers = ledgers if ledgers is not None else [ledger]
        #: tells the monitor which instance the next call is about (``Monitor.instance``)
        self._tell = tell
        self._told: int | None = None
        #: the output and ``delivered`` functions take the instance as a last argument
        self._with_instance = with_instance
        self._events = events  # hook name -> function taking the hook's keyword arguments
        self._block = block
        self._lines = lines
        self._line = line
        #: whether each line hook takes the offset (an override may leave it out)
        self._offsets = offsets
        self._busy_store = ledger.busy_store(slot)
        self._position, self._delivered = doubt
        #: store the call in doubt before each output call, by instance: a monitor that
        #: can tell is asked after its pump's death (``settle``), and a call that pumps
        #: die in, in a row, is skipped (``suspects``)
        self._doubts: dict[int, Callable[[int, int], None] | None] = {}
        #: which streams it takes at all (a monitor of events only is never called on output)
        self.takes = tuple(bool(block or lines or line[s]) for s in (0, 1))
        #: backpressure "drop": count in the ledger the lines it took (``Worker``)
        self.counts = False
        #: backpressure "drop": set when the rest of its output is to be dropped, and what
        #: counts the lines dropped so (``Worker``)
        self.abandon: threading.Event | None = None
        self.lost: Callable[[int], None] = lambda count: None
        self._reported: dict[str, float] = {}

    @property
    def by_line(self) -> bool:
        """Whether it takes its output one line a call (``stdout``/``stderr``)."""
        return self._block is None and self._lines is None

    @property
    def counts_ledger(self) -> Ledger:
        """The ledger that holds this monitor's counts (its first instance's)."""
        return self._ledger

    def _instance(self, instance: int | None) -> None:
        """Tell the monitor which instance the next call is about, if that changed."""
        if self._tell is not None and instance != self._told:
            self._told = instance
            self._tell(instance)

    def forget(self, count: int) -> None:
        """The instances from ``count`` on are gone: no store into their journals."""
        for index in [index for index in self._doubts if index >= count]:
            del self._doubts[index]

    def _doubt_store(self, index: int) -> Callable[[int, int], None] | None:
        if index not in self._doubts:
            self._doubts[index] = self._ledgers[index].doubt_store(self.slot)
        return self._doubts[index]

    def output(self, stream: int, data: bytes, offset: int, end: int,
               instance: int | None = None) -> None:
        """Whole lines of ``stream`` (0 stdout, 1 stderr) from ``offset`` to ``end``, less
        what this monitor has already had; of ``instance`` in a group of several (its
        streams and marks are its own), None in a group of one."""
        ledger, slot = self._ledger, self.slot
        marks = self._ledgers[instance or 0]
        mark = marks.mark(slot, stream)
        if mark > offset:  # it had these lines from a pump that died since
            skipped = data if mark >= end else data[:mark - offset]  # on a line boundary
            if self.counts:
                ledger.add_taken(slot, skipped.count(b"\n"))  # as queued: not lost
            if mark >= end:
                return
            data, offset = data[mark - offset:], mark
        name = "stdout" if stream == 0 else "stderr"
        doubt = self._doubt_store(instance or 0)
        self._instance(instance)
        extra = (instance,) if self._with_instance else ()
        if self._block is not None or self._lines is not None:
            ledger.set_busy(slot, time.monotonic_ns())
            if doubt is not None:
                doubt(end << 1 | stream, self._witness())
            try:
                if self._block is not None:
                    self._block(name, data, offset, *extra)
                else:
                    self._lines(name, data.split(b"\n")[:-1], offset,  # type: ignore[misc]
                                *extra)
            except MONITOR_ERRORS:
                self._report("block" if self._block is not None else "lines")
            if KILL_AFTER_CALL:  # a test hook (above): unset in use
                _kill_after_call()
            marks.set_mark(slot, stream, end)
            if self.counts:
                ledger.add_taken(slot, data.count(b"\n"))
            ledger.set_busy(slot, 0)
            return
        if self._delivered is None and doubt is not None:
            # Asked of no one: the block's record is enough to find the call a pump died
            # in (the line past the mark, ``suspects``), for a store per block, not line.
            doubt(end << 1 | stream, 0)
            doubt = None
        self._each_line(stream, name, data, offset, end, marks, doubt, extra)

    def _each_line(self, stream: int, name: str, data: bytes, offset: int, end: int,
                   marks: Ledger, doubt: Callable[[int, int], None] | None,
                   extra: tuple[Any, ...]) -> None:
        """A monitor of lines, line by line: "busy since" before each call, its mark after
        each. Everything a line needs is looked up once per block: a line costs the call
        and two stores into the ledger."""
        call = self._line[stream]
        assert call is not None
        takes_offset = self._offsets[stream]
        set_busy = self._busy_store
        set_mark = marks.mark_store(self.slot, stream)
        counted = self._ledger.add_taken if self.counts else None
        abandon, kill, now = self.abandon, KILL_AFTER_CALL, time.monotonic_ns
        lines = data.split(b"\n")
        del lines[-1]
        for index, line in enumerate(lines):
            if abandon is not None and abandon.is_set():
                # The group ends and this monitor is behind (``Worker.discard``): the rest
                # of the block is dropped, so that its last events reach it soon.
                self.lost(len(lines) - index)
                break
            set_busy(now())
            # The last line of a block with its newline added ends at ``end``, not past it.
            after = offset + len(line) + 1
            if after > end:
                after = end
            if doubt is not None:
                doubt(after << 1 | stream, self._witness())
            try:
                if takes_offset:
                    call(line, offset, *extra)
                else:
                    call(line, *extra)
            except MONITOR_ERRORS:
                self._report(name)
            if kill:  # a test hook (above): unset in use
                _kill_after_call()
            offset = after
            set_mark(offset)
            if counted is not None:
                counted(self.slot, 1)
        set_busy(0)

    def _witness(self) -> int:
        """What the ledger keeps of the monitor's position before a call: 1 + it, or 0."""
        position = self._position
        if position is None:
            return 0
        try:
            value = position()
        except MONITOR_ERRORS:
            self._report("position")
            return 0
        return value + 1 if type(value) is int and 0 <= value < WITNESS_MAX else 0

    def settle(self) -> None:
        """In a successor pump, before ``setup``: the lines of a call the dead pump was in
        (or had returned from, unrecorded) that the monitor says it has are marked as its.
        The rest is handed over again, as the lines past the mark always are. (One call at
        most: calls into a monitor come one at a time, whichever instance's lines.)"""
        for index, marks in enumerate(self._ledgers):
            self._settle(marks, index if len(self._ledgers) > 1 else None)

    def _settle(self, marks: Ledger, instance: int | None) -> None:
        ledger, slot = self._ledger, self.slot
        doubt = marks.doubt(slot)
        if doubt is None:
            return
        stream, end, witness = doubt
        start = marks.mark(slot, stream)
        data = relay.journal_bytes(marks.journal, stream, start, end)
        if data is not None and self._delivered is not None:
            lines = data.split(b"\n")
            if not lines[-1]:
                del lines[-1]  # else a piece, or a last line whose newline the relay adds
            self._instance(instance)
            extra = (instance,) if self._with_instance else ()
            try:
                count = self._delivered("stdout" if stream == 0 else "stderr", lines, start,
                                        witness, *extra)
            except MONITOR_ERRORS:
                count = None
                self._report("delivered")
            if count is True:
                count = len(lines)
            if isinstance(count, int) and count > 0:
                taken = lines[:min(count, len(lines))]
                marks.set_mark(slot, stream, min(start + sum(map(len, taken)) + len(taken),
                                                 end))
                if ledger.queued(slot) > ledger.taken(slot):  # backpressure "drop": not lost
                    ledger.add_taken(slot, len(taken))
        marks.clear_doubt(slot)

    def event(self, hook: str, kwargs: dict[str, Any], strict: bool = False) -> None:
        function = self._events.get(hook)
        if function is None:
            return
        self._instance(kwargs.get("instance"))
        self._ledger.set_busy(self.slot, time.monotonic_ns())
        try:
            function(**kwargs)
        except MONITOR_ERRORS as exc:
            if strict:
                raise Failed(self.name, exc) from exc
            self._report(hook)
        finally:
            self._ledger.set_busy(self.slot, 0)

    def _report(self, hook: str) -> None:
        now = time.monotonic()
        if now - self._reported.get(hook, -REPORT_EVERY) < REPORT_EVERY:
            return  # rate-limited: one traceback per monitor and hook per second
        self._reported[hook] = now
        sys.stderr.write(f"immortal: monitor {self.name!r} raised in {hook!r}:\n")
        import traceback  # noqa: PLC0415 - a failure's path: the pump's pages, not every pump's

        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
