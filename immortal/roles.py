"""The role protocol: what a daemon or pump is started with, and what the two tell each other.

A role starts as ``python -m immortal._role JSON`` (or is forked by the daemon) with a
:class:`RoleArgs`: the role, the instance directory, why it starts, the targets it adopts
and the group's files (``rolefds.Fds``). Pump and daemon then talk over their lifeline, a
``SOCK_SEQPACKET`` pair: one datagram, one JSON object, one message record below. Both
roles import this module, never each other for the hand-over: a pump whose daemon died
becomes the daemon here (:class:`HandOver`, raised to its caller, or :func:`hand_over`, an
``exec``).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from collections.abc import Callable

from . import bytecode, rolelog
from .events import DAEMON_RESTART, PUMP_START, ExitStatus
from .records import Record, replace
from .rolefds import Fds, Files, Key

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any

__all__ = ["Adopt", "Command", "Exited", "Fds", "Files", "Finish", "Grow", "HandOver",
           "Hello", "Key", "Message", "Reaped", "Reload", "Retire", "Retired", "Rewrite",
           "RoleArgs", "Spare", "Spawning", "Started", "Target", "decode", "exec_daemon",
           "hand_over", "role_command", "split_adopts"]


class Adopt(Record):
    """The target a new role takes over: its pid, its wall-clock start, how it ended if
    the daemon reaped it while no pump ran, and its kernel start time when a new start of
    the group adopts it (``adoption``: proved again there before its pipes are opened)."""

    pid: int
    started_wall: float | None
    exit: ExitStatus | None = None
    ticks: int | None = None
    instance: int = 0  #: which instance of its program (``workers``)
    #: a new start: the dead group's journal is to be taken from its pipe holder (its
    #: monitors are the same, so its ledger's slots mean the same)
    journal: bool = False
    program: str = ""  #: which program of a group of several ("": a group's one program)

    @property
    def key(self) -> Key:
        return self.program, self.instance

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "started_wall": self.started_wall,
                "exit": self.exit.to_json() if self.exit else None, "ticks": self.ticks,
                "instance": self.instance, "journal": self.journal, "program": self.program}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Adopt:
        last = data.get("exit")
        return cls(data["pid"], data.get("started_wall"),
                   ExitStatus.from_json(last) if last else None, data.get("ticks"),
                   int(data.get("instance") or 0), bool(data.get("journal")),
                   str(data.get("program") or ""))


class RoleArgs(Record):
    """What a role starts with (the JSON of its command line)."""

    role: str  #: "daemon" or "pump"
    dir: str  #: the instance directory
    why: str = PUMP_START  #: PUMP_START, PUMP_RESTART or DAEMON_RESTART
    detach: bool = False  #: leave the caller first (a first role, not in development)
    fds: Fds = Fds()
    adopt: Adopt | None = None
    message_file: str | None = None  #: a pump: the log whose tail tells why it restarts
    daemon_pid: int | None = None  #: a pump: its daemon; None at the group's root
    fresh: bool = False  #: a pump: a fresh interpreter started by a dying pump (hand_over)
    pump: int | None = None  #: a daemon: the successor pump already running (hand_over)
    also: tuple[Adopt, ...] = ()  #: the other instances' targets to adopt (``workers``)
    #: a first role and its first pump: the journal a dead group's pipe holder kept is
    #: this group's, its last target's undelivered lines delivered whole at set-up
    #: (``adoption.leftover``)
    leftover: bool = False
    #: a pump: hand the monitors what the dead group's pipe holder keeps, spawn nothing,
    #: end (``drain``: a stop of a group with no supervisor left)
    drain: bool = False
    #: a daemon: the command's own process, run in the foreground (``foreground``): no
    #: detaching, its stderr kept, its exit code the group's end (``fgdaemon``)
    foreground: bool = False

    def adopts(self) -> dict[Key, Adopt]:
        """Every target to adopt, by instance: ``adopt`` (instance 0's) and ``also``."""
        found = {adopt.key: adopt for adopt in self.also}
        if self.adopt is not None:
            found[("", 0)] = self.adopt
        return found

    def to_json(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self._fields}
        data["fds"] = self.fds.to_json()
        data["adopt"] = self.adopt.to_json() if self.adopt else None
        data["also"] = [adopt.to_json() for adopt in self.also]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoleArgs:
        values = {name: data[name] for name in cls._fields if name in data}
        values["fds"] = Fds.from_json(data.get("fds") or {})
        values["adopt"] = Adopt.from_json(data["adopt"]) if data.get("adopt") else None
        values["also"] = tuple(Adopt.from_json(adopt) for adopt in data.get("also") or ())
        return cls(**values)


def split_adopts(adopts: dict[Key, Adopt]) -> dict[str, Any]:
    """``adopts`` by instance as ``RoleArgs``' fields ``adopt`` and ``also``."""
    return {"adopt": adopts.get(("", 0)),
            "also": tuple(adopts[key] for key in sorted(adopts) if key != ("", 0))}


def role_command(args: RoleArgs) -> list[str]:
    """The command line of a role started as a fresh interpreter."""
    return [*bytecode.interpreter(), "-m", "immortal._role", json.dumps(args.to_json())]


# ----------------------------------------------------------------- lifeline messages
class Message(Record):
    """A lifeline message. On the wire, a JSON object whose key ``KEY`` names the message
    and carries its first field (``True`` for a message without fields); the other fields
    follow under their names."""

    KEY = ""

    def to_json(self) -> dict[str, Any]:
        fields = self._fields
        data: dict[str, Any] = {self.KEY: getattr(self, fields[0]) if fields else True}
        data.update((name, getattr(self, name)) for name in fields[1:])
        if not data.get("instance", 1):
            del data["instance"]  # instance 0, a group of one's: as the wire always read
        if not data.get("program", 1):
            del data["program"]  # a group's one program
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Message:
        fields = cls._fields
        if not fields:
            return cls()
        rest = [_DEFAULTS[name](data.get(name)) if name in _DEFAULTS else data.get(name)
                for name in fields[1:]]
        return cls(data[cls.KEY], *rest)

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json()).encode()

    @staticmethod
    def from_bytes(data: bytes) -> Message | None:
        """The message in ``data``; None if it is none (not JSON, or unknown)."""
        try:
            fields = json.loads(data)
        except ValueError:
            return None
        if not isinstance(fields, dict):
            return None
        for kind in _MESSAGES:
            if kind.KEY in fields:
                return kind.from_json(fields)
        return None


decode = Message.from_bytes
_DEFAULTS: dict[str, Callable[[Any], Any]] = {"instance": lambda value: int(value or 0),
                                              "program": lambda value: str(value or ""),
                                              "swap": bool}


# pump ─► daemon
class Spawning(Message):
    """The pump is about to spawn a target (boot ticks before the spawn), or did not after
    all (None): a pump that dies inside the spawn leaves a target the daemon can find."""

    KEY = "spawning"
    since: int | None
    instance: int = 0
    program: str = ""


class Target(Message):
    """The pump spawned a target: the daemon knows it before anything else happens. With
    ``swap``: a rolling restart's replacement took its slot, writing to the slot's spare
    pipes, which are now the slot's pipes (and its old pipes the spare ones)."""

    KEY = "target"
    pid: int
    started_wall: float | None
    instance: int = 0
    program: str = ""
    swap: bool = False

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        if not self.swap:
            del data["swap"]  # as the wire always read
        return data


class Spare(Message):
    """The spare pipes of an instance (``spare.py``), made by the pump before it spawns a
    rolling restart's replacement on them, sent with the message (``SCM_RIGHTS``: out
    read, out write, err read, err write): the daemon keeps them as it keeps the slot's
    pipes."""

    KEY = "spare"
    instance: int
    program: str = ""


class Exited(Message):
    """The pump's target ``pid`` died and was reaped by the pump."""

    KEY = "exited"
    pid: int
    instance: int = 0
    program: str = ""


class Started(Message):
    """The pump answered the caller: from now on a pump's death is a restart."""

    KEY = "started"


class Finish(Message):
    """The group ends (stopped, or given up): no pump is started after this one."""

    KEY = "finish"


class Retired(Message):
    """The instances of ``program`` from ``workers`` on (a scale down; 0: a program
    removed) have ended: the daemon lets go of their files."""

    KEY = "retired"
    workers: int
    program: str = ""


# daemon ─► pump
class Grow(Message):
    """A scale up: instance ``instance`` is to run, its files (out read, out write, err
    read, err write, journal: made and kept by the daemon) sent with the message
    (``SCM_RIGHTS``)."""

    KEY = "grow"
    instance: int
    program: str = ""
    fds: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {self.KEY: self.instance, **({"program": self.program} if self.program else {})}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Grow:
        return cls(int(data[cls.KEY]), str(data.get("program") or ""))


class Retire(Message):
    """A scale down: the instances of ``program`` from ``workers`` on stop (TERM, grace,
    KILL), and are gone once ended (``Retired``)."""

    KEY = "retire"
    workers: int
    program: str = ""


class Reload(Message):
    """``spec.json`` changed (``Group.apply``): the pump reads it again, taking each
    program's new definition and the programs added (whose instances follow, ``Grow``)."""

    KEY = "reload"


class Hello(Message):
    """The daemon a dying pump exec'd into is up (``hand_over``): the successor pump
    writes its status now."""

    KEY = "hello"


class Rewrite(Message):
    """The daemon put the instance directory back: the pump writes its status again."""

    KEY = "rewrite"


class Reaped(Message):
    """The daemon reaped the adopted target ``pid`` (the pump's target is not its child)."""

    KEY = "reaped"
    pid: int
    status: ExitStatus

    def to_json(self) -> dict[str, Any]:
        return {self.KEY: self.pid, "status": self.status.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reaped:
        return cls(data[cls.KEY], ExitStatus.from_json(data["status"]))


class Command(Message):
    """A control request passed on to the pump, as ``commands.check_request`` checked it."""

    KEY = "cmd"
    request: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return dict(self.request)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Command:
        return cls(data)


_MESSAGES: tuple[type[Message], ...] = (Hello, Command, Rewrite, Reaped, Grow, Retire,
                                        Reload, Spawning, Target, Exited, Started, Finish,
                                        Retired, Spare)


# ----------------------------------------------------------------- the hand-over
class HandOver(Exception):
    """Raised by a pump whose daemon died, to become the daemon in the same process: it
    unwinds the pump's frames (its objects are freed) up to ``pump.main``, which calls the
    daemon's ``become`` with the daemon's :class:`RoleArgs` (``args[0]``)."""


def hand_over(directory: str, adopts: dict[Key, Adopt], fds: Fds) -> None:
    """Turn this process (a pump whose daemon died, with threads of a monitor's) into the
    daemon by ``exec``: same pid, so its target stays its child. Never returns.

    A successor pump is started first, as a fresh interpreter (this process holds monitor
    code, maybe threads: no fork without exec), adopting the target as after a pump's death.
    So while this process ``exec``s, two supervisors live: if this one dies now, the
    successor sees its lifeline end and becomes the daemon in turn; if the successor dies,
    the new daemon reaps it and starts another. If it cannot be started, the new daemon
    starts a pump as usual.
    """
    args = RoleArgs("daemon", directory, DAEMON_RESTART, fds=fds, **split_adopts(adopts))
    try:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    except OSError as exc:
        sys.stderr.write(f"immortal: pump: cannot start a successor pump: {exc}\n")
    else:
        try:
            pid = _spawn_successor(directory, adopts, fds, theirs.fileno())
            args = replace(args, pump=pid, fds=replace(fds, pump=ours.detach()))
        except OSError as exc:
            sys.stderr.write(f"immortal: pump: cannot start a successor pump: {exc}\n")
            ours.close()
        theirs.close()
    exec_daemon(args)


def _spawn_successor(directory: str, adopts: dict[Key, Adopt], fds: Fds,
                     lifeline: int) -> int:
    """A fresh pump, the child of this process (the daemon to be): its pid."""
    import subprocess

    alive = {k: replace(adopt, exit=None) for k, adopt in adopts.items()}
    args = RoleArgs("pump", directory, DAEMON_RESTART, fds=replace(fds, lifeline=lifeline),
                    daemon_pid=os.getpid(), fresh=True, **split_adopts(alive))
    log = rolelog.open_for(Path(directory) / "pump.log")
    try:
        child = subprocess.Popen(role_command(args), stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=log, close_fds=True,
                                 pass_fds=args.fds.numbers())
    finally:
        os.close(log)
    return child.pid


def exec_daemon(args: RoleArgs) -> None:
    """Replace this process (a pump whose daemon died) with a daemon: same pid."""
    for fd in args.fds.numbers():
        os.set_inheritable(fd, True)
    argv = role_command(args)
    try:
        os.execv(argv[0], argv)
    except OSError as exc:
        # The successor, if any, sees this process end and becomes the daemon itself.
        sys.stderr.write(f"immortal: pump: cannot become the daemon: {exc}\n")
        sys.stderr.flush()
        os._exit(1)
