"""A role's loop: ready fds, deadlines and signals, in one thread, with no timer.

The daemon and the pump each block in one selector. They wake up for a readable fd (its
callback gets the file object), for a signal (its handler does nothing: the wake-up fd
carries the number to the loop, which calls that signal's callback), or at the earliest of
their deadlines. A deadline is a provider, a callable returning a ``clock()`` time or None,
asked afresh at each turn, so nothing is armed or cancelled; while every provider says None
the loop blocks with no timeout at all: an idle role never wakes up.

One turn: wait until the earliest deadline; call the callbacks of the ready fds in the
order the selector gives them, leaving the rest once one of them has stopped the loop; then
call the callback of each deadline that is due, in the order they were added.
"""

from __future__ import annotations

import os
import selectors
import signal
import time
from collections.abc import Callable, Mapping

from . import plainsignals

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any

Clock = Callable[[], float]
Provider = Callable[[], "float | None"]


def draw() -> float:
    """A number in [0, 1), as ``random.random()`` gives, for the machine's jitter: drawn
    from ``os.urandom`` because the ``random`` module would cost every pump its pages and
    two extension modules for one number per restart (bench/notes.md)."""
    return int.from_bytes(os.urandom(7), "big") / (1 << 56)


class Loop:
    """``selector`` is the role's: other parts (the control server) register on it too,
    with a callable as the key's data, which the loop calls with the file object."""

    def __init__(self, selector: selectors.BaseSelector, clock: Clock = time.monotonic) -> None:
        self.selector = selector
        self.clock = clock
        self.stopped = False
        self._deadlines: list[tuple[Provider, Callable[[], None]]] = []
        self._signals: dict[int, Callable[[], None]] = {}
        self._wake: tuple[int, int] | None = None

    def watch(self, fileobj: Any, callback: Callable[[Any], None]) -> None:
        """Call ``callback(fileobj)`` whenever ``fileobj`` is readable."""
        self.selector.register(fileobj, selectors.EVENT_READ, callback)

    def at(self, provider: Provider, callback: Callable[[], None]) -> None:
        """Call ``callback()`` in a turn where ``provider()`` is a time that has come."""
        self._deadlines.append((provider, callback))

    def take_signals(self, callbacks: Mapping[int, Callable[[], None]]) -> None:
        """Take these signals: each arrival calls its callback from the loop, in the order
        they came. Until the loop runs they wait in the wake-up pipe."""
        if self._wake is None:
            wake_r, wake_w = self._wake = os.pipe()
            os.set_blocking(wake_r, False)
            os.set_blocking(wake_w, False)
            signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
            self.watch(wake_r, self._on_wake)
        self._signals.update(callbacks)
        for number in callbacks:
            plainsignals.handle(number, _ignore)

    def stop(self) -> None:
        """End ``run`` after this turn (its due deadlines are still called)."""
        self.stopped = True

    def timeout(self) -> float | None:
        """How long the next wait may last: until the earliest deadline, or for ever."""
        times = [when for when in (provider() for provider, _ in self._deadlines)
                 if when is not None]
        return max(0.0, min(times) - self.clock()) if times else None

    def turn(self) -> None:
        for key, _ in self.selector.select(self.timeout()):
            # The watch as it is now, not as the select saw it: a callback earlier in this
            # turn may have removed it, or handed its fd to another (a roll's replacement
            # becoming its slot's target: its death is the slot's to handle then).
            try:
                current = self.selector.get_map()[key.fileobj]
            except (KeyError, ValueError):  # removed; or a file object closed since
                current = None
            if current is not None:
                current.data(current.fileobj)
            if self.stopped:
                break
        now = self.clock()
        for provider, callback in self._deadlines:
            when = provider()
            if when is not None and now >= when:
                callback()

    def run(self) -> None:
        while not self.stopped:
            self.turn()

    def close(self) -> None:
        """Close the selector and the wake-up pipe; signals no longer reach the loop."""
        if self._wake is not None:
            signal.set_wakeup_fd(-1)
        self.selector.close()
        for fd in self._wake or ():
            os.close(fd)
        self._wake = None

    def _on_wake(self, fd: int) -> None:
        try:
            data = os.read(fd, 512)
        except BlockingIOError:
            return
        for number in data:
            callback = self._signals.get(number)
            if callback is not None:
                callback()


def _ignore(number: int, frame: object) -> None:
    """The handler of the signals a loop takes: the wake-up fd carries them to it."""
