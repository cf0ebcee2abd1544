"""The built-in monitors with real processes: file rotation, jsonl, logging and console."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import immortal
from conftest import LONG, SHORT, TALKER, wait_for
from immortal import monitorload

pytestmark = pytest.mark.timeout(120)

# A target that writes what a monitor must survive, then exits with 7 (a final exit code).
RAW = r"""
import sys
out, err = sys.stdout.buffer, sys.stderr.buffer
out.write(b"bad \xff\xfe utf8\n")
out.write(b"nul \x00 byte\n")
out.write(b"cr \r return\n")
out.write(b"crlf\r\n")
out.write(b"x" * 150000 + b"\n")
out.write(b"partial end")
out.flush()
err.write(b"err \xc3\x28\n")
err.flush()
sys.exit(7)
"""
RAW_STDOUT = [b"bad \xff\xfe utf8", b"nul \x00 byte", b"cr \r return", b"crlf\r",
              b"x" * 150000, b"partial end"]
RAW_STDERR = [b"err \xc3\x28"]
RAW_POLICY = {"final_exit_codes": [7], "min_uptime": 0.0}


def read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def records(path: Path) -> list[tuple[bytes, bytes]]:
    """The file monitor's records as (kind, text), split on newlines only ('\\r' stays)."""
    found = []
    for raw in read(path).split(b"\n")[:-1]:
        head, sep, text = raw.partition(b" | ")
        assert sep and re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (stdout|stderr|"
                                    rb"event )", head), raw
        found.append((head[25:].strip(), text))
    return found


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in read(path).split(b"\n") if line]


def joined_long_line(lines: list[bytes]) -> list[bytes]:
    """``lines`` with the pieces of RAW's 150000-byte line joined (there must be 2 or more:
    where the cut falls is the next test's business)."""
    pieces = [line for line in lines if line and set(line) == {ord("x")}]
    assert len(pieces) >= 2, [len(p) for p in pieces]
    first = lines.index(pieces[0])
    assert lines[first:first + len(pieces)] == pieces
    return lines[:first] + [b"".join(pieces)] + lines[first + len(pieces):]


def no_monitor_errors(group: immortal.Group) -> None:
    log = read(group.directory / "pump.log").decode(errors="replace")
    assert "monitor hook" not in log, log


# ----------------------------------------------------------------- file: rotation
@pytest.mark.parametrize("backups", [30, 3, 0])
def test_file_rotation_at_the_size_limit_keeps_n_backups(started, tmp_path, backups):
    out = tmp_path / "worker.log"
    limit = 1000
    group = started(TALKER, ["--out", "300"], options={
        "output": str(out), "max_bytes": limit, "backups": backups})
    wait_for(lambda: read(out), lambda data: b"stdout | ready\n" in data,
             what="the ready line in the current file")
    files = [out, *[Path(f"{out}.{n}") for n in range(1, backups + 1)]]
    present = [f for f in files if f.exists()]
    assert not Path(f"{out}.{backups + 1}").exists()
    if backups == 30:
        assert len(present) < len(files), "the test needs more backups than rotations"
    else:
        assert present == files, "every backup slot is used after this many rotations"
    # Oldest first; each file holds at most the limit, and was rotated only because the
    # next record would not fit.
    chronological = present[::-1]
    for older, newer in zip(chronological, chronological[1:]):
        first_of_newer = read(newer).split(b"\n", 1)[0] + b"\n"
        assert older.stat().st_size + len(first_of_newer) > limit
    for path in present:
        assert 0 < path.stat().st_size <= limit
    lines = [text for path in chronological for kind, text in records(path)
             if kind == b"stdout"]
    expected = [b"out %d" % n for n in range(1, 301)] + [b"ready"]
    if backups == 30:
        events = [text for kind, text in records(chronological[0]) if kind == b"event"]
        assert events[:2] == [b"pump start", b"spawn pid %d" % group.pids["target"]]
        assert lines == expected  # every line, exactly once, in order
    else:
        assert lines and lines == expected[-len(lines):]  # the newest, each once
        assert len(lines) < len(expected)


def test_file_rotation_options_from_the_cli_are_decimal_strings():
    factory = monitorload.resolve("file")
    assert factory.check({"max_bytes": "1048576", "backups": "2"}) == {
        "max_bytes": 1048576, "backups": 2}
    assert factory.check({}) == {}


# ----------------------------------------------------------------- jsonl
def test_jsonl_lines_and_events_carry_their_fields(started, tmp_path):
    out = tmp_path / "events.jsonl"
    group = started(TALKER, ["--out", "2", "--err", "1"], monitor="jsonl",
                    options={"output": str(out)}, policy={"min_uptime": 0.0})
    assert group.output == str(out)
    first = group.pids["target"]
    wait_for(lambda: jsonl(out), lambda ev: any(e.get("line") == "ready" for e in ev),
             what="the first ready line")
    os.kill(first, signal.SIGTERM)
    wait_for(lambda: jsonl(out), lambda ev: sum(e.get("line") == "ready" for e in ev) == 2,
             what="the second target's ready line")
    second = group.pids["target"]
    group.stop()
    events = jsonl(out)
    before = datetime.now().astimezone()
    for entry in events:
        assert ("stream" in entry) != ("event" in entry), entry
        assert isinstance(entry["mono"], float)
        stamp = datetime.fromisoformat(entry["time"])
        assert stamp.utcoffset() == timedelta(0)
        assert before - timedelta(minutes=1) < stamp <= before
    monos = [e["mono"] for e in events]
    assert monos == sorted(monos)
    kinds = [e.get("event") for e in events if "event" in e]
    assert kinds == ["setup", "spawn", "exit", "respawn", "exit", "shutdown"]
    setup = events[0]
    assert setup["event"] == "setup" and setup["why"] == "pump start"
    assert setup["message"] is None and setup["generation"] == 0
    spawn = next(e for e in events if e.get("event") == "spawn")
    assert spawn["pid"] == first and spawn["generation"] == 1
    exits = [e for e in events if e.get("event") == "exit"]
    assert exits[0]["pid"] == first and exits[0]["status"]["text"] == "killed by SIGTERM"
    assert exits[0]["status"]["signal"] == signal.SIGTERM
    assert exits[1]["pid"] == second
    respawn = next(e for e in events if e.get("event") == "respawn")
    assert respawn["pid"] == second and respawn["generation"] == 2
    assert events[-1] == {**events[-1], "event": "shutdown", "reason": "stop"}
    lines = [(e["stream"], e["line"], e["pid"], e["generation"])
             for e in events if "stream" in e]
    for pid, generation in ((first, 1), (second, 2)):
        mine = [(s, line) for s, line, p, g in lines if (p, g) == (pid, generation)]
        assert [line for s, line in mine if s == "stdout"] == ["out 1", "out 2", "ready"]
        assert [line for s, line in mine if s == "stderr"] == ["err 1"]
    assert len(lines) == 8


def test_jsonl_records_channel_messages_and_manual_restarts(started, tmp_path):
    out = tmp_path / "events.jsonl"
    target = ("from immortal import channel\n"
              "channel.send({'progress': 0.5, 'text': 'h\\u00e9'})\n"
              "print('ready', flush=True)\n"
              "import time; time.sleep(3600)\n")
    group = started(sys.executable, ["-c", target], channel=True, monitor="jsonl",
                    options={"output": str(out)})
    wait_for(lambda: jsonl(out), lambda ev: any(e.get("line") == "ready" for e in ev),
             timeout=LONG, what="the ready line")
    group.restart()
    events = wait_for(lambda: jsonl(out),
                      lambda ev: sum(e.get("event") == "message" for e in ev) == 2,
                      timeout=LONG, what="the second target's message")
    messages = [e for e in events if e.get("event") == "message"]
    assert [m["message"] for m in messages] == [{"progress": 0.5, "text": "h\u00e9"}] * 2
    assert [m["generation"] for m in messages] == [1, 2]
    respawn = next(e for e in events if e.get("event") == "respawn")
    assert respawn["why"] == "manual" and respawn["generation"] == 2


def test_jsonl_after_a_pump_restart_knows_no_earlier_generation(started, tmp_path):
    out = tmp_path / "events.jsonl"
    group = started(TALKER, ["--trap", "USR1"], monitor="jsonl",
                    options={"output": str(out)})
    target = group.pids["target"]
    wait_for(lambda: jsonl(out), lambda ev: any(e.get("line") == "ready" for e in ev),
             what="the ready line")
    os.kill(group.pids["pump"], signal.SIGKILL)
    wait_for(lambda: jsonl(out), lambda ev: any(e.get("why") == "pump restart" for e in ev),
             what="the new pump's setup")
    os.kill(target, signal.SIGUSR1)
    got = wait_for(lambda: jsonl(out), lambda ev: any(e.get("line") == "got USR1" for e in ev),
                   what="the line written after the pump restart")
    line = next(e for e in got if e.get("line") == "got USR1")
    # The adopted target was never seen spawned by this monitor instance.
    assert line["generation"] == 0 and line["pid"] in (None, target)
    assert group.pids["target"] == target


def test_jsonl_after_a_pump_restart_skips_no_line_of_a_new_run(started, tmp_path):
    """Offsets start again at 0 with each start: an earlier run's lines in the file must not
    make a pump restart of the next run skip that run's lines."""
    out = tmp_path / "out.jsonl"
    numbered = str(Path(TALKER).parent / "numbered.py")
    first = started(numbered, ["--interval", "0.002", "--count", "400"], monitor="jsonl",
                    options={"output": str(out)}, name="again",
                    policy={"final_exit_codes": [0]})
    first.wait(LONG)
    second = started(numbered, ["--interval", "0.002", "--count", "60"], monitor="jsonl",
                     options={"output": str(out)}, name="again",
                     policy={"final_exit_codes": [0]})
    gen = wait_for(lambda: [e for e in jsonl(out) if e.get("event") == "spawn"],
                   lambda ev: len(ev) == 2, what="the second run's spawn")[-1]["pid"]
    os.kill(second.pids["pump"], signal.SIGKILL)
    second.wait(LONG)
    mine = [e["line"] for e in jsonl(out)
            if "stream" in e and e["line"].split()[1].startswith(f"{gen}.")]
    numbers = sorted(int(line.split()[2]) for line in mine)
    assert numbers == list(range(1, 61)), numbers


# ----------------------------------------------------------------- raw bytes
def _file_lines(path: Path) -> dict[str, list[bytes]]:
    found: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
    for kind, text in records(path):
        if kind != b"event":
            found[kind.decode()].append(text)
    return found


def _jsonl_lines(path: Path) -> dict[str, list[bytes]]:
    found: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
    for entry in jsonl(path):
        if "stream" in entry:
            found[entry["stream"]].append(entry["line"].encode("utf-8", "surrogateescape"))
    return found


def _logging_lines(path: Path) -> dict[str, list[bytes]]:
    found: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
    with open(path, encoding="utf-8", newline="") as handle:
        for record in handle.read().split("\n")[:-1]:
            level, stream, message = record.split("|", 2)
            if stream != "event":
                found[stream].append(message.encode())
    return found


def _replaced(lines: list[bytes]) -> list[bytes]:
    return [line.decode("utf-8", "replace").encode() for line in lines]


def _logging_config(tmp_path: Path, log: Path, fmt: str = "%(levelname)s|%(stream)s|"
                    "%(message)s") -> Path:
    config = tmp_path / "logging.json"
    config.write_text(json.dumps({
        "version": 1,
        "formatters": {"plain": {"format": fmt}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(log),
                              "formatter": "plain", "encoding": "utf-8"}},
        "root": {"level": "DEBUG", "handlers": ["file"]},
    }))
    return config


@pytest.mark.parametrize("monitor", ["file", "jsonl", "logging"])
def test_invalid_utf8_nul_and_cr_never_crash_and_arrive(started, tmp_path, monitor):
    out = tmp_path / "out"
    if monitor == "logging":
        options: dict[str, Any] = {"config": str(_logging_config(tmp_path, out))}
    else:
        options = {"output": str(out)}
    group = started(sys.executable, ["-c", RAW], monitor=monitor, options=options,
                    policy=RAW_POLICY)
    wait_for(lambda: read(out), lambda data: b"shutdown" in data, LONG,
             what="the shutdown event")
    got = {"file": _file_lines, "jsonl": _jsonl_lines, "logging": _logging_lines}[monitor](out)
    got["stdout"] = joined_long_line(got["stdout"])
    if monitor == "file":  # bytes as they came
        assert got == {"stdout": RAW_STDOUT, "stderr": RAW_STDERR}
    else:  # decoded with errors="replace"
        assert got == {"stdout": _replaced(RAW_STDOUT), "stderr": _replaced(RAW_STDERR)}
    assert group.status().last_exit.code == 7
    no_monitor_errors(group)


def test_lines_longer_than_64_KiB_arrive_in_64_KiB_pieces(started, tmp_path):
    out = tmp_path / "long.jsonl"
    code = ("import os\nos.write(1, b'y' * 100000 + b'\\n')\nos.write(1, b'z' * 70000)\n"
            "raise SystemExit(7)")
    started(sys.executable, ["-c", code], monitor="jsonl", options={"output": str(out)},
            policy=RAW_POLICY)
    wait_for(lambda: read(out), lambda data: b'"shutdown"' in data, LONG,
             what="the shutdown event")
    lines = [e["line"] for e in jsonl(out) if "stream" in e]
    assert [len(line) for line in lines] == [65536, 100000 - 65536, 65536, 70000 - 65536]
    assert lines[0][0] == lines[1][0] == "y" and lines[2][0] == lines[3][0] == "z"


# ----------------------------------------------------------------- logging
@pytest.mark.parametrize("form", ["json", "ini"])
def test_logging_monitor_sends_records_through_the_configured_handlers(started, tmp_path,
                                                                       form):
    log = tmp_path / "app.log"
    fmt = "%(levelname)s|%(name)s|%(stream)s|%(pid)s|%(message)s"
    if form == "json":
        config = _logging_config(tmp_path, log, fmt)
    else:
        config = tmp_path / "logging.ini"
        config.write_text("\n".join([
            "[loggers]", "keys=root", "[handlers]", "keys=file", "[formatters]", "keys=plain",
            "[logger_root]", "level=DEBUG", "handlers=file",
            "[handler_file]", "class=FileHandler", "formatter=plain",
            f"args=({str(log)!r}, 'a', 'utf-8')",
            "[formatter_plain]", f"format={fmt}", ""]))
    group = started(TALKER, ["--out", "2", "--err", "1"], monitor="logging",
                    options={"config": str(config)}, name="logme")
    pid = group.pids["target"]
    wait_for(lambda: read(log), lambda data: b"|ready\n" in data, what="the ready record")
    group.stop()
    records = log.read_text().splitlines()
    name = "immortal.logme"
    assert records[:2] == [f"INFO|{name}|event|None|pump start",
                           f"INFO|{name}|event|{pid}|spawn pid {pid}"]
    assert f"INFO|{name}|stdout|{pid}|out 1" in records
    assert f"INFO|{name}|stdout|{pid}|ready" in records
    assert f"WARNING|{name}|stderr|{pid}|err 1" in records
    assert records[-2:] == [f"WARNING|{name}|event|{pid}|exit pid {pid}: killed by SIGTERM",
                            f"INFO|{name}|event|None|shutdown: stop"]


def test_logging_levels_and_logger_name_are_options(started, tmp_path):
    log = tmp_path / "app.log"
    config = _logging_config(tmp_path, log, "%(levelname)s|%(name)s|%(message)s")
    group = started(TALKER, ["--out", "1", "--err", "1", "--exit", "0"], monitor="logging",
                    options={"config": str(config), "logger": "myapp.worker",
                             "stdout_level": "debug", "stderr_level": "ERROR"},
                    policy={"final_exit_codes": [0]})
    wait_for(lambda: read(log), lambda data: b"shutdown" in data, what="the shutdown record")
    records = log.read_text().splitlines()
    pid = group.status().last_exit.pid
    assert "DEBUG|myapp.worker|out 1" in records
    assert "ERROR|myapp.worker|err 1" in records
    assert f"INFO|myapp.worker|exit pid {pid}: exited with status 0" in records


# ----------------------------------------------------------------- console
def test_console_monitor_prefixes_lines_in_development(home):
    # --max-restarts 1: the target runs twice, then the group gives up (fatal) and run ends.
    result = subprocess.run(
        [sys.executable, "-m", "immortal", "run", "--strategy", "development", "--name", "dev",
         "-m", "console", "--max-restarts", "1", "--min-uptime", "0", sys.executable, "--",
         "-c", RAW],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=LONG)
    assert result.returncode == 1, result.stderr.decode(errors="replace")  # it ended fatal
    out, err = result.stdout, result.stderr
    first = int(re.search(rb"\[dev\] spawn pid (\d+)\n", err).group(1))
    second = int(re.search(rb"\[dev\] respawn pid (\d+)\n", err).group(1))
    assert b"[dev] pump start\n" in err
    for pid in (first, second):
        prefix = b"[dev %d stdout] " % pid
        # The pump also echoes the raw output to the same stdout: find the prefixed lines.
        lines = re.findall(re.escape(prefix) + rb"([^\n]*)\n", out)
        assert joined_long_line(lines) == RAW_STDOUT
        assert b"[dev %d stderr] err \xc3\x28\n" % pid in err
        assert b"[dev %d stderr]" % pid not in out and prefix not in err
        assert b"[dev] exit pid %d: exited with status 7\n" % pid in err
    assert re.search(rb"\[dev\] shutdown: fatal", err), err
    assert b"\x1b[" not in out + err  # pipes, not terminals: no colour


@pytest.mark.parametrize("no_color", [False, True])
def test_console_colours_a_terminal_unless_no_color(home, no_color):
    master, slave = pty.openpty()
    env = {"NO_COLOR": "1"} if no_color else {"NO_COLOR": ""}
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "immortal", "run", "--strategy", "development", "--name",
             "tty", "-m", "console", "--max-restarts", "1", "--min-uptime", "0", TALKER, "--",
             "--out", "1", "--err", "1", "--exit", "0"],
            stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE,
            env={**os.environ, **env})
    finally:
        os.close(slave)
    data = b""
    deadline = time.monotonic() + LONG
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every holder of the terminal closed it
                break
            if not chunk:
                break
            data += chunk
        err = child.stderr.read()
        assert child.wait(timeout=SHORT) == 1, err  # --max-restarts 1: it ends fatal
    finally:
        os.close(master)
        child.stderr.close()
        if child.poll() is None:
            child.kill()
            child.wait()
    assert re.search(rb"\[tty \d+ stdout\]", data), data
    assert b"out 1" in data
    if no_color:
        assert b"\x1b[" not in data
    else:
        assert re.search(rb"\x1b\[36m\[tty \d+ stdout\]\x1b\[0m out 1", data), data
    assert b"\x1b[" not in err  # stderr was a pipe
    assert re.search(rb"\[tty \d+ stderr\] err 1", err), err


def test_console_color_always_through_a_pipe(started):
    group = started(TALKER, ["--out", "1", "--exit", "0"], strategy="development",
                    capture=True, monitor="console", options={"color": "always"},
                    policy={"final_exit_codes": [0]}, name="col")
    lines = list(group.stdout)
    assert any(re.fullmatch(rb"\x1b\[36m\[col \d+ stdout\]\x1b\[0m out 1\n", line)
               for line in lines), lines


# ----------------------------------------------------------------- check() refusals
def _bad_json(tmp: Path) -> str:
    (tmp / "bad.json").write_text("{not json")
    return str(tmp / "bad.json")


def _versionless(tmp: Path) -> str:
    (tmp / "v.json").write_text('{"root": {}}')
    return str(tmp / "v.json")


def _relative_handler(tmp: Path) -> str:
    (tmp / "rel.json").write_text(json.dumps({"version": 1, "handlers": {"f": {
        "class": "logging.FileHandler", "filename": "out.log"}}}))
    return str(tmp / "rel.json")


def _not_ini(tmp: Path) -> str:
    (tmp / "x.ini").write_text("[loggers]\nkeys=root\n")
    return str(tmp / "x.ini")


REFUSALS = [
    ("file", {"max_bytes": -1}, "the file monitor's 'max_bytes' must be a non-negative "
                                "integer (got -1)"),
    ("file", {"max_bytes": True}, "'max_bytes' must be a non-negative integer (got bool"),
    ("file", {"max_bytes": 1.5}, "'max_bytes' must be a non-negative integer (got float"),
    ("file", {"max_bytes": "10M"}, "'max_bytes' must be a non-negative integer (got str"),
    ("file", {"backups": -3}, "the file monitor's 'backups' must be a non-negative integer"),
    ("file", {"backups": 10**7}, "the file monitor's 'backups' must be at most 1000 (got "
                                 "10000000)"),
    ("jsonl", {"backups": "5000"}, "the jsonl monitor's 'backups' must be at most 1000"),
    ("file", {"max_byte": 10}, "the file monitor has no option 'max_byte' (did you mean "
                               "'max_bytes'?)"),
    ("file", {"output": "/nonexistent-dir/x.log"}, "does not exist"),
    ("jsonl", {"outptu": "x"}, "the jsonl monitor has no option 'outptu' (did you mean "
                               "'output'?)"),
    ("jsonl", {"output": "/tmp"}, "output '/tmp' is a directory"),
    ("jsonl", {"backups": "-1"}, "the jsonl monitor's 'backups' must be"),
    ("logging", {"stdout_level": "LOUD"}, "the logging monitor's 'stdout_level' must be a "
                                          "level name"),
    ("logging", {"stderr_level": "WARNNG"}, "(did you mean 'WARNING'?)"),
    ("logging", {"stderr_level": -5}, "'stderr_level' must be a level name"),
    ("logging", {"logger": ""}, "the logging monitor's 'logger' must be a logger name"),
    ("logging", {"config": "/nonexistent.json"}, "config '/nonexistent.json' does not exist"),
    ("logging", {"config": _bad_json}, "does not parse"),
    ("logging", {"config": _versionless}, "not a dictConfig dictionary"),
    ("logging", {"config": _relative_handler}, "a handler's filename 'out.log' is relative: "
                                               "give an absolute path (the pump runs in '/')"),
    ("logging", {"config": _not_ini}, "is no fileConfig INI file (no section [handlers], "
                                      "[formatters])"),
    ("logging", {"level": "INFO"}, "the logging monitor has no option 'level'"),
    ("console", {"color": "rainbow"}, "the console monitor's 'color' must be one of auto, "
                                      "always, never (got 'rainbow')"),
    ("console", {"colour": "always"}, "(did you mean 'color'?)"),
]


@pytest.mark.parametrize("monitor, options, message", REFUSALS,
                         ids=[f"{m}-{next(iter(o))}-{i}" for i, (m, o, _) in
                              enumerate(REFUSALS)])
def test_bad_options_are_refused_in_the_caller(home, tmp_path, monitor, options, message):
    options = {k: v(tmp_path) if callable(v) else v for k, v in options.items()}
    with pytest.raises(immortal.MonitorOptionsError, match=re.escape(message)):
        immortal.start(TALKER, monitor=monitor, options=options)
    assert os.listdir(home) == []


def test_console_monitor_writes_a_long_line_whole_through_an_unbuffered_stdout(monkeypatch):
    """Under PYTHONUNBUFFERED (common in containers) the pump's stdout has no buffered
    layer: one write to a full pipe may take part of a line. A non-blocking pipe makes that
    happen at once; the line must still arrive whole."""
    from monitors.console import ConsoleMonitor

    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    raw = io.FileIO(write_end, "w", closefd=False)
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, write_through=True))
    got = bytearray()

    def drain() -> None:
        while chunk := os.read(read_end, 65536):
            got.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        monitor = ConsoleMonitor({"color": "never"}, name="dev")
        monitor.setup("pump start", None)
        monitor.spawn(42)
        monitor.stdout(b"x" * 300_000)
        monitor.stdout(b"after")
    finally:
        os.close(write_end)
        reader.join(LONG)
        os.close(read_end)
    assert bytes(got) == b"[dev 42 stdout] " + b"x" * 300_000 + b"\n[dev 42 stdout] after\n"
