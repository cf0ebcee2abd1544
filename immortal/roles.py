"""The role protocol: what a daemon or pump is started with, and what the two tell each other.

A role starts as ``python -m immortal._role JSON`` (or is forked by the daemon) with a
:class:`RoleArgs`: the role, the instance directory, why it starts, the target it adopts and
the group's files (:class:`Fds`). Pump and daemon then talk over their lifeline, a
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
from typing import Any

from .events import DAEMON_RESTART, PUMP_START, ExitStatus
from .records import Record, replace

__all__ = ["Adopt", "Command", "Exited", "Fds", "Finish", "Grow", "HandOver", "Hello",
           "Message", "Reaped", "Retire", "Retired", "Rewrite", "RoleArgs", "Spawning",
           "Started", "Target", "decode", "exec_daemon", "hand_over", "role_command",
           "split_adopts"]

_TUPLES = ("out", "err", "channel", "listen", "console")  # the fields that hold several fds


class Fds(Record):
    """The group's files a role is handed (fd numbers), None where there is none."""

    lock: int | None = None  #: the instance lock
    out: tuple[int, int] | None = None  #: the target's stdout pipe (read, write)
    err: tuple[int, int] | None = None  #: the target's stderr pipe
    journal: int | None = None  #: the relay journal (what a pump read, not delivered)
    channel: tuple[int, ...] | None = None  #: the message channel: (ours, the target's)
    lifeline: int | None = None  #: the pump's end of its lifeline to the daemon
    handshake: int | None = None  #: the write end of the caller's handshake pipe
    parent: int | None = None  #: development: the caller's end-of-life pipe
    pump: int | None = None  #: the daemon's end of a successor pump's lifeline
    notify: int | None = None  #: the sd_notify socket (ready="notify"), bound in the directory
    #: the listen sockets, in order: at fds 3, 4, ... in every role (``listen.settle``)
    listen: tuple[int, ...] | None = None
    #: the files of instances 1, 2... of a group of several (``workers``), each
    #: ``(out read, out write, err read, err write, journal)``; instance 0's are above
    more: tuple[tuple[int, int, int, int, int], ...] | None = None
    #: a group run in the foreground with ``--console``: the command's own stdout and
    #: stderr, where every pump echoes the targets' raw output (``foreground``)
    console: tuple[int, int] | None = None

    def numbers(self) -> list[int]:
        """Every fd held here, in field order: the ones a role's process keeps or inherits."""
        kept: list[int] = []
        for name in self._fields:
            value = getattr(self, name)
            if name == "more":
                for files in value or ():
                    kept.extend(files)
            elif isinstance(value, (tuple, list)):
                kept.extend(value)
            elif value is not None:
                kept.append(value)
        return kept

    def instance(self, k: int) -> Fds:
        """The files of instance ``k`` as instance 0's fields (``out``, ``err``,
        ``journal``), with the group's own (lock, channel...) for instance 0 only; empty
        fields for an instance not held here."""
        if k == 0:
            return replace(self, more=None)
        if not self.more or k > len(self.more):
            return Fds()
        out_r, out_w, err_r, err_w, journal = self.more[k - 1]
        return Fds(out=(out_r, out_w), err=(err_r, err_w), journal=journal)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for name in self._fields:
            value = getattr(self, name)
            if value is None:
                continue
            if name == "more":
                data[name] = [list(files) for files in value]
            else:
                data[name] = list(value) if isinstance(value, (tuple, list)) else value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fds:
        values: dict[str, Any] = {name: tuple(value) if name in _TUPLES and value else value
                                  for name, value in data.items() if name in cls._fields}
        if values.get("more"):
            values["more"] = tuple(tuple(files) for files in values["more"])
        return cls(**values)

    def renumbered(self, moved: dict[int, int]) -> Fds:
        """The same files after some moved to other numbers (``{old: new}``)."""
        values: dict[str, Any] = {}
        for name in self._fields:
            value = getattr(self, name)
            if name == "more" and value:
                value = tuple(tuple(moved.get(fd, fd) for fd in files) for files in value)
            elif isinstance(value, tuple):
                value = tuple(moved.get(fd, fd) for fd in value)
            elif value is not None:
                value = moved.get(value, value)
            values[name] = value
        return Fds(**values)


class Adopt(Record):
    """The target a new role takes over: its pid, its wall-clock start, how it ended if
    the daemon reaped it while no pump ran, and its kernel start time when a new start of
    the group adopts it (``adoption``: proved again there before its pipes are opened)."""

    pid: int
    started_wall: float | None
    exit: ExitStatus | None = None
    ticks: int | None = None
    instance: int = 0  #: which instance of the group's program (``workers``)
    #: a new start: the dead group's journal is to be taken from its pipe holder (its
    #: monitors are the same, so its ledger's slots mean the same)
    journal: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "started_wall": self.started_wall,
                "exit": self.exit.to_json() if self.exit else None, "ticks": self.ticks,
                "instance": self.instance, "journal": self.journal}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Adopt:
        last = data.get("exit")
        return cls(data["pid"], data.get("started_wall"),
                   ExitStatus.from_json(last) if last else None, data.get("ticks"),
                   int(data.get("instance") or 0), bool(data.get("journal")))


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
    also: tuple[Adopt, ...] = ()  #: the targets of instances 1, 2... to adopt (``workers``)
    #: a daemon: the command's own process, run in the foreground (``foreground``): no
    #: detaching, its stderr kept, its exit code the group's end (``fgdaemon``)
    foreground: bool = False

    def adopts(self) -> dict[int, Adopt]:
        """Every target to adopt, by instance: ``adopt`` (instance 0's) and ``also``."""
        found = {adopt.instance: adopt for adopt in self.also}
        if self.adopt is not None:
            found[0] = self.adopt
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


def split_adopts(adopts: dict[int, Adopt]) -> dict[str, Any]:
    """``adopts`` by instance as ``RoleArgs``' fields ``adopt`` and ``also``."""
    return {"adopt": adopts.get(0),
            "also": tuple(adopts[k] for k in sorted(adopts) if k != 0)}


def role_command(args: RoleArgs) -> list[str]:
    """The command line of a role started as a fresh interpreter."""
    return [sys.executable, "-m", "immortal._role", json.dumps(args.to_json())]


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
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Message:
        fields = cls._fields
        if not fields:
            return cls()
        rest = [data.get(name) for name in fields[1:]]
        if fields[-1] == "instance":
            rest[-1] = int(rest[-1] or 0)
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


# pump ─► daemon
class Spawning(Message):
    """The pump is about to spawn a target (boot ticks before the spawn), or did not after
    all (None): a pump that dies inside the spawn leaves a target the daemon can find."""

    KEY = "spawning"
    since: int | None
    instance: int = 0


class Target(Message):
    """The pump spawned a target: the daemon knows it before anything else happens."""

    KEY = "target"
    pid: int
    started_wall: float | None
    instance: int = 0


class Exited(Message):
    """The pump's target ``pid`` died and was reaped by the pump."""

    KEY = "exited"
    pid: int
    instance: int = 0


class Started(Message):
    """The pump answered the caller: from now on a pump's death is a restart."""

    KEY = "started"


class Finish(Message):
    """The group ends (stopped, or given up): no pump is started after this one."""

    KEY = "finish"


class Retired(Message):
    """The instances from ``workers`` on (a scale down) have ended: the daemon lets go of
    their files."""

    KEY = "retired"
    workers: int


# daemon ─► pump
class Grow(Message):
    """A scale up: instance ``instance`` is to run, its files (out read, out write, err
    read, err write, journal: made and kept by the daemon) sent with the message
    (``SCM_RIGHTS``)."""

    KEY = "grow"
    instance: int
    fds: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {self.KEY: self.instance}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Grow:
        return cls(int(data[cls.KEY]))


class Retire(Message):
    """A scale down: the instances from ``workers`` on stop (TERM, grace, KILL), and are
    gone once ended (``Retired``)."""

    KEY = "retire"
    workers: int


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
    """A control request passed on to the pump, as ``control.check_request`` checked it."""

    KEY = "cmd"
    request: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return dict(self.request)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Command:
        return cls(data)


_MESSAGES: tuple[type[Message], ...] = (Hello, Command, Rewrite, Reaped, Grow, Retire,
                                        Spawning, Target, Exited, Started, Finish, Retired)


# ----------------------------------------------------------------- the hand-over
class HandOver(Exception):
    """Raised by a pump whose daemon died, to become the daemon in the same process: it
    unwinds the pump's frames (its objects are freed) up to ``pump.main``, which calls the
    daemon's ``become`` with the daemon's :class:`RoleArgs` (``args[0]``)."""


def hand_over(directory: str, adopts: dict[int, Adopt], fds: Fds) -> None:
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


def _spawn_successor(directory: str, adopts: dict[int, Adopt], fds: Fds,
                     lifeline: int) -> int:
    """A fresh pump, the child of this process (the daemon to be): its pid."""
    import subprocess

    alive = {k: replace(adopt, exit=None) for k, adopt in adopts.items()}
    args = RoleArgs("pump", directory, DAEMON_RESTART, fds=replace(fds, lifeline=lifeline),
                    daemon_pid=os.getpid(), fresh=True, **split_adopts(alive))
    log = os.open(Path(directory) / "pump.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                  0o600)
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
