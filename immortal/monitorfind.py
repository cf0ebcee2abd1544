"""A monitor found by name: an installed entry point, or ``package.module:Class``.

Without pluggy, so that the pump can load the monitors its caller checked
(``monitorload.py`` checks them, with pluggy, before anything detaches; see
``hookimpls.py`` for why the roles do without it).
"""

from __future__ import annotations

import importlib

from . import entrypoints
from .errors import MonitorNotFound, did_you_mean
from .hookimpls import ENTRY_POINT_GROUP

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from importlib import metadata
    from typing import Any


def installed() -> dict[str, metadata.EntryPoint]:
    """The monitors installed under the entry point group, by name."""
    from importlib import metadata  # slow to import: only to list them all

    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def find(name: str) -> Any:
    """The monitor class or module that ``name`` (a monitor's name, or
    ``package.module:Attr``) designates, imported; MonitorNotFound if none."""
    if ":" in name:
        try:
            return load(name)
        except Exception as exc:
            where = ("; it is imported from the caller's sys.path: run from the directory "
                     "that holds its package, or add that directory to PYTHONPATH"
                     if isinstance(exc, ModuleNotFoundError) else "")
            raise MonitorNotFound(f"monitor {name!r} cannot be imported: "
                                  f"{type(exc).__name__}: {exc}{where}") from exc
    # The quick reader first; importlib.metadata (slow to import) only when it misses.
    value = entrypoints.find(ENTRY_POINT_GROUP, name)
    if value is None:
        available = installed()
        if name not in available:
            listed = ", ".join(sorted(available)) or "none"
            raise MonitorNotFound(
                f"monitor {name!r} is not installed{did_you_mean(name, available)}; "
                f"installed monitors: {listed}; or name one as 'package.module:Class'")
        value = available[name].value
    try:
        return load(value)
    except Exception as exc:
        raise MonitorNotFound(
            f"monitor {name!r} (entry point {value!r}) cannot be "
            f"imported: {type(exc).__name__}: {exc}") from exc


def load(reference: str) -> Any:
    """The object ``package.module:Attr.sub`` names (what ``EntryPoint.load`` does)."""
    module_name, _, attr = reference.partition(":")
    factory: Any = importlib.import_module(module_name.strip())
    for part in attr.strip().split(".") if attr.strip() else ():
        factory = getattr(factory, part)
    return factory
