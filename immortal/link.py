"""A pump's lifeline to its daemon: what it tells, what it hears, and the daemon's loss.

The lifeline is the pump's end of a ``SOCK_SEQPACKET`` pair (the messages are in
``roles``); the daemon's death is its end-of-file. A pump whose daemon died takes its
place (``take_over``): the target, a child of the pump, then keeps a supervisor at every
moment.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable

from . import _linux
from .events import DAEMON_RESTART
from .records import replace
from .roles import (Adopt, Fds, Grow, HandOver, Key, Message, RoleArgs, decode, hand_over,
                    split_adopts)

GROW_FDS = 5  #: the files a ``Grow`` comes with: an instance's two pipes and journal


class DaemonLink:
    """The pump's end of its lifeline; ``sock`` is None for a pump without a daemon
    (``unattached``, ``development``) and once the daemon is gone."""

    def __init__(self, fd: int | None) -> None:
        self.sock = socket.socket(fileno=fd) if fd is not None else None

    def tell(self, message: Message) -> None:
        if self.sock is None:
            return
        try:
            self.sock.send(message.to_bytes())
        except OSError:
            pass  # the daemon is gone; its lifeline's end-of-file is handled in the loop

    def tell_fds(self, message: Message, fds: list[int]) -> None:
        """``message`` with ``fds`` (``SCM_RIGHTS``): the daemon keeps its own copies."""
        if self.sock is None:
            return
        try:
            socket.send_fds(self.sock, [message.to_bytes()], fds)
        except OSError:
            pass  # the daemon is gone; its lifeline's end-of-file is handled in the loop

    def gone(self) -> bool:
        """Whether the daemon is gone, seen without reading a message (during start-up)."""
        if self.sock is None:
            return False
        try:
            data = self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        return not data

    def receive(self) -> tuple[bool, Message | None]:
        """``(gone, message)`` when the lifeline is readable: the daemon's death, or one
        message (None if there was none after all, or not one we know). A ``Grow``
        carries the files that came with it; files with any other message are closed."""
        assert self.sock is not None
        try:
            data, fds, _, _ = socket.recv_fds(self.sock, 65536, GROW_FDS)
        except (BlockingIOError, InterruptedError):
            return False, None
        except OSError:
            data, fds = b"", []
        if not data:
            for fd in fds:
                os.close(fd)
            return True, None
        message = decode(data)
        if isinstance(message, Grow) and len(fds) == GROW_FDS:
            return False, replace(message, fds=tuple(fds))
        for fd in fds:
            os.close(fd)
        return False, None if isinstance(message, Grow) else message


def take_over(directory: str, adopts: dict[Key, Adopt], fds: Fds,
              close_loop: Callable[[], None], settle: Callable[[], None],
              title: str | None = None) -> None:
    """Make this pump, whose daemon died, the daemon; never returns.

    Same pid, so the targets (``adopts``, by instance) stay its children. Single-threaded,
    the process becomes the daemon in place (raising ``HandOver`` to ``pump.main``, which
    runs ``succession.become``) at once: what is in the pipes, and what it read but did
    not deliver (the journal), is delivered by the pump the new daemon forks. With a
    monitor's threads it ``exec``s instead (``roles.hand_over``), once ``settle`` has let
    the threads take what they were given.
    """
    # What this process becomes (so that ps never shows two pumps in the hand-over).
    _linux.set_title(title or f"immortal: daemon {directory}")
    if _linux.threads() == 1:
        close_loop()
        raise HandOver(RoleArgs("daemon", directory, DAEMON_RESTART, fds=fds,
                                **split_adopts(adopts)))
    settle()
    sys.stderr.flush()
    hand_over(directory, adopts, fds)
