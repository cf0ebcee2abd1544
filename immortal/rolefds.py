"""The files a role is handed (``Fds``): the group's, and each instance's, by fd number.

A role keeps or inherits these numbers (``numbers``); a fresh interpreter finds them in its
JSON arguments, a forked pump in its parent's memory. Each instance's two pipes and
journal are keyed by instance (``Key``: its program, "" for a group's one program, and its
number): a group's one program's instance 0 as ``out``, ``err`` and ``journal``, its next
ones as ``more``, a group of several programs' as ``named``; an instance's spare pipes
(``spare``: where a rolling restart's replacement writes, ``spare.py``) as ``spare``.
"""

from __future__ import annotations


from .records import Record, replace

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any

__all__ = ["Fds", "Files", "Key", "Pipes"]

_TUPLES = ("out", "err", "channel", "listen", "console")  # the fields that hold several fds

#: an instance of a group: its program's name ("" for a group's one program) and its
#: number among that program's instances
Key = tuple[str, int]
#: one instance's files: out read, out write, err read, err write, journal
Files = tuple[int, int, int, int, int]
#: an instance's spare pipes: out read, out write, err read, err write
Pipes = tuple[int, int, int, int]


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
    more: tuple[Files, ...] | None = None
    #: the files of the other instances, each ``(program, k, *Files)``: those of a group of
    #: several programs (``start_group``), every one of them
    named: tuple[tuple[Any, ...], ...] | None = None
    #: a group run in the foreground with ``--console``: the command's own stdout and
    #: stderr, where every pump echoes the targets' raw output (``foreground``)
    console: tuple[int, int] | None = None
    #: the spare pipes of the instances that have some (``spare.py``), each
    #: ``(program, k, *Pipes)``
    spare: tuple[tuple[Any, ...], ...] | None = None

    def numbers(self) -> list[int]:
        """Every fd held here, in field order: the ones a role's process keeps or inherits."""
        kept: list[int] = []
        for name in self._fields:
            value = getattr(self, name)
            if name == "more":
                for files in value or ():
                    kept.extend(files)
            elif name in ("named", "spare"):
                for entry in value or ():
                    kept.extend(entry[2:])
            elif isinstance(value, (tuple, list)):
                kept.extend(value)
            elif value is not None:
                kept.append(value)
        return kept

    def instances(self) -> dict[Key, Files]:
        """Every instance's files held here, by instance."""
        found: dict[Key, Files] = {}
        if self.out and self.err and self.journal is not None:
            found[("", 0)] = (*self.out, *self.err, self.journal)
        for k, files in enumerate(self.more or (), 1):
            found[("", k)] = files
        for program, k, out_r, out_w, err_r, err_w, journal in self.named or ():
            found[(str(program), int(k))] = (out_r, out_w, err_r, err_w, journal)
        return found

    def spares(self) -> dict[Key, Pipes]:
        """Every instance's spare pipes held here, by instance."""
        return {(str(program), int(k)): (out_r, out_w, err_r, err_w)
                for program, k, out_r, out_w, err_r, err_w in self.spare or ()}

    def with_spares(self, pipes: dict[Key, Pipes]) -> Fds:
        """These fds with ``pipes`` as the instances' spare pipes."""
        return replace(self, spare=tuple((program, k, *pipes[(program, k)])
                                         for program, k in sorted(pipes)) or None)

    def with_instances(self, files: dict[Key, Files]) -> Fds:
        """These fds with ``files`` as the instances' (a group's one program's instance 0
        as ``out``, ``err`` and ``journal``, its next ones as ``more``, the others as
        ``named``)."""
        first = files.get(("", 0))
        more: list[Files] = []
        while ("", len(more) + 1) in files and first is not None:
            more.append(files[("", len(more) + 1)])
        plain = {("", k) for k in range(len(more) + 1)} if first is not None else set()
        named = tuple((program, k, *files[(program, k)])
                      for program, k in sorted(files) if (program, k) not in plain)
        return replace(self, out=first[0:2] if first else None,
                       err=first[2:4] if first else None,
                       journal=first[4] if first else None, more=tuple(more) or None,
                       named=named or None)

    def instance(self, key: Key) -> Fds:
        """The files of instance ``key`` as a group of one's fields (``out``, ``err``,
        ``journal``), with the group's own (lock, channel...) for ``("", 0)`` only; empty
        fields for an instance not held here."""
        if key == ("", 0):
            return replace(self, more=None, named=None, spare=None)
        files = self.instances().get(key)
        if files is None:
            return Fds()
        out_r, out_w, err_r, err_w, journal = files
        return Fds(out=(out_r, out_w), err=(err_r, err_w), journal=journal)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for name in self._fields:
            value = getattr(self, name)
            if value is None:
                continue
            if name in ("more", "named", "spare"):
                data[name] = [list(files) for files in value]
            else:
                data[name] = list(value) if isinstance(value, (tuple, list)) else value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fds:
        values: dict[str, Any] = {name: tuple(value) if name in _TUPLES and value else value
                                  for name, value in data.items() if name in cls._fields}
        for name in ("more", "named", "spare"):
            if values.get(name):
                values[name] = tuple(tuple(files) for files in values[name])
        return cls(**values)

    def renumbered(self, moved: dict[int, int]) -> Fds:
        """The same files after some moved to other numbers (``{old: new}``)."""
        values: dict[str, Any] = {}
        for name in self._fields:
            value = getattr(self, name)
            if name == "more" and value:
                value = tuple(tuple(moved.get(fd, fd) for fd in files) for files in value)
            elif name in ("named", "spare") and value:
                value = tuple((*entry[:2], *(moved.get(fd, fd) for fd in entry[2:]))
                              for entry in value)
            elif isinstance(value, tuple):
                value = tuple(moved.get(fd, fd) for fd in value)
            elif value is not None:
                value = moved.get(value, value)
            values[name] = value
        return Fds(**values)
