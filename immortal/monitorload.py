"""The monitors checked in the caller, before anything detaches: a monitor by name (found
by ``monitorfind.py``), its shape against the hook specifications, and its
``check(options)``; ``monitoring.py`` hosts them in the pump.

pluggy lives here and in ``hookspecs.py`` only, on the caller's side: the roles call the
monitors this checked without it (``hookimpls.py``). Only the monitor a group names is
loaded, so a broken third-party plugin cannot break the others.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any

import pluggy

from . import hookspecs
from .errors import MONITOR_ERRORS, MonitorError, MonitorOptionsError
from .hookimpls import HOOKS
from .monitor import Monitor
from .monitorfind import find, installed

__all__ = ["DEFAULT", "check", "installed", "resolve", "resolve_all"]

DEFAULT = "file"


class MonitorManager(pluggy.PluginManager):
    """Takes every ``monitor_*`` attribute as a hook implementation, marked or not, as
    ``hookimpls.implementations`` does in the pump; never a dunder."""

    def parse_hookimpl_opts(self, plugin: object, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            return None
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("monitor_"):
            if callable(getattr(plugin, name, None)):
                return {}
        return opts


def plugin_manager() -> MonitorManager:
    """A plugin manager with the monitor hooks' specifications (``hookspecs.py``)."""
    manager = MonitorManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    return manager


def resolve(name: object) -> Any:
    """The monitor class or module that ``name`` designates, checked for shape."""
    if isinstance(name, type) and issubclass(name, Monitor):
        raise MonitorError(
            f"'monitor' must be a name, not a class ({name.__module__}:{name.__qualname__} "
            "given); pass monitor='package.module:Class' so the pump can import it")
    if not isinstance(name, str) or not name:
        raise MonitorError(f"'monitor' must be an installed monitor's name or "
                           f"'package.module:Class' (got {name!r})")
    factory = find(name)
    _check_shape(name, factory)
    return factory


def _check_shape(name: str, factory: Any) -> None:
    if isinstance(factory, type) and issubclass(factory, Monitor):
        short = set(HOOKS) | {"output_path"}
        for attr, value in vars(factory).items():
            if attr.startswith("_") or attr in short or not callable(value):
                continue
            hook = _misspelt(attr, short)
            if hook:
                raise MonitorError(f"monitor {name!r} defines {attr!r}, which is no monitor "
                                   f"method (did you mean {hook!r}?); a helper of your own "
                                   f"can be named '_{attr}'")
        for hook in HOOKS:
            _check_arguments(name, hook, vars(factory).get(hook))
    elif not any(attr.startswith("monitor_") for attr in dir(factory)):
        raise MonitorError(f"monitor {name!r} ({factory!r}) is not a monitor: subclass "
                           "immortal.Monitor or define monitor_* hooks")
    # Against the specifications: the pump calls what it finds without checking. A class
    # is instantiated in the pump, so a stand-in is checked here.
    manager = plugin_manager()
    try:
        manager.register(_probe(factory) if isinstance(factory, type) else factory)
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        raise MonitorError(f"monitor {name!r} is not a valid monitor: {exc}") from exc


def _check_arguments(name: str, hook: str, method: object) -> None:
    """An override of ``hook`` must take what the pump passes it: no more arguments
    without a default than the ``Monitor`` method has (else every call would fail in the
    pump, said in its log alone)."""
    code = getattr(method, "__code__", None)
    if code is None or hook == "check":  # not a plain function; check() is a classmethod
        return
    base = getattr(Monitor, hook).__code__
    defaults = len(getattr(method, "__defaults__", None) or ())
    required = code.co_argcount - 1 - defaults  # after self
    keywords = code.co_kwonlyargcount - len(getattr(method, "__kwdefaults__", None) or {})
    if required > base.co_argcount - 1 or keywords:
        takes = ", ".join(base.co_varnames[1:base.co_argcount])
        raise MonitorError(f"monitor {name!r}: {hook}() needs arguments the pump does not "
                           f"pass ({', '.join(code.co_varnames[1:code.co_argcount])}); it "
                           f"is called with ({takes}) at most")


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
            if isinstance(function, types.FunctionType):
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
    if isinstance(factory, type) and _plain_method(factory, "check"):
        raise MonitorError(f"monitor {name or factory.__name__!r}: check() must be a "
                           "classmethod (@classmethod def check(cls, options)): it runs in "
                           "the caller, before any monitor is made")
    try:
        result = checker(options)
    except MonitorOptionsError:
        raise
    except MONITOR_ERRORS as exc:
        said = f"check() called sys.exit({exc.code!r})" if isinstance(exc, SystemExit) \
            else str(exc) or type(exc).__name__
        raise MonitorOptionsError(said) from exc
    if result is None:
        return options
    who = f"monitor {name!r}" if name else f"monitor {factory!r}"
    if not isinstance(result, Mapping):
        raise MonitorError(f"{who}: check() must return a mapping of options or None "
                           f"(got {type(result).__name__}: {result!r})")
    result = dict(result)
    _check_json(who, result)
    return result


def _plain_method(cls: type, attribute: str) -> bool:
    """Whether ``cls`` defines ``attribute`` as a plain function (an instance method), as
    the class's own dictionaries hold it, not as a classmethod or staticmethod."""
    for klass in cls.__mro__:
        if attribute in vars(klass):
            return isinstance(vars(klass)[attribute], types.FunctionType)
    return False


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


def resolve_all(monitors: object) -> list[tuple[str, Any]]:
    """``[(name, factory)]`` for a name, or for a mapping of names to options."""
    if isinstance(monitors, Mapping):
        if not monitors:
            raise MonitorError("'monitors' names no monitor; give at least one, e.g. "
                               "{'file': {}}")
        return [(str(name), resolve(name)) for name in monitors]
    return [(str(monitors), resolve(monitors))]
