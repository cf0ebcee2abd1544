"""A target's output and message channel, as the pump holds them: one ``Streams`` per
instance of the group's program (``workers``), the channel and the notify socket with
instance 0's only.

stdout and stderr are two pipes, each read by a ``relay.Relay`` through the journal (what
a pump read but did not deliver outlives it); the channel is a datagram socket pair, the
pump's end here and the target's end passed to it; the notify socket (``notify.py``) is
bound in the instance directory. A pump forked by the daemon, or handed
over, is given these files (``Fds``); an unattached or development pump makes them. An
instance that was rolled has spare pipes too (``spare``), where a replacement writes.
"""

from __future__ import annotations

import functools
import json
import os
import socket
from collections.abc import Callable, Sequence

from . import relay, rolelog
from .channel import Sender
from .notify import make as make_notify
from .roles import Fds

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any

    from .rolefds import Pipes

#: where a stream's blocks go: (stream name, block, offset, end), see ``relay.Relay``
Sink = Callable[[str, bytes, int, int], None]
BATCH = 64  # messages taken at a time, so that output is not starved by a chatty target


class Streams:
    """``echo``: the fds that get the raw output too, stdout's and stderr's (the pump's own
    1 and 2 in ``development``, the command's console in the foreground), or None.
    ``notify``: the instance directory of a group whose targets tell their readiness
    (``notify.py``), where the socket is made if it was not handed over."""

    def __init__(self, fds: Fds, channel: bool, echo: tuple[int, int] | None, sink: Sink,
                 notify: str | None = None) -> None:
        if fds.out and fds.err:
            self.out_r, self.out_w = fds.out
            self.err_r, self.err_w = fds.err
            os.set_blocking(self.out_r, False)
            os.set_blocking(self.err_r, False)
        else:
            self.out_r, self.out_w = relay.make_pipe()
            self.err_r, self.err_w = relay.make_pipe()
        self.journal_fd: int = fds.journal if fds.journal is not None \
            else relay.make_journal()
        self.journal = relay.open_journal(self.journal_fd)
        self.channel: list[int] | None = None
        if fds.channel:
            self.channel = list(fds.channel)
        elif channel:
            self.channel = list(relay.make_channel())
        self.channel_sock = socket.socket(fileno=os.dup(self.channel[0])) \
            if self.channel else None
        if self.channel_sock is not None:
            self.channel_sock.setblocking(False)
        self.send = Sender(self.channel_sock)  #: a monitor's ``send``
        self.notify_fd: int | None = fds.notify
        if self.notify_fd is None and notify is not None:
            self.notify_fd = make_notify(notify)
        # A dup, as for the channel: the fd itself outlives this object (a hand-over).
        self.notify_sock = socket.socket(fileno=os.dup(self.notify_fd)) \
            if self.notify_fd is not None else None
        self.console = fds.console  # handed on to a successor as they came
        self.echo = echo
        self.relays = (
            relay.Relay(self.out_r, self.journal, 0, functools.partial(sink, "stdout"),
                        echo[0] if echo else None),
            relay.Relay(self.err_r, self.journal, 1, functools.partial(sink, "stderr"),
                        echo[1] if echo else None),
        )
        #: the spare pipes (``spare``), once a roll made them: out read, out write, err
        #: read, err write
        self.spare: Pipes | None = None
        #: how many bytes at the head of each spare pipe ``seen`` was given already
        self.spare_fed = [0, 0]
        #: what reads the spare pipes' lines: a replacement's readiness, while one runs
        self.seen: Callable[[str, bytes], None] | None = None
        self.recovered = False  #: a dead predecessor's unrecorded bytes were taken

    @property
    def writes(self) -> tuple[int, int]:
        """The write ends of the slot's pipes (stdout's, stderr's)."""
        return self.out_w, self.err_w

    def swap_spare(self) -> None:
        """The spare pipes become the slot's (read by the relays), its pipes the spare."""
        assert self.spare is not None
        old = (self.out_r, self.out_w, self.err_r, self.err_w)
        self.out_r, self.out_w, self.err_r, self.err_w = self.spare
        os.set_blocking(self.out_r, False)
        os.set_blocking(self.err_r, False)
        self.spare = old
        self.spare_fed = [0, 0]
        self.relays[0].fd, self.relays[1].fd = self.out_r, self.err_r

    def fds(self, lock: int | None, others: Sequence[Streams] = ()) -> Fds:
        """What a successor (a daemon, a pump) is handed: these files (instance 0's), and
        those of the ``others`` instances."""
        return Fds(lock=lock, out=(self.out_r, self.out_w), err=(self.err_r, self.err_w),
                   journal=self.journal_fd,
                   channel=(self.channel[0], self.channel[1]) if self.channel else None,
                   notify=self.notify_fd, console=self.console,
                   more=tuple(other.files() for other in others) or None)

    def files(self) -> tuple[int, int, int, int, int]:
        """This instance's files as ``Fds.more`` lists them."""
        return self.out_r, self.out_w, self.err_r, self.err_w, self.journal_fd

    def close(self) -> None:
        """Let go of this instance's files (it retired): the pipes, the journal and the
        channel."""
        for fd in (self.out_r, self.out_w, self.err_r, self.err_w, self.journal_fd,
                   *(self.spare or ())):
            os.close(fd)
        self.journal.close()
        if self.channel_sock is not None:
            self.channel_sock.close()

    def no_echo(self) -> None:
        """A monitor shows the output on the terminal already."""
        self.echo = None
        for stream in self.relays:
            stream.echo = None

    def recover(self) -> None:
        """Deliver what a dead predecessor had read but not delivered (the journal); once."""
        if self.recovered:
            return
        self.recovered = True
        for stream in self.relays:
            stream.recover(self.journal_fd)
            stream.deliver()

    def drain(self, final: bool = True) -> None:
        """Deliver every byte written before the target died, then any last partial line.

        Not ``final`` (the pump hands over to a successor): a partial line stays in the
        journal, to be completed and delivered whole by the next pump.

        A successor that drains before its set-up recovered (its daemon died meanwhile,
        the group ending) recovers first: a read lands where a dead predecessor's
        unrecorded bytes lie, and would write over them.
        """
        self.recover()
        for stream in self.relays:
            if final:
                stream.drain()
            else:
                while stream.read():
                    pass

    def receive(self, deliver: Callable[[Any], None]) -> None:
        """Messages from the target, each one datagram, one JSON value: a bounded batch."""
        assert self.channel_sock is not None
        for _ in range(BATCH):
            try:
                data = self.channel_sock.recv(relay.MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return
            if not data:
                return
            try:
                message = json.loads(data)
            except ValueError:
                rolelog.report("channel", f"immortal: pump: the target sent a message that "
                                          f"is not JSON: {data[:200]!r}\n")
                continue
            deliver(message)
