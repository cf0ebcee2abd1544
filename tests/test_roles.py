"""The role protocol (``immortal/roles.py``): the role arguments, the group's files and the
lifeline messages, as records that survive their trip through JSON. No process needed."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from immortal import roles
from immortal.events import DAEMON_RESTART, PUMP_START, ExitStatus
from immortal.roles import (Adopt, Command, Exited, Fds, Finish, Hello, Reaped, Rewrite,
                            RoleArgs, Spawning, Started, Target, decode, role_command)
from immortal.state import Status

EXIT = ExitStatus(code=3, pid=42, uptime=1.5)

MESSAGES = [Spawning(12345), Spawning(None), Target(42, 1700000000.5), Exited(42), Started(),
            Finish(), Hello(), Rewrite(), Reaped(42, EXIT),
            Command({"cmd": "stop", "timeout": 2.0})]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_each_message_comes_back_as_it_was_sent(message):
    assert decode(message.to_bytes()) == message


def test_the_wire_keeps_the_keys_each_side_reads():
    assert json.loads(Target(42, 1.5).to_bytes()) == {"target": 42, "started_wall": 1.5}
    assert json.loads(Spawning(None).to_bytes()) == {"spawning": None}
    assert json.loads(Finish().to_bytes()) == {"finish": True}
    assert json.loads(Started().to_bytes()) == {"started": True}
    assert json.loads(Command({"cmd": "signal", "signal": 1}).to_bytes()) == {
        "cmd": "signal", "signal": 1}
    assert json.loads(Reaped(42, EXIT).to_bytes())["status"] == EXIT.to_json()


@pytest.mark.parametrize("data", [b"", b"not json", b"[1]", b'{"unknown": 1}'])
def test_what_is_no_message_decodes_to_none(data):
    assert decode(data) is None


def test_role_args_come_back_from_their_command_line():
    args = RoleArgs("pump", "/home/x/g", DAEMON_RESTART,
                    fds=Fds(lock=3, out=(4, 5), err=(6, 7), journal=8, channel=(9, 10),
                            lifeline=11),
                    adopt=Adopt(42, 1.5, EXIT), message_file="/home/x/g/pump.log.1",
                    daemon_pid=7, fresh=True)
    argv = role_command(args)
    assert argv[-3:-1] == ["-m", "immortal._role"]
    data = json.loads(argv[-1])
    assert data["role"] == "pump"  # what ps and the chaos suite read
    assert RoleArgs.from_json(data) == args


def test_a_short_command_line_takes_the_defaults():
    args = RoleArgs.from_json({"role": "pump", "dir": "/d", "detach": False, "fds": {}})
    assert args == RoleArgs("pump", "/d")
    assert args.why == PUMP_START and args.adopt is None and args.fds == Fds()


def test_the_fds_to_keep_are_every_fd_held():
    fds = Fds(lock=3, out=(4, 5), err=(6, 7), journal=8, channel=None, handshake=12,
              pump=13, listen=(14, 15))
    assert fds.numbers() == [3, 4, 5, 6, 7, 8, 12, 13, 14, 15]
    assert Fds().numbers() == []
    assert Fds.from_json(fds.to_json()) == fds


def test_fds_renumbered_follow_the_files_that_moved():
    fds = Fds(lock=3, out=(9, 5), listen=(10, 4))
    assert fds.renumbered({3: 11, 10: 3, 4: 4}) == Fds(lock=11, out=(9, 5), listen=(3, 4))


def test_status_json_keeps_its_keys():
    stored = Status("g", "running").to_json(stored=True)
    assert set(stored) == {
        "name", "state", "pids", "restarts", "spawned", "last_exit", "next_restart_at",
        "reason", "strategy", "started_at", "target_started_at", "output", "directory",
        "start_times", "dropped", "monitors", "ready", "notify_status", "listen"}


def _imports(module: str) -> set[str]:
    tree = ast.parse((Path(roles.__file__).parent / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found.add(node.module or "")
            found.update(alias.name for alias in node.names if not node.module)
    return found


def test_the_pump_does_not_import_the_daemon():
    assert "daemon" not in _imports("pump")
    assert not {"daemon", "pump"} & _imports("roles")
