"""A stop of a group with no supervisor left hands its monitors what the pipe holder keeps.

When the daemon and the pump both die, the group's pipe holder (``holder``) keeps the
pipes and the journal: what the dead pump had read and not handed to every monitor, and
what the target wrote after. A start of the name takes them (``adoption.claim``); a stop
ends the holder, and without this module those lines went with it. So before a stop ends
what is left of such a group (``Group.stop``), it ends the targets (nothing more is
written), then runs a pump that takes the holder's files as a start does, hands each
monitor the lines past its own mark (``setup``, the lines, ``shutdown``), spawns nothing,
and ends (``PumpStart.drain``). Only then is the holder ended.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from . import adoption, orphans, standby
from .errors import ImmortalError
from .events import PUMP_START
from .roles import RoleArgs, role_command
from .spec import Spec
from .state import read_json

#: seconds the monitors get to take what the holder kept; past them the pump is killed
TIMEOUT = 10.0


def deliver_kept(directory: Path) -> list[int]:
    """Hand the monitors of the group in ``directory`` what its pipe holder keeps, if it
    has one whose files a start would take; the pids of the targets ended first."""
    if not orphans.holders(directory):
        return []
    try:
        data = read_json(directory / "spec.json")
        if not data:
            return []
        spec = Spec.from_json(data)
    except (OSError, ValueError, TypeError, KeyError, ImmortalError):
        return []
    if not adoption.leftover(spec, data):
        return []
    ended = orphans.end(orphans.find(directory))
    args = RoleArgs("pump", str(directory), PUMP_START, leftover=True, drain=True)
    try:
        with open(directory / "pump.log", "ab") as log:
            subprocess.run(role_command(args), stdin=subprocess.DEVNULL, stdout=log,
                           stderr=log, cwd=str(directory), env=standby.role_env(),
                           timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        pass  # killed past its time (run's doing), or not started: the stop goes on
    return ended
