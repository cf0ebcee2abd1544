"""A group's record (``spec.json``) starts it again with every option it was given: after
``save``, every process of it killed, and ``resurrect``; by ``start-recorded`` once it
stopped; in the foreground, as a systemd unit runs it. For a group of one program and for
a group of several (``start_group``), with each option set away from its default.
"""

from __future__ import annotations

import inspect
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import LONG, SHORT, TALKER
from immortal.launcher import start
from immortal.recorded import arguments, options, programs, record
from immortal.spec import Program
from immortal.state import read_status
from test_boot import ANALYZE, cli, kill_everything, needs_analyze, ok, unit_lines
from test_sdnotify import Manager

pytestmark = pytest.mark.timeout(180)

ROOT = os.geteuid() == 0
NOBODY = "nobody" in {entry.pw_name for entry in pwd.getpwall()}
#: who the targets run as, where that can be (root, and a user 'nobody')
AS_NOBODY = ROOT and NOBODY


@pytest.fixture
def stopped_at_end(home: Path) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        cli(home, "stop", name)


def recorded(home: Path, name: str) -> dict[str, Any]:
    return json.loads((home / name / "spec.json").read_text())


def again_the_same(home: Path, name: str, before: dict[str, Any]) -> None:
    """``save``, every process killed, ``resurrect``; then a stop and ``start-recorded``:
    the record the same each time, every option."""
    ok(cli(home, "save"))
    kill_everything(home, name)
    assert not read_status(home / name).running
    said = ok(cli(home, "resurrect"))
    assert f"started {name!r}" in said
    assert read_status(home / name).running
    assert recorded(home, name) == before
    ok(cli(home, "stop", name))
    ok(cli(home, "start-recorded", name))
    assert read_status(home / name).running
    assert recorded(home, name) == before


def test_the_record_gives_back_every_keyword_of_start():
    """A new keyword of ``start()`` (or field of a program) must reach the record's
    arguments: what ``start()`` takes beside them is ``capture`` (development only) and
    the other spelling of ``monitors``; what a program records beside them follows from
    them (``log_path``) or is kept as recorded (``variables``, ``environment``: a
    configuration file's)."""
    keywords = set(inspect.signature(start).parameters) - {"unknown"}
    assert keywords - set(arguments(record_of_one())) == {"capture", "monitor", "options"}
    assert set(options(record_of_one())) == set(Program._fields) - {
        "name", "log_path", "variables", "environment"}


def record_of_one() -> Any:
    from immortal.spec import Spec, Strategy

    return Spec(name="x", file="/bin/sleep", args=(), strategy=Strategy.DAEMON,
                monitors=(), env={}, cwd="/", directory="/tmp/x")


def test_every_option_of_a_group_of_one_survives_its_record(home, tmp_path, stopped_at_end):
    stopped_at_end.append("every")
    watched = tmp_path / "watched"
    watched.mkdir()
    user = ["--user", "nobody", "--group", "nogroup"] if AS_NOBODY else []
    ok(cli(home, "run", "-n", "every", "-w", "2", "--exec", "/usr/bin/env", "--cwd", "/",
           "-e", "MODE=every", "--umask", "027", "--stop-timeout", "3",
           "--start-timeout", "20", "--ready", "uptime:0.5", "--ready-timeout", "9",
           "--listen", "tcp://127.0.0.1:0", "--backpressure", "drop",
           "--min-uptime", "2", "--backoff-initial", "0.2", "--backoff-factor", "3",
           "--backoff-max", "9", "--jitter", "0.1", "--max-restarts", "7", "--window", "100",
           "--final-exit-codes", "5,6", "-m", "file", "-o", f"output={tmp_path / 'o.log'}",
           "-m", "jsonl", *user, "--watch", str(watched), "--ignore", "*.tmp",
           "--watch-delay", "0.7", "--memory-limit", "300M", "--memory-window", "4",
           "--memory-children", "--comment", "all options", "sleep", "--", "3600"))
    before = recorded(home, "every")
    # Each option as given, none at its default.
    assert before["exec"] == "/usr/bin/env" and before["file"].endswith("/sleep")
    assert before["args"] == ["3600"] and before["workers"] == 2 and before["cwd"] == "/"
    assert before["umask"] == 0o027 and before["backpressure"] == "drop"
    assert before["ready"] == "uptime:0.5" and before["listen"][0] != "tcp://127.0.0.1:0"
    assert before["policy"]["max_restarts"] == 7 and before["policy"]["window"] == 100
    assert [name for name, _ in before["monitors"]] == ["file", "jsonl"]
    assert before["watch"] == [str(watched)] and before["ignore"] == ["*.tmp"]
    assert before["watch_delay"] == 0.7 and before["memory_limit"] == 300 * 2 ** 20
    assert before["memory_window"] == 4 and before["memory_children"] is True
    assert before["comment"] == "all options"
    if AS_NOBODY:
        assert (before["user"], before["group"]) == ("nobody", "nogroup")
    again_the_same(home, "every", before)


def test_a_channel_survives_its_record(home, stopped_at_end):
    stopped_at_end.append("chan")
    ok(cli(home, "run", "-n", "chan", "--channel", "--ready", "spawn", TALKER))
    before = recorded(home, "chan")
    assert before["channel"] is True
    again_the_same(home, "chan", before)


def several(tmp_path: Path) -> dict[str, Any]:
    """Two programs, every option of each set (one listens, runs as nobody...)."""
    watched = tmp_path / "watched"
    watched.mkdir(exist_ok=True)
    web: dict[str, Any] = {
        "file": "sleep", "args": ["3600"], "exec": "/usr/bin/env", "cwd": "/",
        "env": {"PATH": os.environ["PATH"], "MODE": "web"}, "umask": 0o027,
        "workers": 2, "stop_timeout": 3, "ready": "uptime:0.5", "ready_timeout": 9,
        "listen": ["tcp://127.0.0.1:0"], "backpressure": "drop",
        "policy": {"min_uptime": 2, "max_restarts": 7, "final_exit_codes": [5]},
        "monitors": {"file": {"output": str(tmp_path / "web.log")}, "jsonl": None},
        "watch": [str(watched)], "ignore": ["*.tmp"], "watch_delay": 0.7,
        "memory_limit": "300M", "memory_window": 4, "memory_children": True,
        "comment": "the web"}
    if AS_NOBODY:
        web.update(user="nobody", group="nogroup")
    jobs = {"file": TALKER, "args": ["--out", "1"], "ready": "line:^ready",
            "stop_timeout": 7, "ready_timeout": 12, "monitor": "jsonl",
            "comment": "the jobs"}
    return {"web": web, "jobs": jobs}


def start_several(home: Path, name: str, programs_: dict[str, Any]) -> None:
    code = ("import json, sys, immortal\n"
            "immortal.start_group(sys.argv[1], json.loads(sys.argv[2]), start_timeout=25)\n")
    done = subprocess.run([sys.executable, "-c", code, name, json.dumps(programs_)],
                          env={**os.environ, "IMMORTAL_HOME": str(home)}, timeout=LONG,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_option_of_a_group_of_several_programs_survives_its_record(
        home, tmp_path, stopped_at_end):
    stopped_at_end.append("pair")
    start_several(home, "pair", several(tmp_path))
    before = recorded(home, "pair")
    assert before["start_timeout"] == 25
    web, jobs = before["programs"]
    assert (web["name"], jobs["name"]) == ("web", "jobs")
    assert web["workers"] == 2 and web["memory_limit"] == 300 * 2 ** 20
    assert web["watch_delay"] == 0.7 and web["listen"][0] != "tcp://127.0.0.1:0"
    assert web["comment"] == "the web" and jobs["monitors"][0][0] == "jsonl"
    # The record's programs, as start_group() takes them.
    assert set(programs(record("pair"))) == {"web", "jobs"}
    again_the_same(home, "pair", before)
    assert len(read_status(home / "pair").instances) == 3


def test_a_program_an_apply_removes_is_not_started_again(home, tmp_path, stopped_at_end):
    stopped_at_end.append("shrunk")
    start_several(home, "shrunk", {"a": {"file": TALKER, "ready": "spawn"},
                                   "b": {"file": TALKER, "ready": "spawn"}})
    from immortal.group import attach

    attach("shrunk").apply({"a": {"file": TALKER, "ready": "spawn"}}, timeout=LONG)
    ok(cli(home, "stop", "shrunk"))
    ok(cli(home, "start-recorded", "shrunk"))
    assert set(read_status(home / "shrunk").programs()) == {"a"}


def test_a_record_copied_under_another_name_is_refused(home, stopped_at_end):
    """A group's directory copied (or renamed) to another name: its record names the
    first group and its paths (the output file among them); 'start-recorded' of the copy
    says so and starts nothing."""
    import shutil

    stopped_at_end.append("original")
    ok(cli(home, "run", "-n", "original", "--ready", "spawn", TALKER))
    ok(cli(home, "stop", "original"))
    shutil.copytree(home / "original", home / "copy")
    result = cli(home, "start-recorded", "copy")
    assert result.returncode != 0
    assert "the record in" in result.stderr and "is of group 'original', not 'copy'" in \
        result.stderr, result.stderr
    assert not read_status(home / "copy").running
    assert not read_status(home / "original").running


# --- a unit for a group of several programs ----------------------------------------------

@needs_analyze
def test_a_unit_for_a_group_of_several_programs_passes_verify(home, tmp_path,
                                                              stopped_at_end):
    stopped_at_end.append("units")
    start_several(home, "units", several(tmp_path))
    text = ok(cli(home, "startup", "systemd", "units"))
    fields = unit_lines(text)
    assert fields["ExecStart"].split()[-3:] == ["start-recorded", "--foreground", "units"]
    assert fields["TimeoutStopSec"] == "12"  # the longest stop_timeout (jobs'), a margin
    assert fields["TimeoutStartSec"] == str(25 + 12 + 7 + 5)  # and jobs' ready_timeout
    path = tmp_path / "immortal-units.service"
    path.write_text(text)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    verified = subprocess.run([str(ANALYZE), "verify", str(path)],
                              env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
                              capture_output=True, text=True, timeout=LONG)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_the_units_command_line_runs_a_group_of_several_in_the_foreground(
        home, tmp_path, stopped_at_end):
    """What systemd would run for a group of several programs: the group again, in the
    foreground, its record unchanged, READY=1 once every instance is ready."""
    stopped_at_end.append("fgpair")
    start_several(home, "fgpair", several(tmp_path))
    before = recorded(home, "fgpair")
    command = unit_lines(ok(cli(home, "startup", "systemd", "fgpair")))["ExecStart"].split()
    ok(cli(home, "stop", "fgpair"))
    manager = Manager(tmp_path / "notify")
    service = subprocess.Popen(command, env={**os.environ, "IMMORTAL_HOME": str(home),
                                             "NOTIFY_SOCKET": str(manager.path)},
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        manager.wait_for("READY=1", LONG)
        status = read_status(home / "fgpair")
        assert status.running and status.pids["daemon"] == service.pid
        assert len(status.instances) == 3 and all(e.ready for e in status.instances)
        assert recorded(home, "fgpair") == before
        service.send_signal(signal.SIGTERM)  # systemctl stop, with KillMode=mixed
        manager.wait_for("STOPPING=1")
        out, err = service.communicate(timeout=LONG)
        assert service.returncode == 0, err
    finally:
        manager.sock.close()
        if service.poll() is None:
            service.kill()
            service.communicate()


def test_a_failed_start_of_a_group_of_several_from_its_record_keeps_it(
        home, tmp_path, stopped_at_end):
    """A unit restarted after a failure (an address in use at boot) finds the record."""
    stopped_at_end.append("held2")
    start_several(home, "held2", several(tmp_path))
    address = read_status(home / "held2").listen[0]
    ok(cli(home, "stop", "held2"))
    before = (home / "held2" / "spec.json").read_text()
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", int(address.rsplit(":", 1)[1])))
    squatter.listen()
    try:
        failed = cli(home, "start-recorded", "held2", timeout=LONG + SHORT)
        assert failed.returncode == 1 and "tcp://127.0.0.1" in failed.stderr, failed
        assert (home / "held2" / "spec.json").read_text() == before
    finally:
        squatter.close()
    ok(cli(home, "start-recorded", "held2"))
    assert read_status(home / "held2").listen == [address]


def test_a_configuration_files_group_keeps_what_its_file_set(home, tmp_path, stopped_at_end):
    """``immortal up``'s group records which names of each program's environment the file
    set (a later ``reload`` keeps the rest): its record starts it with them again."""
    from test_config_cli import immortal, write

    stopped_at_end.append("conf")
    write(tmp_path, f'''\
        name = "conf"

        [programs.a]
        file = "{TALKER}"
        ready = "spawn"

        [programs.a.env]
        QUEUE = "jobs"

        [programs.b]
        file = "{TALKER}"
        ready = "spawn"

        [env.production]
        ''')
    up = immortal(home, tmp_path, "up", "-E", "production")
    assert up.returncode == 0, up.stderr
    before = recorded(home, "conf")
    assert before["programs"][0]["variables"] == ["QUEUE"]
    assert [p["environment"] for p in before["programs"]] == ["production", "production"]
    again_the_same(home, "conf", before)
