"""The plugin host: the monitors of one pump (``Host``), checked by ``monitorload.py`` in
the caller, called one monitor at a time: pluggy would stop at the first exception, and
the policy for a raising monitor is ours (report it on the pump's stderr, rate-limited,
and go on); ``delivery.py`` does the calling, ``hookimpls.py`` finds each monitor's hooks.
"""

from __future__ import annotations

import functools
import mmap
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from . import delivery, monitorprocess, monitorthread, relay, suspects
from .channel import Sender
from .ledger import Ledger
from .hookimpls import EVENTS, HOOKS, implementations, takes
from .monitor import Monitor

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any

DISCARD_GRACE = 1.0  #: seconds a discarding monitor has to leave the block it is in
#: backpressure "drop": how long monitors may take to catch up at the end
MONITOR_GRACE = 1.0


class Host:
    """The monitors of one pump; each hook is called on each monitor in isolation, in the
    order the group names them.

    Output is delivered per monitor (``delivery.Sink``): each gets a line exactly once,
    across pumps, through the journal's ledger. With ``drop`` (backpressure "drop") each
    monitor has a thread and a bounded queue of its own (``monitorthread.Worker``), so that a
    slow or hanging monitor loses its own lines and delays neither the target nor the
    other monitors.
    """

    def __init__(self, monitors: Sequence[tuple[str, Any, Mapping[str, Any]]], name: str,
                 directory: Path, send: Callable[[Any], None] | None = None,
                 ledger: Ledger | Sequence[Ledger] | None = None,
                 drop: bool = False, program: str | None = None,
                 isolate: bool = False) -> None:
        # Without a journal (a host driven by hand), a private ledger of the same shape.
        # With several instances of the program (``workers``), one journal each: the
        # first one's ledger holds the monitors' counts.
        if isinstance(ledger, Ledger):
            ledger = [ledger]
        self.ledgers = list(ledger or [Ledger(mmap.mmap(-1, relay.SIZE))])
        self.ledger = self.ledgers[0]
        self.plugins: list[object] = []
        self.sinks: list[delivery.Sink] = []
        self.terminal = False  # some monitor shows the output on the terminal itself
        try:
            for slot, (monitor, factory, options) in enumerate(monitors):
                make = functools.partial(_plugin, factory, options, name, directory, program,
                                         os.getpid())
                sink: delivery.Sink | None = None
                if isolate and monitorprocess.wanted(factory):
                    sink = _remote(monitor, make, slot, self.ledger, self.ledgers, directory,
                                   send)
                if sink is not None:
                    self.terminal = self.terminal or sink.terminal  # type: ignore[attr-defined]
                else:
                    plugin = make(send)
                    self.terminal = self.terminal or bool(getattr(plugin, "terminal", False))
                    self.plugins.append(plugin)
                    sink = _sink(monitor, plugin, slot, self.ledger, self.ledgers)
                self.sinks.append(sink)
        except BaseException:
            self._close_remotes()
            raise
        self._count_workers()
        for marks in self.ledgers:  # a call pumps keep dying in: skipped, before settle
            suspects.suspect(self.sinks, marks)
        for sink in self.sinks:
            sink.settle()  # a call a dead pump was in: before setup, which writes
        self.workers = [monitorthread.Worker(sink, self.ledger) for sink in self.sinks] \
            if drop else None
        for worker in self.workers or ():
            worker.take_over()
        self._targets: list[Any] = self.workers or self.sinks

    def _count_workers(self) -> None:
        for plugin in self.plugins:
            if isinstance(plugin, Monitor):
                plugin.workers = len(self.ledgers)

    def add_ledger(self, ledger: Ledger, journal_fd: int | None = None) -> None:
        """One more instance of the program (a scale up), with its journal's ledger (and
        the journal, for the monitors in a process of their own)."""
        self.ledgers.append(ledger)  # the sinks share this list
        self._count_workers()
        for sink in self.sinks:
            if isinstance(sink, monitorprocess.Remote):
                assert journal_fd is not None
                sink.add_ledger(journal_fd)

    def drop_ledgers(self, count: int) -> None:
        """The instances from ``count`` on are gone (a scale down)."""
        del self.ledgers[count:]
        for sink in self.sinks:
            sink.forget(count)
        self._count_workers()

    def call(self, hook: str, strict: bool = False, **kwargs: Any) -> None:
        """Call ``hook`` on each monitor; with ``strict`` the first exception propagates,
        as ``MonitorFailed`` naming the monitor."""
        for target in self._targets:
            target.event(hook, kwargs, strict)

    def block(self, stream: str, data: bytes, offset: int, end: int | None = None,
              instance: int | None = None) -> None:
        """Output: whole lines of ``stream`` as one ``bytes`` ending in a newline, from
        stream offset ``offset`` to ``end`` (default ``offset + len(data)``; one less when
        the relay added the newline), of ``instance`` in a group of several (None in a
        group of one). Each monitor gets the lines past its own mark."""
        index = 0 if stream == "stdout" else 1
        if end is None:
            end = offset + len(data)
        for target, sink in zip(self._targets, self.sinks):
            if sink.takes[index]:
                target.output(index, data, offset, end, instance)

    def report_dropped(self, force: bool = False) -> bool:
        """Backpressure "drop": tell each monitor how many of its lines were dropped, at
        most once a second (``force``: now). True if some monitor was told."""
        told = False
        now = time.monotonic()
        for worker in self.workers or ():
            if worker.unreported and (force or now - worker.reported_at >= 1.0):
                count, worker.unreported = worker.unreported, 0
                worker.reported_at = now
                worker.event("dropped", {"count": count})
                told = True
        return told

    def next_report(self) -> float | None:
        """When ``report_dropped`` has lines to tell (``time.monotonic()``), or None."""
        times = [worker.reported_at + 1.0 for worker in self.workers or ()
                 if worker.unreported]
        return min(times) if times else None

    def catch_up(self, timeout: float) -> list[str]:
        """Backpressure "drop", before the last events: give every monitor up to ``timeout``
        to take the output queued for it; what a monitor has not taken by then is dropped
        (and counted), so that its last events reach it soon. The names of those monitors."""
        late = self.flush(timeout)
        for worker in self.workers or ():
            if worker.sink.name in late:
                worker.discard()
        if late:
            # A discarding monitor drops the rest of the block it is in too: wait for that,
            # so that the count of dropped lines is complete before it is reported.
            self.flush(DISCARD_GRACE)
        return late

    def flush(self, timeout: float) -> list[str]:
        """Backpressure "drop": wait up to ``timeout`` for every monitor's queue to empty;
        the names of the monitors still busy."""
        deadline = time.monotonic() + timeout
        return [worker.sink.name for worker in self.workers or ()
                if not worker.flush(deadline)]

    def close(self) -> None:
        """No more calls (a program removed, or its monitors replaced): the threads of
        backpressure "drop" end once they have taken what was queued."""
        for worker in self.workers or ():
            worker.stop()
        self._close_remotes()

    def _close_remotes(self) -> None:
        """The monitors' own processes end (``monitorprocess``)."""
        for sink in self.sinks:
            if isinstance(sink, monitorprocess.Remote):
                sink.close()

    def status(self) -> dict[str, Any]:
        """Per monitor, what ``status`` shows: lines dropped (across pumps)."""
        return {sink.name: {"dropped": self.ledger.dropped(sink.slot)} for sink in self.sinks}


def _plugin(factory: Any, options: Mapping[str, Any], name: str, directory: Path,
            program: str | None, pump: int, send: Callable[[Any], None] | None) -> object:
    """The monitor ``factory`` makes: a ``Monitor`` with its options, a class's instance,
    or the plugin itself (a module)."""
    if isinstance(factory, type) and issubclass(factory, Monitor):
        plugin: object = factory(options, name=name, directory=directory)
        plugin.program = program  # type: ignore[attr-defined]
        plugin.pump = pump  # type: ignore[attr-defined]
        if send is not None:
            plugin._send = send  # type: ignore[attr-defined]
        return plugin
    if isinstance(factory, type):
        return factory()
    return factory


def _remote(monitor: str, make: Callable[[Callable[[Any], None] | None], object], slot: int,
            ledger: Ledger, ledgers: list[Ledger], directory: Path,
            send: Callable[[Any], None] | None) -> delivery.Sink | None:
    """The monitor in a process of its own (``monitorprocess``: its call outlives a pump's
    death); None if that process cannot be forked (it runs in the pump then), or its
    ``send`` cannot go with it (one that is not the channel's ``Sender``)."""
    if send is not None and not isinstance(send, Sender):
        return None
    try:
        return monitorprocess.Remote(
            monitor, slot, ledger, ledgers,
            functools.partial(_built, monitor, make, slot, ledger),
            monitorprocess.lock_path(directory, slot),
            f"immortal: monitor {monitor} {directory}", send)
    except monitorprocess.CannotFork as exc:
        sys.stderr.write(f"immortal: pump: monitor {monitor!r}: no process of its own "
                         f"({exc}); it runs in the pump, at least once across its kills\n")
        return None


def _built(monitor: str, make: Callable[[Callable[[Any], None] | None], object], slot: int,
           ledger: Ledger, ledgers: list[Ledger], send: Callable[[Any], None] | None
           ) -> delivery.Sink:
    """In a monitor's own process (``monitorprocess``): the monitor made, and its sink."""
    plugin = make(send)
    if isinstance(plugin, Monitor):
        plugin.workers = len(ledgers)
    sink = _sink(monitor, plugin, slot, ledger, ledgers)
    sink.plugin = plugin  # type: ignore[attr-defined]
    sink.terminal = bool(getattr(plugin, "terminal", False))  # type: ignore[attr-defined]
    return sink


def _sink(monitor: str, plugin: object, slot: int, ledger: Ledger,
          ledgers: list[Ledger]) -> delivery.Sink:
    """How the host calls one monitor: its events, and output through the one hook it has
    of block, lines, stdout/stderr (a Monitor's counts only if overridden). A Monitor is
    told the instance of each call in its ``instance``; a plain plugin, as an argument its
    hooks may name."""
    hooks = implementations(plugin)
    found = {short: _with_names(*hooks[f"monitor_{short}"]) for short in HOOKS[1:]
             if f"monitor_{short}" in hooks}
    events = {short: found[short] for short in EVENTS if short in found}
    shared: dict[str, Any] = {"ledgers": ledgers}
    if isinstance(plugin, Monitor):
        cls = type(plugin)
        position, delivered = (getattr(plugin, name) if getattr(cls, name) is not
                               getattr(Monitor, name) else None
                               for name in ("position", "delivered"))
        doubt = (position, delivered)
        shared["tell"] = functools.partial(setattr, plugin, "instance")
        if cls.block is not Monitor.block:
            return delivery.Sink(monitor, slot, ledger, events, block=plugin.block, doubt=doubt,
                                 **shared)
        if cls.lines is not Monitor.lines:
            return delivery.Sink(monitor, slot, ledger, events, lines=plugin.lines, doubt=doubt,
                                 **shared)
        line = tuple(getattr(plugin, stream)
                     if getattr(cls, stream) is not getattr(Monitor, stream) else None
                     for stream in ("stdout", "stderr"))
        # An override may leave the offset out: called with the line alone then.
        offsets = tuple(takes(getattr(cls, stream), "offset")
                        for stream in ("stdout", "stderr"))
        return delivery.Sink(monitor, slot, ledger, events, line=line,  # type: ignore[arg-type]
                             offsets=offsets, doubt=doubt, **shared)  # type: ignore[arg-type]
    shared["with_instance"] = True
    doubt = (_positional(found["position"]) if "position" in found else None,
             _positional(found["delivered"], "stream", "lines", "offset", "position",
                         "instance") if "delivered" in found else None)
    if "block" in found:
        return delivery.Sink(monitor, slot, ledger, events, block=_positional(
            found["block"], "stream", "data", "offset", "instance"), doubt=doubt, **shared)
    if "lines" in found:
        return delivery.Sink(monitor, slot, ledger, events, lines=_positional(
            found["lines"], "stream", "lines", "offset", "instance"), doubt=doubt, **shared)
    return delivery.Sink(monitor, slot, ledger, events, line=tuple(  # type: ignore[arg-type]
        _positional(found[stream], "line", "offset", "instance") if stream in found else None
        for stream in ("stdout", "stderr")), doubt=doubt, **shared)


def _with_names(function: Callable[..., Any], argnames: tuple[str, ...]
                ) -> Callable[..., Any]:
    """``function`` called with keyword arguments, passing only those it names (as pluggy
    does: an implementation may take fewer arguments than the specification)."""
    def call(**kwargs: Any) -> Any:
        return function(*[kwargs[a] for a in argnames])

    call.argnames = argnames  # type: ignore[attr-defined]
    call.function = function  # type: ignore[attr-defined]
    return call


def _positional(call: Callable[..., Any], *names: str) -> Callable[..., Any]:
    """``call`` (from ``_with_names``) taking the arguments ``names`` by position.

    Output hooks run once per line or block: the implementation is called directly with
    the arguments it names, in its own order, not through a mapping of keywords."""
    argnames = getattr(call, "argnames", None)
    function = getattr(call, "function", None)
    if argnames is None or function is None or not set(argnames) <= set(names):
        return lambda *args: call(**dict(zip(names, args)))
    if argnames == names:
        return function  # type: ignore[no-any-return]
    if argnames == names[:len(argnames)]:
        count = len(argnames)
        return lambda *args: function(*args[:count])
    where = [names.index(name) for name in argnames]
    return lambda *args: function(*[args[index] for index in where])


MonitorFailed = delivery.Failed
