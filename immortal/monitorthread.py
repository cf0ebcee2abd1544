"""Backpressure "drop": a monitor behind a thread of its own and a queue bounded in bytes
of output.

The pump only queues, so the target never waits on a monitor, even one that hangs; a full
queue drops that monitor's lines, counted in its own ledger slot. Events are never dropped.
"""

from __future__ import annotations

import collections
import threading
import time

from .delivery import Failed, Sink
from .ledger import Ledger
from .relay import PIPE_SIZE

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any

#: a monitor's lines are dropped while this much output waits for it, as much as the pipe
#: would hold for a target nobody reads
QUEUE_BYTES = PIPE_SIZE
_OUTPUT = 5  # the length of an output item in a Worker's queue (an event's is 3)


class Worker:
    """A sink behind its own thread and a queue bounded in bytes (backpressure "drop")."""

    def __init__(self, sink: Sink, ledger: Ledger, limit: int = QUEUE_BYTES) -> None:
        self.sink = sink
        sink.counts = True
        sink.abandon = threading.Event()
        sink.lost = self._lost
        self._ledger = ledger
        self._limit = limit
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self._bytes = 0  # output bytes queued
        self._ready = threading.Condition(threading.Lock())
        self.unreported = 0  # lines dropped since the last dropped() call was queued
        self.reported_at = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"monitor {sink.name}")
        self._thread.start()

    def output(self, stream: int, data: bytes, offset: int, end: int,
               instance: int | None = None) -> None:
        with self._ready:
            if self._bytes and self._bytes + len(data) > self._limit:
                count = data.count(b"\n")
                self.unreported += count
                self._ledger.add_dropped(self.sink.slot, count)
                return
            self._bytes += len(data)
            self._queue.append((stream, data, offset, end, instance))
            self._ready.notify()
        self._ledger.add_queued(self.sink.slot, data.count(b"\n"))

    def event(self, hook: str, kwargs: dict[str, Any], strict: bool = False) -> None:
        """Queue an event (never dropped); a strict one is waited for, and raises."""
        done: list[BaseException | None] | None = [] if strict else None
        with self._ready:
            self._queue.append((hook, kwargs, done))
            self._ready.notify()
            if done is not None:
                while not done:
                    self._ready.wait()
        if done and done[0] is not None:
            raise done[0]

    def flush(self, deadline: float) -> bool:
        """Wait until the queue is empty or ``time.monotonic()`` passes ``deadline``."""
        with self._ready:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._ready.wait(left)
        return True

    def discard(self) -> None:
        """Drop the output still queued (counted as dropped), and the rest of the block
        being delivered; events stay queued."""
        assert self.sink.abandon is not None
        self.sink.abandon.set()
        with self._ready:
            kept: collections.deque[tuple[Any, ...]] = collections.deque()
            count = 0
            for item in self._queue:
                if len(item) == _OUTPUT:
                    count += item[1].count(b"\n")
                else:
                    kept.append(item)
            self._queue = kept
            self._bytes = 0
        self._lost(count)

    def stop(self) -> None:
        """No more calls: the thread ends once it has taken what was queued."""
        with self._ready:
            self._queue.append(())
            self._ready.notify()

    def take_over(self) -> None:
        """A new pump: what the last one had queued for this monitor and the monitor had
        not taken died with it; count it as dropped, and tell the monitor."""
        slot = self.sink.slot
        self._lost(self._ledger.queued(slot) - self._ledger.taken(slot))

    def _lost(self, count: int) -> None:
        if count > 0:
            with self._ready:  # the monitor's thread counts here too (Sink.lost)
                self.unreported += count
                self._ledger.add_dropped(self.sink.slot, count)
                self._ledger.add_queued(self.sink.slot, -count)

    _busy = False

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue:
                    self._busy = False
                    self._ready.notify_all()  # flush() waits for an empty queue
                    self._ready.wait()
                item = self._queue.popleft()
                if not item:  # stop()
                    self._busy = False
                    self._ready.notify_all()
                    return
                self._busy = True
                if len(item) == _OUTPUT:
                    self._bytes -= len(item[1])
            if len(item) == _OUTPUT:
                self.sink.output(*item)
                continue
            hook, kwargs, done = item
            error: BaseException | None = None
            try:
                self.sink.event(hook, kwargs, strict=done is not None)
            except Failed as exc:
                error = exc
            if done is not None:
                with self._ready:
                    done.append(error)
                    self._ready.notify_all()
