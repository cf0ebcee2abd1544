"""The control socket: an owner-only unix socket served by the group's root process.

Requests and answers are one JSON object per line. Only these commands exist::

    {"cmd": "status"}
    {"cmd": "stop", "timeout": 10.0}      grace period before KILL (optional)
    {"cmd": "restart", "timeout": 10.0}
    {"cmd": "signal", "signal": "USR1"}   to the target's process group
    {"cmd": "reopen"}                     monitors reopen their files (after logrotate)

Answers are ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. The socket lives in
the 0700 instance directory and is created 0600 under ``umask(0o177)`` (no bind-then-chmod
window); every connection's ``SO_PEERCRED`` uid must be ours or root's; a request is at most
64 KiB; a client idle for 10 s is dropped; garbage gets an error answer, never a crash.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import struct
import time

from .errors import ImmortalError, InvalidSpec, NotRunning

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any

    Handler = Callable[[dict[str, Any]], dict[str, Any]]

COMMANDS = ("status", "stop", "restart", "signal", "reopen")
MAX_REQUEST = 64 * 1024
IDLE = 10.0
MAX_CLIENTS = 32


def receive(sock: socket.socket) -> bytes | None:
    """What a non-blocking socket has for us: bytes, b"" at EOF (or a broken peer), or None
    when nothing is there after all."""
    try:
        return sock.recv(65536)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""


def parse_signal(value: object) -> int:
    """A signal from a name ("HUP", "SIGHUP") or a number; InvalidSpec otherwise."""
    if isinstance(value, bool):
        raise InvalidSpec(f"'signal' must be a signal name or number (got {value!r})")
    if isinstance(value, int):
        try:
            return int(signal.Signals(value))
        except ValueError:
            raise InvalidSpec(f"'signal' {value} is no signal") from None
    if isinstance(value, str):
        name = value.upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        try:
            return int(signal.Signals[name])
        except KeyError:
            raise InvalidSpec(f"'signal' {value!r} is no signal name (e.g. HUP, USR1)") \
                from None
    raise InvalidSpec(f"'signal' must be a signal name or number (got {value!r})")


def check_request(request: object) -> dict[str, Any]:
    """The request if it is one of the allowed commands with valid arguments."""
    if not isinstance(request, dict):
        raise InvalidSpec("a request must be a JSON object")
    cmd = request.get("cmd")
    if cmd not in COMMANDS:
        raise InvalidSpec(f"unknown command {cmd!r}; commands: {', '.join(COMMANDS)}")
    allowed = {"cmd"} | {"stop": {"timeout"}, "restart": {"timeout"},
                         "signal": {"signal"}}.get(cmd, set())
    extra = set(request) - allowed
    if extra:
        raise InvalidSpec(f"command {cmd!r} takes no {', '.join(sorted(extra))}")
    if "timeout" in request:
        timeout = request["timeout"]
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
                or not 0 <= timeout <= 86400:
            raise InvalidSpec(f"'timeout' must be a number in [0, 86400] (got {timeout!r})")
    if cmd == "signal":
        request["signal"] = parse_signal(request.get("signal"))
    return request


class _Client:
    def __init__(self, sock: socket.socket, refused: bool = False) -> None:
        self.sock = sock
        # Another uid: every request it sends is answered "permission denied" (read, then
        # refused: closing on unread data would reset the connection before the answer).
        self.refused = refused
        self.overflow = False  # inside a request over MAX_REQUEST, discarding it
        self.buffer = b""
        self.seen = time.monotonic()


class Server:
    """Serves the control socket from a role's selector loop; no thread of its own."""

    def __init__(self, path: Path, selector: selectors.BaseSelector, handler: Handler) -> None:
        self.path = path
        self.selector = selector
        self.handler = handler
        self.clients: dict[int, _Client] = {}
        try:
            os.unlink(path)  # a socket left by a dead predecessor; we hold the group lock
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            listener.bind(str(path))  # born 0600 (0777 & ~0177): there is no window to chmod
        finally:
            os.umask(old)
        listener.listen(64)
        listener.setblocking(False)
        self.listener = listener
        selector.register(listener, selectors.EVENT_READ, self._accept)

    def next_deadline(self) -> float | None:
        """When the oldest idle client must be dropped, for the loop's select timeout."""
        if not self.clients:
            return None
        return min(c.seen for c in self.clients.values()) + IDLE

    def drop_idle(self) -> None:
        now = time.monotonic()
        for client in list(self.clients.values()):
            if now - client.seen >= IDLE:
                self._drop(client)

    def close(self) -> None:
        for client in list(self.clients.values()):
            self._drop(client)
        self.selector.unregister(self.listener)
        self.listener.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _accept(self, listener: socket.socket) -> None:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        if len(self.clients) >= MAX_CLIENTS:
            self._send(sock, {"ok": False, "error": "too many clients"})
            sock.close()
            return
        sock.setblocking(False)
        client = _Client(sock, refused=uid not in (os.getuid(), 0))
        self.clients[sock.fileno()] = client
        self.selector.register(sock, selectors.EVENT_READ, self._readable)

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
        client.seen = time.monotonic()
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
                answer = {"ok": True, **self.handler(request)}
            except (ValueError, ImmortalError) as exc:  # JSON errors are ValueErrors
                answer = {"ok": False, "error": str(exc)}
        return self._reply(client, answer)

    def _reply(self, client: _Client, answer: dict[str, Any]) -> bool:
        if not self._send(client.sock, answer):
            self._drop(client)
            return False
        return True

    def _send(self, sock: socket.socket, answer: dict[str, Any]) -> bool:
        data = (json.dumps(answer) + "\n").encode()
        try:
            sock.setblocking(True)
            sock.settimeout(1.0)  # a client that does not read its answer is dropped
            sock.sendall(data)
            sock.setblocking(False)
        except OSError:
            return False
        return True

    def _drop(self, client: _Client) -> None:
        self.clients.pop(client.sock.fileno(), None)
        try:
            self.selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()


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
                raise TimeoutError(f"{str(path)!r}: the server's backlog stays full") from None
            time.sleep(0.005)


def request(path: Path, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one command and return the answer; NotRunning if nobody serves the socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            _connect(sock, path, timeout)
            sock.sendall((json.dumps(message) + "\n").encode())
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
    finally:
        sock.close()
    if not data:
        raise NotRunning(f"the group closed {str(path)!r} without an answer")
    answer = json.loads(data)
    if not answer.get("ok"):
        raise ImmortalError(f"the group refused {message.get('cmd')!r}: {answer.get('error')}")
    return answer
