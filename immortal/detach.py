"""Leaving the caller (python-daemon lives here only) and the handshake pipe.

A role that must detach calls :func:`detach` first thing. Every ``DaemonContext`` option is
stated: its guesses (skip detaching when stdin is a socket or the parent is PID 1; turn
SIGTERM into SystemExit anywhere) are wrong for a supervisor.
"""

from __future__ import annotations

import json
import os
import select
import time
from collections.abc import Iterable

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any


def detach(preserve: Iterable[int], stderr_path: str) -> None:
    """Become a daemon: double fork, new session, cwd '/', stdin/stdout to /dev/null.

    Steps, as PEP 3143 lists them, are done by ``DaemonContext.open()``; we choose:
    1. always detach (``detach_process=True``), whatever the parent is;
    2. keep the fds we pass along (lock, handshake, pipes) and close every other one;
    3. keep core dumps possible (``prevent_core=False``) so a crash can be studied;
    4. install no signal handlers: the role installs its own flag-setting ones;
    5. stderr appends to the role's log in the instance directory.
    """
    import daemon  # python-daemon; imported here so that other roles never load it

    stderr = open(stderr_path, "ab", buffering=0)
    context = daemon.DaemonContext(
        detach_process=True,
        working_directory="/",
        umask=0o077,
        prevent_core=False,
        files_preserve=[*preserve, stderr.fileno()],
        signal_map={},
        stdin=None,
        stdout=None,
        stderr=stderr,
        initgroups=False,
    )
    context.open()


class Handshake:
    """The write end: a role reports its pid, success, or the error that stopped it."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def send(self, **message: Any) -> None:
        if self.fd is None:
            return
        data = (json.dumps(message) + "\n").encode()
        try:
            os.write(self.fd, data)  # < PIPE_BUF: one atomic write
        except OSError:
            pass  # the caller is gone; nobody is waiting for the answer

    def close(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None


def read_handshake(fd: int, deadline: float) -> Iterable[dict[str, Any]]:
    """Yield the messages of the handshake pipe until EOF; TimeoutError past ``deadline``."""
    buffer = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                yield message
