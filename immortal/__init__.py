"""immortal: keep a program alive, detached, with every line and event sent to a monitor.

Layers (a module imports only from lower ones; tests/test_layering.py checks it):
0 errors, records, _linux, hookimpls, entrypoints, detach, rolelog, bytecode, plainsignals,
  tomlkeys, phases, cliexamples, runargs, ledger, exiting ·
1 hookspecs, monitorfind, standby, events, names, safety, channel, commands, relay, orphans,
  figures, tailing, cliargs, rolling, readiness, notify, addresses, envfile,
  completionscripts, configkeys,
  privileges, filewatch, memwatch, rolefds, units, loop, jobstop ·
2 process, monitor, roles, delivery, instance, checks, machine, listen, configfile, holder,
  statewords, sdnotify, spare, control, suspects ·
3 execute, monitorload, state, policy, kept, keptfiles, link, workers, completion, peers,
  monitorthread, monitorchild ·
4 monitorprocess, render, dirwatch, stall, spec, groupview, statusfile, streams, metrics,
  scalerecord ·
5 monitoring, supervise, adoption, spawner, readywatch, answer, request, groupstop, settling,
  listview ·
6 pumpstart, scaling, pumpcontrol, rollout, rollsignals, rollresume, programs, pumphosts,
  pumpops, configcheck, prepare, drain, pumptakeover, pumplinks ·
7 pump, groupapply, config, configview ·
8 group ·
9 forking, firstrole, daemonscale, daemonhold, daemoncontrol, forget, daemonsignals ·
10 daemon, launcher, groupstart ·
11 manager, foreground ·
12 recorded, fgdaemon, fileverbs ·
13 clifile, succession ·
14 clisvc ·
15 clinames ·
16 cli ·
17 _role, __main__, __init__
"""

from __future__ import annotations

# Not typing's: 'immortal stop', 'status', 'list'... import nothing else that imports
# typing, and would pay for it at every run (bench/notes.md). Modules that only the roles
# import (which load typing anyway) use typing's. Type checkers read this as
# typing.TYPE_CHECKING.
TYPE_CHECKING = False

if TYPE_CHECKING:  # the same names, for type checkers; at run time they load on first use
    from typing import Any

    from .errors import (
        AlreadyRunning,
        ChannelError,
        ExecTimeout,
        ImmortalError,
        InvalidSpec,
        InvalidType,
        ListenError,
        MonitorError,
        MonitorNotFound,
        MonitorOptionsError,
        NoAnswer,
        NotRunning,
        OutputTooLarge,
        StartError,
        StateDirError,
        StopTimeout,
        TargetNotExecutable,
        TargetNotFound,
        UnknownName,
    )
    from .events import ExitStatus
    from .execute import ExecResult, exec
    from .group import Group, attach, groups
    from .groupstart import start_group
    from .hookspecs import hookimpl, hookspec
    from .launcher import start
    from .programs import Applied
    from .manager import Manager
    from .monitor import Monitor
    from .spec import RestartPolicy, Strategy
    from .state import Status

# Where each public name lives. They are imported on first use (PEP 562), so that the
# daemon and pump, which import this package to reach their own modules, do not pay for the
# caller's side (launcher, pluggy's entry points...) at every start.
_HOMES = {
    **dict.fromkeys(("AlreadyRunning", "ChannelError", "ExecTimeout", "ImmortalError",
                     "InvalidSpec", "InvalidType", "ListenError", "MonitorError",
                     "MonitorNotFound", "MonitorOptionsError", "NoAnswer", "NotRunning",
                     "OutputTooLarge", "StartError", "StateDirError", "StopTimeout",
                     "TargetNotExecutable", "TargetNotFound", "UnknownName"), "errors"),
    "ExitStatus": "events",
    **dict.fromkeys(("ExecResult", "exec"), "execute"),
    **dict.fromkeys(("Group", "attach", "groups"), "group"),
    **dict.fromkeys(("hookimpl", "hookspec"), "hookspecs"),
    "start": "launcher",
    "start_group": "groupstart",
    "Applied": "programs",
    "Manager": "manager",
    "Monitor": "monitor",
    **dict.fromkeys(("RestartPolicy", "Strategy"), "spec"),
    "Status": "state",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'immortal' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__version__ = "0.1.0"

__all__ = [
    "AlreadyRunning",
    "Applied",
    "ChannelError",
    "ExecResult",
    "ExecTimeout",
    "ExitStatus",
    "Group",
    "ImmortalError",
    "InvalidSpec",
    "InvalidType",
    "ListenError",
    "Manager",
    "Monitor",
    "MonitorError",
    "MonitorNotFound",
    "MonitorOptionsError",
    "NoAnswer",
    "NotRunning",
    "OutputTooLarge",
    "RestartPolicy",
    "StartError",
    "StateDirError",
    "Status",
    "StopTimeout",
    "Strategy",
    "TargetNotExecutable",
    "TargetNotFound",
    "UnknownName",
    "attach",
    "exec",
    "groups",
    "hookimpl",
    "hookspec",
    "start",
    "start_group",
]
