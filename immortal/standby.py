"""The first role's interpreter, started while the caller is still checking its input.

``immortal run`` spends a while importing and checking before it can start the first role,
which then spends about as long starting up and importing. The two can overlap: the command
starts the role at once, in standby. The role imports what it will need and waits on a
socket. It creates nothing and detaches from nothing until the caller, its checks passed,
sends it its arguments and files; if a check fails, the caller kills it (it has done
nothing yet) and reaps it. If the caller dies first, the role reads end-of-file and exits.
"""

from __future__ import annotations

import os
import socket
import subprocess

from . import bytecode

# This module is imported first thing by the command (see early()): json, pathlib and
# typing wait until they are needed.
TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)
if TYPE_CHECKING:
    from typing import Any

FILES = ("handshake", "lock", "log")  #: what the caller sends along, in this order
LISTEN_MAX = 64  #: listen sockets sent after them at most (addresses.MAX_LISTEN)

_pending: list[Standby] = []


def role_env() -> dict[str, str]:
    """The roles' environment: ours, with this copy of immortal importable."""
    env = dict(os.environ)
    # A group started from inside another group's target is not part of it: its roles do
    # not carry that group's token (see immortal/orphans.py).
    env.pop("IMMORTAL_GROUP_DIR", None)
    package_root = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    paths = [package_root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


class Standby:
    """A role interpreter waiting for its arguments; see the module's docstring."""

    def __init__(self, role: str) -> None:
        self.role = role
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.popen = subprocess.Popen(
                [*bytecode.interpreter(), "-m", "immortal._role", "standby", role,
                 str(theirs.fileno())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=[theirs.fileno()], env=role_env(), cwd="/", start_new_session=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock: socket.socket | None = ours

    def go(self, args: dict[str, Any], files: dict[str, int], cwd: str,
           listen: tuple[int, ...] = ()) -> bool:
        """Hand the role its arguments and files, then the ``listen`` sockets, in order;
        False if it is gone (start one anew)."""
        sock, self.sock = self.sock, None
        if sock is None:
            return False
        import json

        try:
            message = json.dumps({"args": args, "cwd": cwd, "files": list(files),
                                  "listen": len(listen)}).encode()
            socket.send_fds(sock, [message], [*files.values(), *listen])
            return True
        except OSError:
            self._end()
            return False
        finally:
            sock.close()

    def cancel(self) -> None:
        """The caller's checks failed, or it was not needed: end the role, which has done
        nothing, and reap it."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            self._end()
        if self in _pending:
            _pending.remove(self)

    def _end(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()


def prepare(role: str) -> Standby | None:
    """Start ``role`` in standby for this process's next ``start()``; None if it cannot."""
    try:
        standby = Standby(role)
    except OSError:
        return None  # start() starts the role itself, as without a standby
    _pending.append(standby)
    return standby


def early(argv: list[str]) -> None:
    """Prepare the first role of ``immortal run ARGV`` before the command imports anything
    else; ``argv`` is only glanced at, and a wrong guess costs a standby that is cancelled."""
    words = argv[:argv.index("--")] if "--" in argv else argv
    if not words or words[0] != "run" or "-h" in words or "--help" in words:
        return
    if any(len(word) >= 6 and "--foreground".startswith(word) for word in words):
        return  # the command's own process becomes the daemon: nothing to start ahead
    strategy = "daemon"
    for index, word in enumerate(words):
        option, equals, value = word.partition("=")
        if option == "-s" or len(option) >= 5 and "--strategy".startswith(option):
            if not equals:
                value = words[index + 1] if index + 1 < len(words) else ""
            strategy = value
        elif option.startswith("-s") and not option.startswith("--"):
            strategy = word[2:]  # -sVALUE
    if strategy in ("daemon", "unattached"):
        prepare("daemon" if strategy == "daemon" else "pump")


def pending(role: str) -> Standby | None:
    """The standby prepared for ``role`` and not yet claimed, if any."""
    return next((s for s in _pending if s.role == role and s.sock is not None), None)


def pending_all() -> list[Standby]:
    """Every standby prepared and not claimed (the caller cancels them when done)."""
    return [s for s in _pending if s.sock is not None]


def claim(role: str) -> Standby | None:
    """The standby prepared for ``role``, if any; from then on the caller's to use."""
    standby = pending(role)
    if standby is not None:
        _pending.remove(standby)
    return standby


def wait(sock_fd: int) -> tuple[dict[str, Any], str] | None:
    """In the role: its arguments (the JSON of a ``roles.RoleArgs``) and working directory,
    once the caller sends them; the files it sent are put in ``args["fds"]`` (the listen
    sockets as ``listen``), and the log becomes stdout and stderr."""
    with socket.socket(fileno=sock_fd) as sock:
        try:
            data, fds, _, _ = socket.recv_fds(sock, 1 << 20, len(FILES) + LISTEN_MAX)
        except OSError:
            return None
    if not data:
        return None  # the caller went away, or found its input wrong
    import json

    message = json.loads(data)
    named = len(message["files"])
    files: dict[str, Any] = dict(zip(message["files"], fds[:named]))
    if message.get("listen"):
        files["listen"] = fds[named:]
    args = message["args"]
    log = files.pop("log", None)
    if log is not None:
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
    args.setdefault("fds", {}).update(files)
    return args, message["cwd"]
