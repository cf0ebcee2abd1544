"""The plugin host: find a monitor by name, run its ``check``, and call it in the pump.

pluggy lives here and in ``hookspecs.py`` only. Only the monitor a group names is loaded,
so a broken third-party plugin cannot break the others. Hooks are called one monitor at a
time: pluggy would stop at the first exception, and the policy for a raising monitor is
ours (report it on the pump's stderr, rate-limited, and go on); ``delivery.py`` does the
calling.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import mmap
import time
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from . import delivery, entrypoints, hookspecs, relay
from .errors import MonitorError, MonitorNotFound, MonitorOptionsError, did_you_mean
from .monitor import Monitor, _takes

if TYPE_CHECKING:
    from importlib import metadata

DEFAULT = "file"
DISCARD_GRACE = 1.0  #: seconds a discarding monitor has to leave the block it is in
#: backpressure "drop": how long monitors may take to catch up at the end
MONITOR_GRACE = 1.0


class _Manager(pluggy.PluginManager):
    """Takes every ``monitor_*`` attribute as a hook implementation, marked or not."""

    def parse_hookimpl_opts(self, plugin: object, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("monitor_"):
            if callable(getattr(plugin, name, None)):
                return {}
        return opts


def _manager() -> _Manager:
    manager = _Manager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    return manager


def installed() -> dict[str, metadata.EntryPoint]:
    """The monitors installed under the entry point group, by name."""
    from importlib import metadata  # slow to import: only to list them all

    return {ep.name: ep for ep in metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP)}


def resolve(name: object) -> Any:
    """The monitor class or module that ``name`` designates, checked for shape."""
    if isinstance(name, type) and issubclass(name, Monitor):
        raise MonitorError(
            f"'monitor' must be a name, not a class ({name.__module__}:{name.__qualname__} "
            "given); pass monitor='package.module:Class' so the pump can import it")
    if not isinstance(name, str) or not name:
        raise MonitorError(f"'monitor' must be an installed monitor's name or "
                           f"'package.module:Class' (got {name!r})")
    if ":" in name:
        try:
            factory = _load(name)
        except Exception as exc:
            raise MonitorNotFound(f"monitor {name!r} cannot be imported: "
                                  f"{type(exc).__name__}: {exc}") from exc
    else:
        # The quick reader first; importlib.metadata (slow to import) only when it misses.
        value = entrypoints.find(hookspecs.ENTRY_POINT_GROUP, name)
        if value is None:
            available = installed()
            if name not in available:
                listed = ", ".join(sorted(available)) or "none"
                raise MonitorNotFound(
                    f"monitor {name!r} is not installed{did_you_mean(name, available)}; "
                    f"installed monitors: {listed}; or name one as 'package.module:Class'")
            value = available[name].value
        try:
            factory = _load(value)
        except Exception as exc:
            raise MonitorNotFound(
                f"monitor {name!r} (entry point {value!r}) cannot be "
                f"imported: {type(exc).__name__}: {exc}") from exc
    _check_shape(name, factory)
    return factory


def _load(reference: str) -> Any:
    """The object ``package.module:Attr.sub`` names (what ``EntryPoint.load`` does)."""
    module_name, _, attr = reference.partition(":")
    factory: Any = importlib.import_module(module_name.strip())
    for part in attr.strip().split(".") if attr.strip() else ():
        factory = getattr(factory, part)
    return factory


def _check_shape(name: str, factory: Any) -> None:
    if isinstance(factory, type) and issubclass(factory, Monitor):
        short = set(hookspecs.HOOKS) | {"output_path"}
        for attr, value in vars(factory).items():
            if attr.startswith("_") or attr in short or not callable(value):
                continue
            hook = _misspelt(attr, short)
            if hook:
                raise MonitorError(f"monitor {name!r} defines {attr!r}, which is no monitor "
                                   f"method (did you mean {hook!r}?); a helper of your own "
                                   f"can be named '_{attr}'")
        return
    if not any(attr.startswith("monitor_") for attr in dir(factory)):
        raise MonitorError(f"monitor {name!r} ({factory!r}) is not a monitor: subclass "
                           "immortal.Monitor or define monitor_* hooks")
    # A module or an object with monitor_* functions; a plain class is instantiated in the
    # pump, so a stand-in is checked here.
    manager = _manager()
    try:
        manager.register(_probe(factory) if isinstance(factory, type) else factory)
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        raise MonitorError(f"monitor {name!r} is not a valid monitor: {exc}") from exc


def _misspelt(word: str, hooks: set[str]) -> str | None:
    """The hook ``word`` is one slip away from, if any: a letter dropped, added, changed or
    swapped with its neighbour (``stdot``, ``spwan``, ``exitt``).

    Stricter than a "did you mean" cut-off on purpose: a helper method is refused for it,
    so names that only look alike (``open``, ``stop``, ``emit``, ``clock``), a hook's name
    shortened or lengthened (``line``, ``spawned``, ``setup_file``) and a changed first letter
    pass.
    """
    if len(word) < 4:
        return None
    for hook in sorted(hooks):
        if word[0] != hook[0] or abs(len(word) - len(hook)) > 1:
            continue
        longer, shorter = (word, hook) if len(word) > len(hook) else (hook, word)
        if longer.startswith(shorter):
            if longer[-1] == longer[-2]:
                return hook  # a doubled last letter: 'exitt'
            continue  # 'line', 'blocks', 'messages': names of their own
        if _one_edit(word, hook):
            return hook
    return None


def _one_edit(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` differ by one insertion, deletion, swap of adjacent letters
    or (in words of five letters or more) substitution."""
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diff) == 1:
            return len(a) >= 5  # 'emit' is a word of its own, not a slip for 'exit'
        return (len(diff) == 2 and diff[1] == diff[0] + 1
                and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    if len(a) > len(b):
        a, b = b, a
    return any(b[:i] + b[i + 1:] == a for i in range(len(b)))


def _probe(cls: type) -> object:
    """A stand-in with the class's functions, to validate hooks without instantiating."""
    probe = types.SimpleNamespace()
    for attr in dir(cls):
        if attr.startswith("monitor_"):
            function = getattr(cls, attr)
            if inspect.isfunction(function):
                setattr(probe, attr, types.MethodType(function, probe))
    return probe


def check(factory: Any, options: object, name: str | None = None) -> dict[str, Any]:
    """Run the monitor's check in the caller; its refusal becomes MonitorOptionsError, and
    a result that spec.json cannot hold (not a mapping, not JSON) a MonitorError naming the
    monitor (``name``) and the value."""
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise MonitorOptionsError(f"'options' must be a mapping (got "
                                  f"{type(options).__name__}: {options!r})")
    options = dict(options)
    checker = getattr(factory, "check", None) if isinstance(factory, type) and issubclass(
        factory, Monitor) else getattr(factory, "monitor_check", None)
    if checker is None:
        return options
    try:
        result = checker(options)
    except MonitorOptionsError:
        raise
    except Exception as exc:
        raise MonitorOptionsError(str(exc) or type(exc).__name__) from exc
    if result is None:
        return options
    who = f"monitor {name!r}" if name else f"monitor {factory!r}"
    if not isinstance(result, Mapping):
        raise MonitorError(f"{who}: check() must return a mapping of options or None "
                           f"(got {type(result).__name__}: {result!r})")
    result = dict(result)
    _check_json(who, result)
    return result


def _check_json(who: str, options: dict[str, Any]) -> None:
    """Refuse options that spec.json cannot hold, naming the first value that is not JSON."""
    import json

    for key, value in options.items():
        try:
            json.dumps({key: value})
        except (TypeError, ValueError) as exc:
            raise MonitorError(
                f"{who}: check() returned option {key!r} = {value!r}, which is not JSON "
                f"({exc}); return str, int, float, bool, None, lists and dicts "
                "(e.g. str(path) for a path)") from None


def output_path(factory: Any, options: Mapping[str, Any], directory: Path) -> str | None:
    if isinstance(factory, type) and issubclass(factory, Monitor):
        return factory.output_path(options, directory)
    return None


def resolve_all(monitors: object) -> list[tuple[str, Any]]:
    """``[(name, factory)]`` for a name, or for a mapping of names to options."""
    if isinstance(monitors, Mapping):
        if not monitors:
            raise MonitorError("'monitors' names no monitor; give at least one, e.g. "
                               "{'file': {}}")
        return [(str(name), resolve(name)) for name in monitors]
    return [(str(monitors), resolve(monitors))]


class Host:
    """The monitors of one pump; each hook is called on each monitor in isolation, in the
    order the group names them.

    Output is delivered per monitor (``delivery.Sink``): each gets a line exactly once,
    across pumps, through the journal's ledger. With ``drop`` (backpressure "drop") each
    monitor has a thread and a bounded queue of its own (``delivery.Worker``), so that a
    slow or hanging monitor loses its own lines and delays neither the target nor the
    other monitors.
    """

    def __init__(self, monitors: Sequence[tuple[str, Any, Mapping[str, Any]]], name: str,
                 directory: Path, send: Callable[[Any], None] | None = None,
                 ledger: relay.Ledger | Sequence[relay.Ledger] | None = None,
                 drop: bool = False, program: str | None = None) -> None:
        manager = _manager()
        plugins: list[tuple[str, object]] = []
        self.terminal = False  # some monitor shows the output on the terminal itself
        for monitor, factory, options in monitors:
            if isinstance(factory, type) and issubclass(factory, Monitor):
                plugin: object = factory(options, name=name, directory=directory)
                plugin.program = program  # type: ignore[attr-defined]
                if send is not None:
                    plugin._send = send  # type: ignore[attr-defined]
            elif isinstance(factory, type):
                plugin = factory()
            else:
                plugin = factory
            self.terminal = self.terminal or bool(getattr(plugin, "terminal", False))
            manager.register(plugin, name=f"{monitor}#{len(plugins)}")
            plugins.append((monitor, plugin))
        manager.check_pending()
        # Without a journal (a host driven by hand), a private ledger of the same shape.
        # With several instances of the program (``workers``), one journal each: the
        # first one's ledger holds the monitors' counts.
        if isinstance(ledger, relay.Ledger):
            ledger = [ledger]
        self.ledgers = list(ledger or [relay.Ledger(mmap.mmap(-1, relay.SIZE))])
        self.ledger = self.ledgers[0]
        self.plugins = [plugin for _, plugin in plugins]
        self._count_workers()
        self.sinks = [_sink(manager, monitor, plugin, slot, self.ledger, self.ledgers)
                      for slot, (monitor, plugin) in enumerate(plugins)]
        for sink in self.sinks:
            sink.settle()  # a call a dead pump was in: before setup, which writes
        self.workers = [delivery.Worker(sink, self.ledger) for sink in self.sinks] \
            if drop else None
        for worker in self.workers or ():
            worker.take_over()
        self._targets: list[Any] = self.workers or self.sinks

    def _count_workers(self) -> None:
        for plugin in self.plugins:
            if isinstance(plugin, Monitor):
                plugin.workers = len(self.ledgers)

    def add_ledger(self, ledger: relay.Ledger) -> None:
        """One more instance of the program (a scale up), with its journal's ledger."""
        self.ledgers.append(ledger)  # the sinks share this list
        self._count_workers()

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

    def status(self) -> dict[str, Any]:
        """Per monitor, what ``status`` shows: lines dropped (across pumps)."""
        return {sink.name: {"dropped": self.ledger.dropped(sink.slot)} for sink in self.sinks}


def _sink(manager: _Manager, monitor: str, plugin: object, slot: int,
          ledger: relay.Ledger, ledgers: list[relay.Ledger]) -> delivery.Sink:
    """How the host calls one monitor: its events, and output through the one hook it has
    of block, lines, stdout/stderr (a Monitor's counts only if overridden). A Monitor is
    told the instance of each call in its ``instance``; a plain plugin, as an argument its
    hooks may name."""
    hook = manager.hook
    found: dict[str, Callable[..., Any]] = {}
    for short in hookspecs.HOOKS[1:]:
        for impl in getattr(hook, f"monitor_{short}").get_hookimpls():
            if impl.plugin is plugin:
                found[short] = _with_names(impl.function, tuple(impl.argnames))
    events = {short: found[short] for short in hookspecs.EVENTS if short in found}
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
        offsets = tuple(_takes(getattr(cls, stream), "offset")
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
