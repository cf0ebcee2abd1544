"""The message channel (a group started with ``channel=True``): the target's side, and
the monitors' (``Sender``).

    from immortal import channel
    channel.send({"progress": 0.5})
    reply = channel.receive(timeout=5)     # None when nothing came in time

Each message is one JSON value in one datagram of a ``SOCK_SEQPACKET`` socket whose fd is
named by the environment variable ``IMMORTAL_CHANNEL_FD``; a program in any language can use
that fd the same way (one ``write`` of UTF-8 JSON per message, one ``read`` per message).
Messages are at most 64 KiB. The channel outlives a pump restart; a message the pump had
read but not yet handed to the monitors when it died is lost.
"""

from __future__ import annotations

import json
import os
import select
import socket

from .errors import ChannelError

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any

ENV = "IMMORTAL_CHANNEL_FD"
MAX_MESSAGE = 64 * 1024
_sock: socket.socket | None = None


def _channel() -> socket.socket:
    global _sock
    if _sock is None:
        value = os.environ.get(ENV)
        if not value or not value.isdigit():
            raise ChannelError(f"no message channel: ${ENV} is not set (start the group "
                               "with channel=True)")
        _sock = socket.socket(fileno=int(value))
    return _sock


def available() -> bool:
    """True when this process was started with a message channel."""
    return bool(os.environ.get(ENV, "").isdigit())


def send(message: Any) -> None:
    """Send one JSON value to the group's monitors (blocks while the channel is full)."""
    _channel().send(_encoded(message))


def _encoded(message: Any) -> bytes:
    """One message's datagram (TypeError or ValueError: not JSON)."""
    data = json.dumps(message).encode()
    if len(data) > MAX_MESSAGE:
        raise ChannelError(f"a channel message is at most {MAX_MESSAGE} bytes "
                           f"(got {len(data)})")
    return data


def receive(timeout: float | None = None) -> Any:
    """The next JSON value a monitor sent, or None when none came within ``timeout``."""
    sock = _channel()
    ready, _, _ = select.select([sock], [], [], timeout)
    if not ready:
        return None
    data = sock.recv(MAX_MESSAGE)
    if not data:
        raise ChannelError("the message channel is closed")
    return json.loads(data)


class Sender:
    """A monitor's ``send``, on the pump's end of the channel (``sock``, non-blocking; None:
    the group has no channel). One datagram per message, so that any thread, and a
    monitor's own process holding the same socket (``fileno``), sends at any time."""

    def __init__(self, sock: socket.socket | None) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return -1 if self.sock is None else self.sock.fileno()

    def __call__(self, message: Any) -> None:
        if self.sock is None:
            raise ChannelError("this group has no message channel: start it with "
                               "channel=True")
        try:
            data = _encoded(message)
        except (TypeError, ValueError) as exc:
            raise ChannelError(f"a channel message must be JSON: {exc}") from None
        try:
            self.sock.send(data)
        except BlockingIOError:
            raise ChannelError("the target's channel is full: it does not read its "
                               "messages") from None
        except OSError as exc:
            raise ChannelError(f"the channel cannot take the message: {exc}") from None
