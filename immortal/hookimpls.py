"""The monitor hooks' names, and the hooks one monitor implements, found without pluggy.

The pump calls each monitor's functions itself, one monitor at a time
(``monitoring.py``): it needs only which ``monitor_*`` functions a monitor has and which
arguments each names. pluggy, which the caller uses to check a monitor against the
specifications before anything detaches (``monitorload.py``), imports ``inspect`` and
``typing`` and their own imports: loaded into the roles only for this, they made the
largest part of a group's memory that does nothing (docs/benchmarks.md, "Memory of 50
instances"). The rules here are pluggy's, so that what the caller checked is what the pump
calls; tests/test_monitors.py holds the two side by side.
"""

from __future__ import annotations

import functools

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

PROJECT = "immortal"
ENTRY_POINT_GROUP = "immortal.monitors"

#: the short names of the hooks (``monitor_`` + name), ``check`` first: the caller's own
HOOKS = ("check", "setup", "spawn", "adopt", "respawn", "exit", "stdout", "stderr", "lines",
         "block", "position", "delivered", "dropped", "message", "reopen", "shutdown")
#: the hooks that are events, not output
EVENTS = ("setup", "spawn", "adopt", "respawn", "exit", "dropped", "message", "reopen",
          "shutdown")

_MARK = f"{PROJECT}_impl"  #: the attribute pluggy's ``HookimplMarker`` sets on a function
_IMPLICIT = ("self", "cls")
_VARARGS = 0x04  # CO_VARARGS


def implementations(plugin: object) -> dict[str, tuple[Callable[..., Any], tuple[str, ...]]]:
    """``{hook name: (function, the arguments it takes)}`` for every hook ``plugin``
    implements: each ``monitor_*`` attribute that can be called, marked or not, and each
    function marked with ``@immortal.hookimpl`` (under its ``specname`` if it gives one);
    never a dunder. The arguments are those without a default, as pluggy passes them. No
    other attribute is evaluated (a property runs no code here), as pluggy does."""
    found: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {}
    for name in dir(plugin):
        if name.startswith("__") and name.endswith("__"):
            continue
        opts = _marked(_static(plugin, name))
        if opts is None:
            if not name.startswith("monitor_"):
                continue
            opts = {}
        try:
            value = getattr(plugin, name)
        except Exception:  # noqa: BLE001 - a property that raises is no hook
            continue
        if callable(value):
            found[opts.get("specname") or name] = (value, argnames(value))
    return found


def _static(plugin: object, name: str) -> object:
    """``plugin``'s attribute ``name`` as stored, no descriptor run (``getattr_static``)."""
    if isinstance(plugin, type):
        holders = [klass.__dict__ for klass in plugin.__mro__]
    else:
        try:
            own = object.__getattribute__(plugin, "__dict__")
        except AttributeError:
            own = {}
        holders = [own, *(klass.__dict__ for klass in type(plugin).__mro__)]
    for holder in holders:
        if name in holder:
            return holder[name]
    return None


def _marked(static: object) -> dict[str, Any] | None:
    """The options ``@immortal.hookimpl`` gave ``static`` (or the function it wraps)."""
    opts = getattr(static, _MARK, None)
    if opts is None:
        opts = getattr(getattr(static, "__func__", None), _MARK, None)
    return opts if isinstance(opts, dict) else None


def argnames(function: Callable[..., Any]) -> tuple[str, ...]:
    """The positional arguments ``function`` takes without a default, its implicit first
    one (a bound method's) left out: pluggy's ``varnames``."""
    bound = False
    if isinstance(function, type):
        function = function.__init__  # type: ignore[misc]
        bound = True
    elif not _routine(function):
        function = getattr(function, "__call__", function)  # noqa: B004 - the attribute
    if hasattr(function, "__self__") and hasattr(function, "__func__"):
        bound = True
    function = _unwrap(function)
    if hasattr(function, "__self__") and hasattr(function, "__func__"):
        bound = True
        function = function.__func__  # type: ignore[attr-defined]
    try:
        code = function.__code__  # type: ignore[attr-defined]
        defaults = function.__defaults__  # type: ignore[attr-defined]
        qualname = function.__qualname__  # type: ignore[attr-defined]
    except AttributeError:
        return ()
    args = code.co_varnames[:code.co_argcount]
    if defaults:
        args = args[:-len(defaults)]
    if args and (bound or ("." in qualname and args[0] in _IMPLICIT)):
        args = args[1:]
    return tuple(args)


@functools.lru_cache(maxsize=None)
def takes(method: Callable[..., Any], name: str) -> bool:
    """Whether ``method`` accepts the argument ``name`` (by name, or through ``*args``):
    an override may have been written before the argument was added."""
    function = _unwrap(getattr(method, "__func__", method))
    code = getattr(function, "__code__", None)
    if code is None:  # a builtin or a callable object: inspect reads what it can
        import inspect

        try:
            parameters = inspect.signature(method).parameters
        except (TypeError, ValueError):
            return False
        return name in parameters or any(p.kind == p.VAR_POSITIONAL
                                         for p in parameters.values())
    named = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
    return name in named or bool(code.co_flags & _VARARGS)


def _routine(value: object) -> bool:
    """A function, method or builtin (``inspect.isroutine``)."""
    return hasattr(value, "__code__") or hasattr(value, "__func__") \
        or type(value).__name__ in ("builtin_function_or_method", "method_descriptor",
                                    "wrapper_descriptor", "method-wrapper")


def _unwrap(function: Any) -> Any:
    """``function`` behind its decorators' ``__wrapped__`` (``inspect.unwrap``)."""
    seen = {id(function)}
    while hasattr(function, "__wrapped__"):
        function = function.__wrapped__
        if id(function) in seen:
            break
        seen.add(id(function))
    return function
