"""An instance's spare pipes: where a rolling restart's replacement writes while the old
target lives, so that what each of the two prints is told apart.

A slot's own pipes carry what its target writes (read by the relays, journaled, delivered:
``streams``). A replacement spawned beside it (``rollout``) writes to the slot's spare
pipes instead, and the pump moves their whole lines into the slot's pipes with ``splice``
(in the kernel: a byte is in one pipe or the other, never in the pump's hands alone), each
line seen first (``tee``: a copy, the bytes left where they are) by the replacement's
readiness (``Streams.seen``). Every line so reaches the monitors as the instance's, through
its pipes and journal, once; and a ``line:`` readiness reads the replacement's lines only.
When the replacement takes the slot (its old target gone, the slot's pipes drained), the
two pairs swap: the spare pipes are the slot's, read by the relays, and the old ones are
the spare (what a descendant of the old target still writes there is moved on likewise).

The daemon holds the spare pipes, both ends, as it holds the slot's (``roles.Spare``; the
swap is ``Target(swap=True)``): a pump's death loses nothing, and its successor moves what
is left, whose lines a replacement's readiness then sees again.

Lines are moved whole (an overlong one in pieces of ``relay.MAX_LINE``), so the two
processes' lines interleave whole in the slot's pipe, unless it fills in the middle of a
move; what a dead replacement left without a newline is moved with one added.
"""

from __future__ import annotations

import os
import select
import time

from . import _linux
from .relay import MAX_LINE, PIPE_SIZE, make_pipe

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from .rolefds import Pipes
    from .streams import Streams

STREAMS = ("stdout", "stderr")
RETRY = 0.01  #: seconds: a move the slot's full pipe refused is tried again this soon


def make() -> Pipes:
    """A new instance's spare pipes (out read, out write, err read, err write)."""
    out_r, out_w = make_pipe()
    try:
        err_r, err_w = make_pipe()
    except OSError:
        os.close(out_r)
        os.close(out_w)
        raise
    for fd in (out_r, out_w, err_r, err_w):
        os.set_inheritable(fd, False)
    return out_r, out_w, err_r, err_w


class Spares:
    """The pump's mover of every instance's spare pipes: an edge-triggered epoll of their
    read ends (a partial line left in one keeps it readable: a level-triggered watch would
    wake the loop for ever), which the loop watches (``fd``, ``ready``)."""

    def __init__(self) -> None:
        self.poll = select.epoll()
        self.fd = self.poll.fileno()
        self._by_fd: dict[int, tuple[Streams, int]] = {}
        self._scratch: tuple[int, int] | None = None  # where tee copies: read here at once
        self.retry_at: float | None = None  #: a move to try again (the slot's pipe was full)

    def add(self, streams: Streams) -> None:
        """Watch the spare pipes of ``streams``, and move what they hold already."""
        assert streams.spare is not None
        for index, fd in enumerate(streams.spare[0::2]):
            self._by_fd[fd] = (streams, index)
            self.poll.register(fd, select.EPOLLIN | select.EPOLLET)
        self.move(streams)

    def remove(self, streams: Streams) -> None:
        for fd in (streams.spare or ())[0::2]:
            if self._by_fd.pop(fd, None) is not None:
                self.poll.unregister(fd)

    def ready(self) -> None:
        """The loop's call: some spare pipe was written to."""
        for fd, _ in self.poll.poll(0):
            found = self._by_fd.get(fd)
            if found is not None:
                self._move(found[0], found[1], False)

    def due(self) -> None:
        """At ``retry_at``: every spare pipe moved again."""
        self.retry_at = None
        for streams, index in list(self._by_fd.values()):
            self._move(streams, index, False)

    def move(self, streams: Streams, final: bool = False) -> None:
        """Move the whole lines of both spare pipes of ``streams``; ``final`` (their writer
        died): the partial line too, with a newline."""
        for index in range(len(STREAMS)):
            self._move(streams, index, final)

    def _move(self, streams: Streams, index: int, final: bool) -> None:
        assert streams.spare is not None
        source, dest = streams.spare[2 * index], streams.writes[index]
        while True:
            data = self._peek(source)
            if not data:
                return
            cut = data.rfind(b"\n") + 1
            if not cut:
                cut = MAX_LINE if len(data) >= MAX_LINE else (len(data) if final else 0)
            if not cut:
                return  # a partial line: it waits for its newline
            fed = streams.spare_fed[index]
            if cut > fed and streams.seen is not None:
                streams.seen(STREAMS[index], data[fed:cut])
            moved = _splice(source, dest, cut)
            streams.spare_fed[index] = max(0, cut - moved)
            if moved < cut:  # the slot's pipe is full: its relay drains it meanwhile
                self.retry_at = time.monotonic() + RETRY
                return
            if final and cut == len(data) and not data.endswith(b"\n"):
                self._newline(dest)

    def _newline(self, dest: int) -> None:
        """The newline a dead writer's last partial line did not have: through the scratch
        pipe, as the slot's pipe blocks (it is its target's stdout)."""
        assert self._scratch is not None
        scratch_r, scratch_w = self._scratch
        os.write(scratch_w, b"\n")
        if not _splice(scratch_r, dest, 1):
            os.read(scratch_r, 1)  # the slot's pipe is full: the line is delivered as is

    def _peek(self, source: int) -> bytes:
        """What the pipe of ``source`` holds (up to the scratch pipe's size), left there."""
        if self._scratch is None:
            self._scratch = make_pipe()
        scratch_r, scratch_w = self._scratch
        count = _linux.tee(source, scratch_w, PIPE_SIZE)
        chunks = []
        while count > 0:
            chunk = os.read(scratch_r, count)
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self.poll.close()
        for fd in self._scratch or ():
            os.close(fd)
        self._scratch = None


def _splice(source: int, dest: int, count: int) -> int:
    """Move ``count`` bytes from the pipe of ``source`` to that of ``dest``: how many went
    (fewer when ``dest`` fills)."""
    moved = 0
    while moved < count:
        try:
            done = os.splice(source, dest, count - moved, flags=os.SPLICE_F_NONBLOCK)
        except BlockingIOError:
            break
        if done <= 0:
            break
        moved += done
    return moved
