"""Relaying the target's output: pipes, line framing, and a journal that outlives a pump.

A pump reads a chunk from the pipe *into shared memory* (``os.readv`` straight into a
mapping of a memory file held by the daemon), records its length, then hands the whole lines to
the monitors as one block, recording after each block how far it got. A pump that dies at
any point leaves the journal telling its successor which bytes it had taken from the pipe
and not yet delivered: the successor delivers them first. Even a read whose length was not
recorded yet is found: the journal past the recorded length is kept zeroed, so the bytes of
that read are the non-zero ones. Delivery is recorded per monitor too (the ledger, below):
what remains at risk is a monitor's write that had happened when its pump died before
recording it (one line, or the batch or block that call took, at the same offsets).

Journal layout, per stream: ``active`` (u64), then two buffers, each a head of ``length``,
``done`` and ``origin`` (u64 each) and ``CAPACITY`` bytes of data. Every head, and the
ledger below, lie in the journal's first page, and the data in the pages after it: a
journal whose target writes nothing has that one page resident, not one per head (a group
of many instances holds a journal per instance). Bytes ``[done, length)`` of the active buffer
are read but not delivered; ``origin`` is the stream offset of the buffer's first byte, so
that every line has an offset that counts across pumps (``stdout(line, offset)``): a
monitor that stores the offset of the last line it kept can skip what a dying pump may
deliver twice, and so get each line exactly once. Compaction copies the undelivered
tail into the other buffer and then flips ``active`` in one aligned store, so a death
mid-copy loses nothing.

After the two streams' heads comes the ledger (``ledger.py``): the pump's read counter,
then what each monitor was handed.
"""

from __future__ import annotations

import mmap
import select
import socket
import os
import struct
from collections.abc import Callable

from ._linux import keep_heap, memory_file, set_pipe_size
from .ledger import LEDGER, PAGE

MAX_LINE = 64 * 1024  #: longer lines are delivered in pieces of this size
READ_SIZE = 64 * 1024
CAPACITY = READ_SIZE + MAX_LINE
PIPE_SIZE = 1024 * 1024  #: how much a target may write while no pump reads
MAX_MESSAGE = 64 * 1024  #: the largest message on the channel
_WORD = struct.Struct("=Q")
_HEAD = 24  # length, done, origin: three u64 words, each buffer's head
_STREAM = 8 + 2 * _HEAD  # a stream's heads: active, then its two buffers'
STREAMS = ("stdout", "stderr")
assert LEDGER == _STREAM * len(STREAMS)  # the ledger begins where the heads end
_DATA = PAGE  # the buffers' data, from the second page on
SIZE = _DATA + 2 * len(STREAMS) * CAPACITY
_HEADS = struct.Struct("=QQQ")
#: the relay's copies come and go at every read: malloc keeps this much of them (_linux)
HEAP_KEPT = 4 * 1024 * 1024
HEAP_MAPPED = 1024 * 1024
_ZEROS = memoryview(bytes(CAPACITY))  # what a used buffer is wiped with, never a new copy


def make_pipe() -> tuple[int, int]:
    """A pipe for one of the target's streams: read end non-blocking, 1 MiB if allowed."""
    r, w = os.pipe()
    set_pipe_size(w, PIPE_SIZE)
    os.set_blocking(r, False)
    return r, w


def make_channel() -> tuple[int, int]:
    """The message channel: (our end, the target's end) of a SOCK_SEQPACKET pair, so that
    every message arrives whole."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    return ours.detach(), theirs.detach()


def make_journal() -> int:
    """A zeroed shared-memory file for the journal (an fd to pass from pump to pump)."""
    return memory_file("immortal-journal", SIZE)


class Relay:
    """One stream of the target: pipe → journal → blocks of whole lines to
    ``emit(block, offset, end)``: the stream offsets of the first line and just past the last
    (``offset + len(block)``, but one less for a block whose newline was added)."""

    def __init__(self, fd: int, journal: mmap.mmap, index: int,
                 emit: Callable[[bytes, int, int], None], echo: int | None = None) -> None:
        self.fd = fd
        self._map = journal
        self._base = index * _STREAM
        self._emit = emit
        self.echo = echo  #: the fd that gets the raw bytes too (development), or None
        #: the echo's reader went away (EPIPE: ``immortal run -s development ... | head``)
        self.echo_gone = False
        #: the last read filled the journal's room: the pipe may hold more right away
        self.more = False
        keep_heap(HEAP_KEPT, HEAP_MAPPED)

    # The journal's words and buffers.
    def _get(self, offset: int) -> int:
        return _WORD.unpack_from(self._map, offset)[0]

    def _set(self, offset: int, value: int) -> None:
        _WORD.pack_into(self._map, offset, value)

    def _buffer(self, which: int | None = None) -> int:
        """Where the head of buffer ``which`` (the active one: None) lies."""
        if which is None:
            which = self._get(self._base) & 1
        return self._base + 8 + which * _HEAD

    def _data(self, buffer: int) -> int:
        """Where the data of the buffer whose head is at ``buffer`` lies."""
        return _data(buffer)

    # Reading and delivering.
    def read(self) -> bool:
        """Read one chunk from the pipe and deliver its whole lines; False when it was empty."""
        journal = self._map
        buffer = self._base + 8 + (_WORD.unpack_from(journal, self._base)[0] & 1) * _HEAD
        length = _WORD.unpack_from(journal, buffer)[0]
        data = _data(buffer)
        view = memoryview(journal)[data + length: data + CAPACITY]
        try:
            count = os.readv(self.fd, [view])
        except BlockingIOError:
            count = 0
        finally:
            view.release()
        self.more = count == CAPACITY - length
        if count <= 0:
            return False
        _WORD.pack_into(journal, buffer, length + count)  # from here on the bytes are ours
        _WORD.pack_into(journal, LEDGER, _WORD.unpack_from(journal, LEDGER)[0] + 1)
        if self.echo is not None and not _write_all(
                self.echo, journal[data + length: data + length + count]):
            self.echo, self.echo_gone = None, True
        self._deliver(buffer, False)
        return True

    def deliver(self, final: bool = False) -> None:
        """Deliver every whole line not yet delivered; with ``final``, the partial one too.

        Whole lines go out as one block, copied once from the journal as they lie there (one
        ``emit`` per read, not per line); an overlong line goes in pieces, one at a time,
        each with a newline added.
        """
        self._deliver(self._buffer(), final)

    def _deliver(self, buffer: int, final: bool) -> None:
        journal = self._map
        start = _data(buffer)  # positions below are in the map, searched without a copy
        length, done, origin = _HEADS.unpack_from(journal, buffer)
        length += start
        at = done + start
        origin -= start  # plus a position: its stream offset
        last = journal.rfind(b"\n", at, length)
        while at < length:
            cut = _whole_lines(journal, at, last)
            if cut > at:
                block = journal[at:cut]
            elif length - at > MAX_LINE:
                # An overlong line: no newline in the MAX_LINE + 1 bytes from `at`.
                cut = at + MAX_LINE
                block = journal[at:cut] + b"\n"
            elif final:
                cut = length
                block = journal[at:cut] + b"\n"
            else:
                break  # a partial line: it waits in the journal for its newline
            self._emit(block, origin + at, origin + cut)
            at = cut
            _WORD.pack_into(journal, buffer + 8, at - start)  # delivered: not repeated
        if at > start:
            self._compact(buffer, length - start, at - start)

    def _compact(self, buffer: int, length: int, done: int) -> None:
        """Move the undelivered tail to the other buffer's start; flip in one store; then
        zero what the old buffer used, so that it is all zeros when its turn comes again."""
        journal = self._map
        active = _WORD.unpack_from(journal, self._base)[0]
        other = self._base + 8 + ((active + 1) & 1) * _HEAD
        tail = length - done
        data = _data(buffer)
        if tail:
            there = _data(other)
            journal[there: there + tail] = journal[data + done: data + length]
        origin = _WORD.unpack_from(journal, buffer + 16)[0]
        _HEADS.pack_into(journal, other, tail, 0, origin + done)
        _WORD.pack_into(journal, self._base, active + 1)
        journal[data: data + length] = _ZEROS[:length]
        _WORD.pack_into(journal, buffer, 0)

    def recover(self, journal_fd: int | None = None) -> None:
        """Take over from a pump that died: find bytes it read but did not record.

        Past ``length`` the active buffer holds zeros, except for a read that landed just
        before its reader died: those bytes are the non-zero ones. (Trailing NUL bytes of
        such a read cannot be told from the zeros; they are the one thing that can go.)
        Then make sure the other buffer is zeros, as it should be.

        Both are looked at through ``journal_fd`` (the journal's file) when given: reading
        shared memory through the mapping gives each page it reads memory of its own, and a
        journal nobody wrote much into would then cost its whole size in every group.
        """
        buffer = self._buffer()
        length = self._get(buffer)
        data = _data(buffer)
        unrecorded = self._peek(journal_fd, data + length, CAPACITY - length).rstrip(b"\0")
        if unrecorded:
            self._set(buffer, length + len(unrecorded))
        other = self._buffer((self._get(self._base) + 1) & 1)
        self._map[other: other + _HEAD] = bytes(_HEAD)
        there = _data(other)
        if self._peek(journal_fd, there, CAPACITY).strip(b"\0"):
            self._map[there: there + CAPACITY] = bytes(CAPACITY)

    def _peek(self, journal_fd: int | None, start: int, length: int) -> bytes:
        if journal_fd is None:
            return self._map[start: start + length]
        return os.pread(journal_fd, length, start)

    def drain(self) -> None:
        """The target is gone: deliver all it wrote, the last partial line included."""
        while self.read():
            pass
        self.deliver(final=True)


def _data(buffer: int) -> int:
    """Where the data of the buffer whose head is at ``buffer`` lies: the buffers in the
    order of their heads, after the first page."""
    stream, at = divmod(buffer, _STREAM)
    return _DATA + (2 * stream + (at - 8) // _HEAD) * CAPACITY


def _whole_lines(data: mmap.mmap, at: int, last: int) -> int:
    """Where the run of whole lines from ``at`` ends (``at`` if there is none): past the
    last newline, at ``last``, unless a line is longer than MAX_LINE, then before that line.

    One search per stride of MAX_LINE bytes, not one per line: the lines after the last
    newline within ``MAX_LINE + 1`` bytes of ``at`` start further than that, so two strides
    cover at least MAX_LINE bytes; a stride with no newline is an overlong line.
    """
    while at + MAX_LINE < last:
        newline = data.rfind(b"\n", at, at + MAX_LINE + 1)
        if newline < 0:
            return at
        at = newline + 1
    return last + 1 if last >= at else at


def _write_all(fd: int, data: bytes) -> bool:
    """Write ``data`` to ``fd``; False if its reader went away (the monitors still get
    every line)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [])
        except BrokenPipeError:
            return False
        except OSError:
            return True  # the terminal went away (EIO): the monitors still get every line
    return True


def open_journal(fd: int) -> mmap.mmap:
    return mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)


def journal_bytes(journal: mmap.mmap, stream: int, start: int, end: int) -> bytes | None:
    """The bytes of ``stream`` from offset ``start`` to ``end`` if ``journal`` still holds
    them (read and not yet compacted away), else None."""
    base = stream * _STREAM
    buffer = base + 8 + (_WORD.unpack_from(journal, base)[0] & 1) * _HEAD
    length = _WORD.unpack_from(journal, buffer)[0]
    origin = _WORD.unpack_from(journal, buffer + 16)[0]
    if not origin <= start <= end <= origin + length:
        return None
    data = _data(buffer) - origin
    return journal[data + start: data + end]
