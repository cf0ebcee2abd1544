"""A target that speaks the sd_notify protocol as libsystemd's ``sd_notify()`` does: one
datagram of ``KEY=VALUE`` lines to the unix socket named by ``NOTIFY_SOCKET`` (a path, or
the abstract namespace when it starts with ``@``), then it sleeps until it is stopped.

    notifier.py [--delay S] [--status TEXT] [--no-ready] [--from-child]

``--from-child`` sends from a child process (as ``systemd-notify`` does from a shell
script), which lives on until the target ends.
"""

from __future__ import annotations

import os
import socket
import sys
import time


def sd_notify(state: str) -> None:
    """libsystemd's sd_notify(0, state), in Python."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        raise SystemExit("notifier: NOTIFY_SOCKET is not set")
    if address[0] == "@":
        address = "\0" + address[1:]  # the abstract namespace
    elif address[0] != "/":
        raise SystemExit(f"notifier: NOTIFY_SOCKET is neither a path nor abstract: {address}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.sendto(state.encode(), address)


def main(argv: list[str]) -> None:
    delay, status, ready, child = 0.0, None, True, False
    while argv:
        word = argv.pop(0)
        if word == "--delay":
            delay = float(argv.pop(0))
        elif word == "--status":
            status = argv.pop(0)
        elif word == "--no-ready":
            ready = False
        elif word == "--from-child":
            child = True
    print(f"notifier {os.getpid()} up", flush=True)
    time.sleep(delay)
    lines = [f"STATUS={status}"] if status is not None else []
    if ready:
        lines.insert(0, "READY=1")
    if lines:
        if child and os.fork() == 0:
            sd_notify("\n".join(lines))
            time.sleep(3600)  # killed with the target's process group
            os._exit(0)
        elif not child:
            sd_notify("\n".join(lines))
    print("notified", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main(sys.argv[1:])
