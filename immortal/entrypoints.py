"""Find one entry point by name without importing ``importlib.metadata``.

``importlib.metadata`` is slow to import (``zipfile``, ``email``, ``csv``...), a cost paid
by the caller at every ``start()`` and again by the pump, to look up one name in one group.
This reads the same files it would — ``entry_points.txt`` in the ``*.dist-info`` and
``*.egg-info`` directories on ``sys.path`` — for the common case. Whatever it does not find
(zipped distributions, custom finders) falls back to ``importlib.metadata`` in the caller of
:func:`find`, so a miss here is never an answer.
"""

from __future__ import annotations

import os
import sys

_SUFFIXES = (".dist-info", ".egg-info")


_found: dict[tuple[str, str, tuple[str, ...]], str] = {}


def find(group: str, name: str) -> str | None:
    """The value (``module:attr``) of entry point ``name`` in ``group``: the first
    distribution on ``sys.path`` that declares it, as ``importlib.metadata`` orders them.

    A name found is remembered for the process's life (for the same ``sys.path``), like the
    module it names once imported: the daemon looks up the group's monitors before it forks
    the pump, and every pump it forks finds them here instead of reading the files again.
    """
    key = (group, name, tuple(sys.path))
    if key not in _found:
        value = _scan(group, name)
        if value is None:
            return None
        _found[key] = value
    return _found[key]


def _scan(group: str, name: str) -> str | None:
    seen: set[str] = set()
    for entry in sys.path:
        try:
            listing = os.listdir(entry or ".")
        except OSError:
            continue  # not a directory: a zip file, or gone
        for item in sorted(listing):
            if not item.endswith(_SUFFIXES):
                continue
            # A distribution found twice on the path counts where it is first seen.
            distribution = item.rpartition(".")[0].split("-")[0].lower().replace("_", "-")
            if distribution in seen:
                continue
            seen.add(distribution)
            value = _read(os.path.join(entry or ".", item, "entry_points.txt"), group, name)
            if value is not None:
                return value
    return None


def _read(path: str, group: str, name: str) -> str | None:
    """``name``'s value in section ``[group]`` of an ``entry_points.txt`` (INI syntax)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError):
        return None
    inside = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            inside = line == f"[{group}]"
            continue
        if inside:
            key, sep, value = line.partition("=")
            if sep and key.strip() == name:
                # 'module:attr [extra]': extras only matter to installers.
                return value.partition("[")[0].strip() or None
    return None
