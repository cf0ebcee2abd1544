"""``start_group()``: a group of several programs started under one daemon and one pump.

Its steps are ``start()``'s (``launcher.py``'s docstring lists them) with the programs
checked by ``programs.build_group`` instead of ``request.build``: the same instance
directory's checks, lock and ``spec.json`` (``prepare.py``), and the same first role and
handshake (``firstrole.py``), which wait for every instance of every program.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .firstrole import passed_on, start_roles
from .group import Group
from .prepare import check_place, prepared
from .spec import Spec, Strategy
from .state import home


def start_group(name: str, programs: Mapping[str, Mapping[str, Any]], *,
                strategy: str | Strategy = Strategy.DAEMON,
                start_timeout: float = 30.0, **unknown: Any) -> Group:
    """Launch a group of several programs under one daemon and one pump; return a handle.

    ``programs`` maps each program's name to its options: every keyword of ``start()``
    but the group's (``strategy``, ``name``, ``start_timeout``, ``capture``), with ``file``
    (and ``args``) among them, e.g. ``{"web": {"file": "server.py", "workers": 4,
    "listen": ["tcp://0.0.0.0:8000"]}, "worker": {"file": "worker.py"}}``. Each program has
    its own instances, restart policy, readiness and monitors (``Monitor.program`` names
    it); its targets get ``IMMORTAL_PROGRAM``. Every argument is checked here first, the
    error naming the program and the field (``channel`` is for a group of one program, and
    two programs may not listen on one address). Returns once every instance of every
    program is ready; ``StartError`` leaves nothing behind, as ``start()``'s.
    """
    _no_other("start_group()", unknown, ("strategy", "start_timeout"))
    return launch_group(_built(name, programs, strategy, start_timeout))


def _no_other(call: str, unknown: Mapping[str, Any], known: tuple[str, ...]) -> None:
    """An ``UnknownKeyword`` for the first keyword of ``unknown``, as ``start()`` says it."""
    from .errors import UnknownKeyword, unknown_name

    for key in unknown:
        raise unknown_name(f"keyword argument of {call}", key, known, UnknownKeyword)


def plan_group(name: object, programs: object, strategy: object,
               start_timeout: object) -> Spec:
    """``launcher.plan`` for a group of several programs: its ``Spec``, every argument checked,
    its instance directory found safe to use. Nothing is created."""
    return _group_placed(_built(name, programs, strategy, start_timeout))


def launch_group(spec: Spec) -> Group:
    """``start_group``'s launch of a group of several programs built and checked
    (``programs.build_group``)."""
    with passed_on(), prepared(_group_placed(spec)) as (spec, lock, _, sockets, leftover):
        return start_roles(spec, lock, False, None, sockets, leftover)


def _built(name: object, programs: object, strategy: object, start_timeout: object) -> Spec:
    from .names import check_name
    from .programs import build_group

    directory = home() / check_name(name)
    return build_group(name, programs, strategy, start_timeout, str(directory))


def _group_placed(spec: Spec) -> Spec:
    """A group of several programs' instance directory, found safe to use (step 3)."""
    check_place(Path(spec.directory))
    return spec
