"""Listening sockets shared by a group's targets, handed over by systemd socket activation.

The sockets are bound once, in the caller (:func:`bind`), so that an address in use or a
port we may not take is the caller's error, before anything detaches. The first role is
handed them with its other files, and from then on the supervisors hold them and never
accept on them: the daemon across its pumps' deaths, a pump whose daemon died when it
takes its place, an ``unattached`` or ``development`` pump itself. A target's restart
therefore reuses the same sockets: a client that connects meanwhile waits in the backlog,
and is served by the next target.

Every role keeps the ``n`` sockets at fds 3 to ``3 + n - 1``, in the order given
(:func:`settle`, once, when a role starts as a fresh interpreter; a fork or an ``exec``
keeps the numbers). A spawn then passes them at their own numbers, the placement the
protocol wants: nothing is moved in the child, where a ``dup2`` could land on
subprocess's own error pipe or on the target's other files.

What one spawn gets is :func:`activation`, a pure function of the sockets, the instance
number and the group: the environment (``LISTEN_FDS``, ``LISTEN_FDNAMES``, ``LISTEN_PID``
set in the child, ``IMMORTAL_GROUP``, ``IMMORTAL_INSTANCE``) and the fd placement.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
from collections.abc import Iterable, Sequence

from .addresses import Address, fdnames, parse
from .errors import ListenError
from .records import Record

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any

FIRST = 3  #: SD_LISTEN_FDS_START: the first socket's fd in the target
#: The protocol's variables: set for a group that listens, removed from every other
#: target's environment (they describe whoever started the caller, not the target).
PROTOCOL = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
GROUP_ENV = "IMMORTAL_GROUP"  #: the group's name, in every target's environment
INSTANCE_ENV = "IMMORTAL_INSTANCE"  #: the target's instance number (0: a single target)
PROGRAM_ENV = "IMMORTAL_PROGRAM"  #: the target's program, in a group of several programs


class Activation(Record):
    """What one spawn gets: ``env`` to set, ``fds`` (the target's fd to ours), and
    whether ``LISTEN_PID`` is set to the target's own pid in the child before its exec."""

    env: dict[str, str]
    fds: dict[int, int]
    pid: bool

    def environ(self, base: dict[str, str]) -> dict[str, str]:
        """``base`` (the group's target environment) for this spawn."""
        env = {key: value for key, value in base.items() if key not in PROTOCOL}
        env.update(self.env)
        return env


def activation(sockets: Sequence[int], addresses: Sequence[str], instance: int,
               group: str) -> Activation:
    """The environment and fd placement of one spawn of instance ``instance`` of ``group``,
    whose listen ``sockets`` (our fds) were bound on ``addresses``, in that order. Every
    instance gets the same sockets at the same numbers."""
    env = {GROUP_ENV: group, INSTANCE_ENV: str(instance)}
    if sockets:
        env["LISTEN_FDS"] = str(len(sockets))
        env["LISTEN_FDNAMES"] = fdnames(addresses)
    return Activation(env, {FIRST + index: fd for index, fd in enumerate(sockets)},
                      bool(sockets))


# ----------------------------------------------------------------- the caller
def bind(addresses: Sequence[str]) -> tuple[list[socket.socket], tuple[str, ...]]:
    """Bind and listen on every address, in order: the sockets, and the addresses as bound
    (a port 0 replaced by the port the system chose). On any failure, what was bound is
    closed and removed, and ``ListenError`` names the address."""
    sockets: list[socket.socket] = []
    bound: list[str] = []
    try:
        for text in addresses:
            sock, final = _bind_one(parse(text, "/"))
            sockets.append(sock)
            bound.append(final)
    except BaseException:
        close(sock.detach() for sock in sockets)
        release(bound)
        raise
    return sockets, tuple(bound)


def _bind_one(address: Address) -> tuple[socket.socket, str]:
    text = str(address)
    where: Any
    if address.kind == "unix":
        _clear_stale(address.path, text)
        family, where, proto = socket.AF_UNIX, address.path, 0
    else:
        try:
            found = socket.getaddrinfo(address.host, address.port, socket.AF_UNSPEC,
                                       socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise ListenError(f"cannot listen on {text!r}: the host {address.host!r} is "
                              f"not known ({exc.strerror})", text) from None
        family, _, proto, _, where = found[0]
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    try:
        if family != socket.AF_UNIX:
            # A restart of the whole group binds again while the last one's connections
            # are in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(where)
        try:
            sock.listen(socket.SOMAXCONN)
        except OSError:
            if family == socket.AF_UNIX:
                os.unlink(address.path)
            raise
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {text!r}: {_why(exc)}", text) from None
    if address.kind == "tcp" and address.port == 0:
        text = str(Address("tcp", address.host, sock.getsockname()[1]))
    return sock, text


def _why(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "the address is in use (another process listens on it)"
    if exc.errno == errno.EACCES:
        return ("permission denied (ports below 1024 need privileges; a unix socket, a "
                "directory we may write)")
    return exc.strerror or str(exc)


def _clear_stale(path: str, text: str) -> None:
    """Remove a socket file nobody listens on (left by a process killed without removing
    it); refuse one somebody listens on, or a file that is no socket."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ListenError(f"cannot listen on {text!r}: {_why(exc)}", text) from None
    if not stat.S_ISSOCK(info.st_mode):
        raise ListenError(f"cannot listen on {text!r}: {path!r} exists and is not a socket; "
                          "remove it or choose another path", text)
    if _listened(path) is not False:
        return  # the bind says why it cannot take it
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ListenError(f"cannot listen on {text!r}: the stale socket {path!r} cannot be "
                          f"removed ({_why(exc)})", text) from None


def _listened(path: str) -> bool | None:
    """Whether a process listens on the unix socket ``path``: None if it cannot be told."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except BlockingIOError:  # its backlog is full: somebody listens
        return True
    except OSError:
        return None
    finally:
        probe.close()
    return True


def release(addresses: Iterable[str]) -> None:
    """Remove the socket files of the unix ``addresses`` that nobody listens on any more:
    the group's own, once it and its targets closed them (never a socket another process
    bound at the path since)."""
    for text in addresses:
        address = parse(text, "/")
        if address.kind != "unix":
            continue
        try:
            if stat.S_ISSOCK(os.lstat(address.path).st_mode) \
                    and _listened(address.path) is False:
                os.unlink(address.path)
        except OSError:
            pass


def close(fds: Iterable[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


# ----------------------------------------------------------------- the roles
def settle(sockets: Sequence[int], others: Iterable[int]) -> dict[int, int]:
    """Put ``sockets`` at fds 3, 4, ... in order, moving ``others`` (the role's other
    files) out of the way: ``{old: new}`` for every fd that moved. Run once when a role
    starts as a fresh interpreter, before it opens anything: an fd in the range that is
    neither is an OSError (something unknown holds it, and would lose it)."""
    top = FIRST + len(sockets)
    if list(sockets) == list(range(FIRST, top)):
        return {}
    others = set(others)
    for number in range(FIRST, top):
        if _is_open(number) and number not in sockets and number not in others:
            raise OSError(errno.EBUSY, f"fd {number} is held by something unknown; the "
                          f"listen sockets go to fds {FIRST} to {top - 1}")
    moved: dict[int, int] = {}
    for fd in sorted(others):
        if FIRST <= fd < top:
            moved[fd] = _above(fd, top, keep_inheritable=True)
    staged = [_above(fd, top) for fd in sockets]
    for index, (fd, temporary) in enumerate(zip(sockets, staged)):
        os.dup2(temporary, FIRST + index, inheritable=False)
        os.close(temporary)
        moved[fd] = FIRST + index
    return moved


def _above(fd: int, low: int, keep_inheritable: bool = False) -> int:
    """``fd`` moved to the lowest free number from ``low`` up (the old one closed)."""
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, low)
    if keep_inheritable and os.get_inheritable(fd):
        os.set_inheritable(new, True)
    os.close(fd)
    return new


def _is_open(fd: int) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_GETFD)
    except OSError:
        return False
    return True
