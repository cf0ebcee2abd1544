"""The role loop (``immortal.loop``) with a fake clock and a fake selector: no process, no
sleeping. The fake selector records each timeout it is given, lets the fake time pass by
that timeout, and reports the registered fds that are readable at that moment (real pipes)."""

from __future__ import annotations

import os
import select
import selectors
import signal

import pytest

from immortal.loop import Loop


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeSelector(selectors.BaseSelector):
    """Waits for nothing: a timeout is recorded and the clock moved on by it."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.keys: dict[int, selectors.SelectorKey] = {}
        self.timeouts: list[float | None] = []
        self.closed = False

    def register(self, fileobj, events, data=None):
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = self.keys[fd] = selectors.SelectorKey(fileobj, fd, events, data)
        return key

    def unregister(self, fileobj):
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        return self.keys.pop(fd)

    def select(self, timeout=None):
        self.timeouts.append(timeout)
        if timeout is not None:
            self.clock.now += timeout
        readable, _, _ = select.select(list(self.keys), [], [], 0)
        return [(self.keys[fd], selectors.EVENT_READ) for fd in readable]

    def get_map(self):
        return dict(self.keys)

    def close(self):
        self.closed = True


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def loop(clock):
    made = Loop(FakeSelector(clock), clock)
    yield made
    made.close()


@pytest.fixture
def pipe():
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


class Timer:
    """A deadline provider that forgets its time once called, as the roles' do."""

    def __init__(self, at: float | None) -> None:
        self.at = at
        self.fired: list[float] = []

    def __call__(self) -> float | None:
        return self.at

    def due(self, clock: Clock) -> None:
        self.fired.append(clock.now)
        self.at = None


def test_an_idle_loop_waits_with_no_timeout(loop):
    loop.at(lambda: None, lambda: pytest.fail("nothing is due"))
    loop.turn()
    loop.turn()
    assert loop.selector.timeouts == [None, None]


def test_a_deadline_is_the_timeout_and_fires_once(loop, clock):
    timer = Timer(clock.now + 6.0)
    loop.at(timer, lambda: timer.due(clock))
    loop.turn()
    assert loop.selector.timeouts == [6.0]
    assert timer.fired == [106.0]
    loop.turn()  # forgotten once fired: idle again
    assert loop.selector.timeouts == [6.0, None]
    assert timer.fired == [106.0]


def test_a_deadline_not_yet_come_does_not_fire(loop, clock):
    calls = []
    loop.at(lambda: clock.now + 1.0, lambda: calls.append(clock.now))  # always ahead
    loop.turn()
    assert loop.selector.timeouts == [1.0]
    assert calls == []


def test_a_past_deadline_waits_not_at_all(loop, clock):
    timer = Timer(clock.now - 5.0)
    loop.at(timer, lambda: timer.due(clock))
    loop.turn()
    assert loop.selector.timeouts == [0.0]
    assert timer.fired == [100.0]


def test_the_earliest_of_several_deadlines_wins_and_the_due_fire_in_order(loop, clock):
    order = []
    timers = [Timer(130.0), Timer(112.0), Timer(None), Timer(112.0), Timer(120.0)]
    for number, timer in enumerate(timers):
        loop.at(timer, lambda n=number, t=timer: (order.append(n), t.due(clock)))
    loop.turn()
    assert loop.selector.timeouts == [12.0]
    assert order == [1, 3]
    loop.turn()
    assert loop.selector.timeouts == [12.0, 8.0]
    assert order == [1, 3, 4]


def test_a_ready_fd_calls_its_callback_with_its_file_object(loop, pipe):
    seen = []
    loop.watch(pipe[0], lambda fd: seen.append(os.read(fd, 10)))
    loop.turn()
    assert seen == []
    os.write(pipe[1], b"x")
    loop.turn()
    assert seen == [b"x"]
    assert loop.selector.timeouts == [None, None]


def test_stop_leaves_the_rest_of_the_batch_but_not_the_due_deadlines(loop, clock):
    calls = []
    pipes = [os.pipe(), os.pipe()]
    try:
        for r, w in pipes:
            os.write(w, b"x")
            loop.watch(r, lambda fd: (calls.append(fd), loop.stop()))
        timer = Timer(clock.now)
        loop.at(timer, lambda: (calls.append("deadline"), timer.due(clock)))
        loop.run()  # one turn: the first fd stops it
        assert len(calls) == 2 and calls[1] == "deadline"
        assert loop.selector.timeouts == [0.0]
    finally:
        for fd in (*pipes[0], *pipes[1]):
            os.close(fd)


def test_a_watch_changed_by_an_earlier_callback_of_the_turn_is_taken_as_it_is_now(loop):
    """Two fds ready in one turn; the first's callback removes one watch and gives the
    other fd a new callback (as a roll's replacement becomes its slot's target): the
    removed one is not called, and the other is called with its new callback, never its
    old one (which reaped a process no longer its own)."""
    pipes = [os.pipe(), os.pipe(), os.pipe()]
    calls = []
    try:
        for _, w in pipes:
            os.write(w, b"x")
        first, second, third = (r for r, _ in pipes)

        def changes(fd):
            calls.append(("first", fd))
            loop.selector.unregister(third)
            loop.selector.unregister(second)
            loop.watch(second, lambda fd: calls.append(("new", fd)))

        loop.watch(first, changes)
        loop.watch(second, lambda fd: calls.append(("old", fd)))
        loop.watch(third, lambda fd: calls.append(("removed", fd)))
        loop.turn()
        assert calls == [("first", first), ("new", second)]
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)


def test_run_turns_until_stopped(loop, clock):
    ticks = []
    timer = Timer(clock.now + 1.0)

    def tick():
        ticks.append(clock.now)
        timer.at = clock.now + 2.0
        if len(ticks) == 3:
            loop.stop()

    loop.at(timer, tick)
    loop.run()
    assert ticks == [101.0, 103.0, 105.0]
    assert loop.selector.timeouts == [1.0, 2.0, 2.0]


@pytest.fixture
def restore_signals():
    numbers = (signal.SIGUSR1, signal.SIGUSR2)
    handlers = {number: signal.getsignal(number) for number in numbers}
    old = signal.set_wakeup_fd(-1)
    try:
        yield
    finally:
        signal.set_wakeup_fd(old)
        for number, handler in handlers.items():
            signal.signal(number, handler)


def test_signals_reach_their_callbacks_through_the_wake_up_fd(clock, restore_signals):
    loop = Loop(FakeSelector(clock), clock)
    got = []
    try:
        loop.take_signals({signal.SIGUSR1: lambda: got.append("usr1"),
                           signal.SIGUSR2: lambda: got.append("usr2")})
        os.kill(os.getpid(), signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR2)
        assert got == []  # the handlers only wake the loop
        loop.turn()
        assert got == ["usr2", "usr1", "usr2"]
        assert loop.selector.timeouts == [None]
    finally:
        loop.close()
    assert loop.selector.closed
    assert signal.set_wakeup_fd(-1) == -1  # closed: no longer the wake-up fd
