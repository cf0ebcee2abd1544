"""The process title, what ps shows: set through setproctitle's C extension alone."""

from __future__ import annotations

import os

_title_loaded = False
_title_module: object = None  # setproctitle's extension, once loaded (None if it cannot be)


def import_title() -> None:
    """Load what :func:`set_title` needs, ahead of time.

    Without setproctitle: nothing is loaded, and titles are not set.
    """
    global _title_loaded, _title_module
    if _title_loaded:
        return
    _title_loaded = True
    try:
        _title_module = _load_setproctitle()
    except Exception:  # pragma: no cover - a dependency; ps then shows the argv as it is
        _title_module = None


def _load_setproctitle() -> object:
    """setproctitle's C extension, loaded without its package, whose ``__init__`` imports
    logging only to report that the extension is missing (time and memory in every role)."""
    import importlib.machinery

    found = importlib.machinery.PathFinder.find_spec("setproctitle")
    if found is not None and found.submodule_search_locations:
        for directory in found.submodule_search_locations:
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                path = os.path.join(directory, "_setproctitle" + suffix)
                if os.path.exists(path):
                    name = "setproctitle._setproctitle"
                    loader = importlib.machinery.ExtensionFileLoader(name, path)
                    spec = importlib.machinery.ModuleSpec(name, loader, origin=path)
                    module = loader.create_module(spec)
                    loader.exec_module(module)
                    return module
    import setproctitle  # an unusual layout: the package as it comes

    return setproctitle


def set_title(title: str) -> None:
    """What ps shows for this process (a forked pump's argv is still the daemon's).

    Without setproctitle: nothing; ps shows the argv as it is.
    """
    import_title()
    if _title_module is not None:
        _title_module.setproctitle(title)  # type: ignore[attr-defined]
