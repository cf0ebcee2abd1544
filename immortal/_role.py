"""Entry point of the daemon and pump roles: ``python -m immortal._role JSON``.

Roles always start as fresh interpreters (never a fork of the caller, which may have
threads). The JSON argument is a ``roles.RoleArgs``: the role, the instance directory, the
fds passed in; ``standby ROLE FD`` instead waits for them on a socket
(``immortal/standby.py``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from . import bytecode

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from .roles import RoleArgs


def main(argv: list[str]) -> int:
    bytecode.settle()  # first: it may fill the cache and re-execute this process
    if argv[1] == "standby":  # started ahead of time: see immortal/standby.py
        return _standby(argv[2], int(argv[3]))
    from .roles import RoleArgs

    return _run(RoleArgs.from_json(json.loads(argv[1])))


def _standby(role: str, sock_fd: int) -> int:
    import importlib

    from . import standby

    # What the role will need, imported while the caller checks (the daemon forks the pump).
    for module in ("spec", "state", *(("daemon",) if role == "daemon" else ()), "pump"):
        importlib.import_module(f"immortal.{module}")
    received = standby.wait(sock_fd)
    if received is None:
        return 0  # not needed after all: nothing was created
    args, cwd = received
    os.chdir(cwd)
    from .roles import RoleArgs

    return _run(RoleArgs.from_json(args))


def _run(args: RoleArgs) -> int:
    if args.fds.listen:
        try:
            args = _settle(args)
        except OSError as exc:
            sys.stderr.write(f"immortal: {args.role}: cannot place the listen sockets: "
                             f"{exc}\n")
            return 1
    from .spec import Spec
    from .state import check_dir, read_json

    # Read again at each role start (a daemon exec'd after its death too): the directory
    # and spec.json must still be ours, or a forged spec would name the modules we import.
    try:
        check_dir(Path(args.dir))
        data = read_json(Path(args.dir) / "spec.json")
    except OSError as exc:
        sys.stderr.write(f"immortal: {args.role}: {exc}\n")
        return 1
    if data is None:
        sys.stderr.write(f"immortal: {args.role}: no spec.json in {args.dir}\n")
        return 1
    spec = Spec.from_json(data)
    # The caller's import path, so that monitors named 'package.module:Class' import here too.
    sys.path.extend(p for p in spec.sys_path if p not in sys.path)
    from . import succession

    if args.role == "daemon":
        return succession.main(spec, args)
    from . import pump

    # A pump whose daemon dies may become it in this process (succession.become).
    return pump.main(spec, args, succession.become)


def _settle(args: RoleArgs) -> RoleArgs:
    """The listen sockets at fds 3, 4, ... (``listen.settle``), before anything else is
    opened: a spawn then passes them where the target finds them, moving nothing."""
    from .listen import settle
    from .records import replace

    fds = args.fds
    assert fds.listen is not None
    others = [fd for fd in fds.numbers() if fd not in fds.listen]
    return replace(args, fds=fds.renumbered(settle(fds.listen, others)))


if __name__ == "__main__":
    # A role that fails raises out, to the interpreter's own exit and its traceback; one
    # that returns ends as a forked pump does: the client stopping the group waits for
    # this process to be gone.
    code = main(sys.argv)
    from .exiting import finish, leave

    finish()
    leave(code)
