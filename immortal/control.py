"""The control socket: an owner-only unix socket served by the group's root process.

Requests and answers are one JSON object per line: the commands and their arguments are
``commands``'s, which checks them.

Any request may carry "expires": the wall-clock time (``time.time()``) at which its client
stops waiting for the answer. A request read past it is answered ``expired`` and not carried
out: a root that was frozen or swamped meanwhile would otherwise carry out, once it runs
again, what its client reported as not done (and may have done by other means: a signal
sent to the targets directly, a stop by signals). ``request`` sets it.

Answers are ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. The socket lives in
the 0700 instance directory and is created 0600 under ``umask(0o177)`` (no bind-then-chmod
window); every connection's peer uid (``_linux.peer_uid``) must be ours or root's; a
request is at most 64 KiB; garbage gets an error answer, never a crash.

Nobody can lock the socket up: a client has ``IDLE`` seconds after it connects (or after
its last answer) to send a whole request, however slowly its bytes come, or it is dropped;
when ``MAX_CLIENTS`` are connected, a new one takes the place of the one that has waited
longest; an answer the client does not read at once is its loss; and running out of files
(``EMFILE`` from ``accept``) drops clients instead of killing the role.
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import socket
import sys
import time

from ._linux import peer_pid, peer_uid
from .commands import check_request
from .errors import ImmortalError, NoAnswer, NotRunning

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any

    Handler = Callable[[dict[str, Any]], dict[str, Any]]

MAX_REQUEST = 64 * 1024
IDLE = 1.0  #: seconds a client has to send a whole request
MAX_CLIENTS = 32
PAUSE = 0.1  #: seconds the listener rests when no file is left and no client to drop
#: accept() errors that mean "no file left for a new connection"
NO_FILES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def receive(sock: socket.socket) -> bytes | None:
    """What a non-blocking socket has for us: bytes, b"" at EOF (or a broken peer), or None
    when nothing is there after all."""
    try:
        return sock.recv(65536)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""


class _Client:
    def __init__(self, sock: socket.socket, refused: bool = False) -> None:
        self.sock = sock
        # Another uid: every request it sends is answered "permission denied" (read, then
        # refused: closing on unread data would reset the connection before the answer).
        self.refused = refused
        self.overflow = False  # inside a request over MAX_REQUEST, discarding it
        self.buffer = b""
        self.deadline = time.monotonic() + IDLE  # for a whole request; renewed by an answer


class Server:
    """Serves the control socket from a role's selector loop; no thread of its own."""

    def __init__(self, path: Path, selector: selectors.BaseSelector, handler: Handler) -> None:
        self.path = path
        self.selector = selector
        self.handler = handler
        self.clients: dict[int, _Client] = {}
        self.limit = MAX_CLIENTS  # lowered when the process runs out of files
        self.paused_until: float | None = None  # the listener rests until then
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener = listener
        #: the socket is in place; not when the directory cannot be written (made
        #: read-only or immutable under a running group): the role then supervises on
        #: without it, and a client falls back to signals, as for a frozen daemon
        self.bound = False
        try:
            try:
                os.unlink(path)  # a socket left by a dead predecessor; we hold the group lock
            except FileNotFoundError:
                pass
            old = os.umask(0o177)
            try:
                listener.bind(str(path))  # born 0600 (0777 & ~0177): no window to chmod
            finally:
                os.umask(old)
        except OSError as exc:
            from . import rolelog  # noqa: PLC0415 - a failure's path: clients never load it

            rolelog.report("control", f"immortal: cannot make the control socket {path} "
                           f"({exc}); the group runs on without it\n")
            return
        self.bound = True
        listener.listen(64)
        listener.setblocking(False)
        selector.register(listener, selectors.EVENT_READ, self._accept)

    def next_deadline(self) -> float | None:
        """When the loop must call :meth:`drop_idle` (a client's deadline, or the end of a
        pause of the listener), for its select timeout; None while nobody is connected."""
        times = [c.deadline for c in self.clients.values()]
        if self.paused_until is not None:
            times.append(self.paused_until)
        return min(times) if times else None

    def drop_idle(self) -> None:
        now = time.monotonic()
        for client in list(self.clients.values()):
            if now >= client.deadline:
                self._drop(client)
        if self.paused_until is not None and now >= self.paused_until:
            self.paused_until = None
            self.selector.register(self.listener, selectors.EVENT_READ, self._accept)

    def abandon(self) -> None:
        """Close the sockets and nothing else (the path is another daemon's now)."""
        for client in list(self.clients.values()):
            client.sock.close()
        self.listener.close()

    def close(self) -> None:
        for client in list(self.clients.values()):
            self._drop(client)
        if not self.bound:
            self.listener.close()
            return
        if self.paused_until is None:
            self.selector.unregister(self.listener)
        self.listener.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass  # gone, or the directory is no longer ours to write

    def _accept(self, listener: socket.socket) -> None:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno in NO_FILES:
                self._out_of_files()
            return  # else a connection that was reset before we took it
        try:
            uid = peer_uid(sock)
            sock.setblocking(False)
        except OSError:
            sock.close()
            return
        while len(self.clients) >= self.limit:
            self._drop(self._oldest())
        client = _Client(sock, refused=uid is not None and uid not in (os.getuid(), 0))
        self.clients[sock.fileno()] = client
        self.selector.register(sock, selectors.EVENT_READ, self._readable)

    def _oldest(self) -> _Client:
        return min(self.clients.values(), key=lambda c: c.deadline)

    def _out_of_files(self) -> None:
        """No file left for a connection: make room by dropping the clients that waited
        longest (one for the newcomer, one for a file its answer may need to read), and
        serve fewer at a time from now on. With no client to drop, the listener rests a
        moment instead of waking the loop at once, again and again."""
        if self.clients:
            for _ in range(min(2, len(self.clients))):
                self._drop(self._oldest())
            self.limit = max(1, len(self.clients) + 1)
            return
        self.selector.unregister(self.listener)
        self.paused_until = time.monotonic() + PAUSE

    def _readable(self, sock: socket.socket) -> None:
        client = self.clients.get(sock.fileno())
        if client is None:
            return
        data = receive(sock)
        if data is None:
            return
        if not data:
            self._drop(client)
            return
        if client.overflow:  # the rest of a request that is too long: discard to its end
            if b"\n" not in data:
                return
            data = data.split(b"\n", 1)[1]
            client.overflow = False
            if not self._reply(client, {"ok": False,
                                        "error": f"request over {MAX_REQUEST} bytes"}):
                return
        client.buffer += data
        while b"\n" in client.buffer:
            line, client.buffer = client.buffer.split(b"\n", 1)
            if not self._answer(client, line):
                return
        if len(client.buffer) > MAX_REQUEST:
            # Bounded memory: forget it, and answer once its newline comes.
            client.buffer = b""
            client.overflow = True

    def _answer(self, client: _Client, line: bytes) -> bool:
        if client.refused:
            answer: dict[str, Any] = {"ok": False, "error": "permission denied"}
        elif len(line) > MAX_REQUEST:
            answer = {"ok": False, "error": f"request over {MAX_REQUEST} bytes"}
        else:
            try:
                request = check_request(json.loads(line))
                if _expired(request):
                    answer = {"ok": False, "error": "expired: its client no longer waits"}
                else:
                    answer = {"ok": True, **self.handler(request)}
            except (ValueError, ImmortalError) as exc:  # JSON errors are ValueErrors
                answer = {"ok": False, "error": str(exc)}
            except OSError as exc:  # out of files, say, while reading status.json
                answer = {"ok": False, "error": f"cannot answer now: {exc}"}
        return self._reply(client, answer)

    def _reply(self, client: _Client, answer: dict[str, Any]) -> bool:
        data = (json.dumps(answer) + "\n").encode()
        try:
            # Never waits: a client that does not read its answers gets no more of our
            # time (the socket's buffer holds many answers).
            sent = client.sock.send(data)
        except OSError:
            sent = -1
        if sent != len(data):
            self._drop(client)
            return False
        client.deadline = time.monotonic() + IDLE
        return True

    def _drop(self, client: _Client) -> None:
        self.clients.pop(client.sock.fileno(), None)
        try:
            self.selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()


def _expired(request: dict[str, Any]) -> bool:
    """Whether ``request``'s client stopped waiting before it was read (``expires``, taken
    out of it); the role's log says so."""
    expires = request.pop("expires", None)
    if not expires or time.time() <= expires:
        return False
    sys.stderr.write(f"immortal: a {request['cmd']!r} request was read "
                     f"{time.time() - expires:.1f} s after its client stopped waiting: not "
                     "carried out\n")
    return True


def _connect(sock: socket.socket, path: Path, timeout: float) -> None:
    # A unix socket with a timeout connects without blocking: a full backlog answers EAGAIN
    # at once instead of waiting. Wait for room, as a blocking connect would.
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock.connect(str(path))
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise NoAnswer(f"{str(path)!r}: the server's backlog stays full") from None
            time.sleep(0.005)


def request(path: Path, message: dict[str, Any], timeout: float = 5.0,
            expiring: bool = True) -> dict[str, Any]:
    """Send one command and return the answer; NotRunning if nobody serves the socket,
    NoAnswer if its server does not answer within ``timeout`` (frozen, or swamped).
    ``expiring``: with the time its wait ends (``expires``), sent again without it to a
    group started by an immortal that refuses the key."""
    return ask(path, message, timeout, expiring)[0]


def ask(path: Path, message: dict[str, Any], timeout: float = 5.0,
        expiring: bool = True) -> tuple[dict[str, Any], int | None]:
    """``request``, and the pid of the process that serves the socket as this process's
    pid namespace numbers it (``_linux.peer_pid``; None if unknown): a group whose roles
    run in another namespace (a container sharing the home) names its pids in its own."""
    peer = None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            _connect(sock, path, timeout)
            peer = peer_pid(sock)
            expires = time.time() + timeout  # when the wait for the answer, from now, ends
            sent = {**message, "expires": expires} if expiring else message
            sock.sendall((json.dumps(sent) + "\n").encode())
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (FileNotFoundError, ConnectionError) as exc:
            # Refused or reset: nobody serves it, or its server died (a successor may be
            # binding it anew within a moment).
            raise NotRunning(f"nobody answers on {str(path)!r}: the group is not running "
                             f"({exc.strerror})") from None
        except TimeoutError:
            raise NoAnswer(f"no answer on {str(path)!r} within {timeout:g} s: the group's "
                           "root process is frozen or swamped") from None
    finally:
        sock.close()
    if not data:
        raise NotRunning(f"the group closed {str(path)!r} without an answer")
    answer = json.loads(data)
    if not answer.get("ok") and expiring and "takes no expires" in str(answer.get("error")):
        return ask(path, message, timeout, expiring=False)
    if not answer.get("ok"):
        raise ImmortalError(f"the group refused {message.get('cmd')!r}: {answer.get('error')}")
    return answer, peer
