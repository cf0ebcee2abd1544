"""immortal: keep a program alive, detached, with every line and event sent to a monitor.

Layers (a module imports only from lower ones):
0 errors, events · 1 spec, state, hookspecs, monitor · 2 process, supervise, detach,
monitoring, control, group · 3 pump, daemon, launcher, manager · 4 cli, __main__, this
module.
"""

from __future__ import annotations

from .errors import (
    AlreadyRunning,
    ChannelError,
    ImmortalError,
    InvalidSpec,
    InvalidType,
    MonitorError,
    MonitorNotFound,
    MonitorOptionsError,
    NotRunning,
    StartError,
    StateDirError,
    StopTimeout,
    TargetNotExecutable,
    TargetNotFound,
    UnknownName,
)
from .events import ExitStatus
from .group import Group, attach, groups
from .hookspecs import hookimpl, hookspec
from .launcher import start
from .manager import Manager
from .monitor import Monitor
from .spec import RestartPolicy, Strategy
from .state import Status

__version__ = "0.1.0"

__all__ = [
    "AlreadyRunning",
    "ChannelError",
    "ExitStatus",
    "Group",
    "ImmortalError",
    "InvalidSpec",
    "InvalidType",
    "Manager",
    "Monitor",
    "MonitorError",
    "MonitorNotFound",
    "MonitorOptionsError",
    "NotRunning",
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
    "groups",
    "hookimpl",
    "hookspec",
    "start",
]
