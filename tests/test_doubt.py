"""Exactly once across pump kills, the instant after a monitor's call included: a call is
recorded "in doubt" before it runs, and a successor asks the monitor (``delivered``) what
its output holds of that call's lines (immortal/delivery.py, ``Sink.settle``)."""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import random
import re
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import immortal
from conftest import LONG, wait_for
from immortal import relay
from immortal.ledger import Ledger
from immortal.monitoring import Host
from immortal.monitorload import resolve

pytestmark = pytest.mark.timeout(300)

HOOK = "IMMORTAL_TEST_KILL_AFTER_CALL"
KILLS = 20
# Numbered lines, one to three per write, until the file argv[1] exists; then "end N".
TARGET = ["-c", "import os, random, sys, time\n"
          "n = 0\n"
          "while not os.path.exists(sys.argv[1]):\n"
          "    k = random.randint(1, 3)\n"
          "    os.write(1, b''.join(b'line %06d\\n' % i for i in range(n, n + k)))\n"
          "    n += k\n"
          "    time.sleep(0.001)\n"
          "os.write(1, b'end %d\\n' % n)\n"
          "time.sleep(3600)\n"]


def _options(monitor: str, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """Where ``monitor`` writes, and its options."""
    if monitor == "logging":
        out = tmp_path / "logging.log"
        config = tmp_path / "logging.json"
        config.write_text(json.dumps({
            "version": 1, "formatters": {"plain": {"format": "%(stream)s|%(message)s"}},
            "handlers": {"file": {"class": "logging.FileHandler", "filename": str(out),
                                  "formatter": "plain"}},
            "root": {"level": "DEBUG", "handlers": ["file"]}}))
        return out, {"config": str(config)}
    out = tmp_path / f"{monitor}.out"
    return out, {"path" if monitor.startswith("plugins.") else "output": str(out)}


def lines_in(monitor: str, out: Path) -> list[str]:
    """The target's lines as ``monitor`` stored them, in order (events left out)."""
    try:
        records = out.read_text(errors="replace").split("\n")[:-1]
    except FileNotFoundError:
        return []
    if monitor == "jsonl":
        return [r["line"] for r in map(json.loads, records) if "stream" in r]
    if monitor == "logging":
        return [r.partition("|")[2] for r in records if r.startswith("stdout|")]
    if monitor == "plugins.lines:Checked":
        return [r.partition(" ")[2] for r in records if r.startswith("stdout ")]
    if monitor.startswith("plugins."):
        return records  # the lines as they came
    return [r.partition(" | ")[2] for r in records if " stdout | " in r]


def ended(lines: list[str]) -> int | None:
    """The count the target's "end N" gives, once stored."""
    return next((int(line.split()[1]) for line in lines if line.startswith("end ")), None)


def check_once(monitor: str, lines: list[str], count: int) -> None:
    numbers = [int(line.split()[1]) for line in lines if line.startswith("line ")]
    twice = sorted(n for n, k in Counter(numbers).items() if k > 1)
    missing = sorted(set(range(count)) - set(numbers))
    assert not twice, f"{monitor}: {len(twice)} lines stored twice: {twice[:10]}"
    assert not missing, f"{monitor}: {len(missing)} lines missing: {missing[:10]}"
    assert numbers == sorted(numbers), monitor


def new_pump(group: immortal.Group, old: int | None) -> int:
    return wait_for(lambda: group.pids.get("pump"), lambda pid: pid and pid != old, LONG,
                    what="a new pump")


def finish(group: immortal.Group, monitors: dict[str, Path], stop: Path) -> None:
    """Let the target say how many lines it wrote; each monitor has each exactly once.
    Every monitor is checked before any failure is raised: a line twice in all of them is
    the relay's (the journal), in one of them that monitor's settling."""
    stop.touch()
    failures = []
    for monitor, out in monitors.items():
        lines = wait_for(lambda: lines_in(monitor, out), lambda got: ended(got) is not None,
                         LONG, what=f"the last line at {monitor}")
        count = ended(lines)
        assert count is not None and count > 0
        try:
            check_once(monitor, lines, count)
        except AssertionError as exc:
            failures.append(str(exc))
    group.stop()
    assert not failures, "; ".join(failures)


@pytest.mark.parametrize("monitor", ["file", "logging", "jsonl", "plugins.delivery:Lines",
                                     "plugins.lines:Checked"])
def test_a_pump_killed_just_after_a_monitor_returned_repeats_it_nothing(
        started, tmp_path, monkeypatch, monitor):
    """The test hook kills the pump in the one instant that was left: a monitor's call
    returned (its line written), its mark not yet stored."""
    flag = tmp_path / "kill"
    stop = tmp_path / "stop"
    monkeypatch.setenv(HOOK, str(flag))
    out, options = _options(monitor, tmp_path)
    group = started(sys.executable, [*TARGET, str(stop)], monitors={monitor: options})
    pump = new_pump(group, None)
    for kill in range(KILLS):
        wait_for(lambda: len(lines_in(monitor, out)), lambda n: n > 0, LONG,
                 what="lines to flow")
        flag.touch()  # armed: the pump's next output call is its last
        wait_for(flag.exists, lambda exists: not exists, LONG, what=f"kill {kill + 1}")
        pump = new_pump(group, pump)
    finish(group, {monitor: out}, stop)


def test_every_file_monitor_has_each_line_once_across_many_pump_kills(started, tmp_path):
    """SIGKILLs of the pump at random instants while lines flow, every built-in monitor
    with a file at once."""
    stop = tmp_path / "stop"
    outs: dict[str, Path] = {}
    monitors: dict[str, Any] = {}
    for monitor in ("file", "jsonl", "logging"):
        outs[monitor], monitors[monitor] = _options(monitor, tmp_path)
    group = started(sys.executable, [*TARGET, str(stop)], monitors=monitors)
    pump = new_pump(group, None)
    rng = random.Random()
    for kill in range(KILLS):
        size = outs["file"].stat().st_size
        wait_for(lambda: outs["file"].stat().st_size, lambda now: now > size, LONG,
                 what=f"lines to flow before kill {kill + 1}")
        time.sleep(rng.uniform(0, 0.05))  # not a wait: a random instant to kill at
        os.kill(pump, signal.SIGKILL)
        pump = new_pump(group, pump)
    finish(group, outs, stop)


CONSOLE = re.compile(r"(?:\x1b\[[0-9;]*m)?\[doubt \d+ stderr\](?:\x1b\[0m)? "
                     r"((?:line|end) \d+)$")


def console_lines(path: Path) -> list[str]:
    """The target's stderr lines as ``console`` wrote them into a pump's log."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [found.group(1) for found in map(CONSOLE.match, text.split("\n")) if found]


def test_console_repeats_nothing_in_the_log_of_a_pump_killed_just_after_its_write(
        started, tmp_path, monkeypatch):
    """A detached pump's stderr is ``pump.log``, a file: the console monitor reads back
    whether the dead pump's log holds the line in doubt. Each pump's log is kept as
    ``pump.log.1`` at its successor's start, so it is read then, whole."""
    flag, stop = tmp_path / "kill", tmp_path / "stop"
    monkeypatch.setenv(HOOK, str(flag))
    to_stderr = [TARGET[0], TARGET[1].replace("os.write(1,", "os.write(2,")]
    group = started(sys.executable, [*to_stderr, str(stop)], name="doubt",
                    monitors={"console": {"color": "always"}})
    log, kept = group.directory / "pump.log", group.directory / "pump.log.1"
    pump = new_pump(group, None)
    lines: list[str] = []
    for kill in range(KILLS):
        wait_for(lambda: len(console_lines(log)), lambda n: n > 0, LONG,
                 what=f"lines to flow before kill {kill + 1}")
        flag.touch()  # armed: the pump's next output call is its last
        wait_for(flag.exists, lambda exists: not exists, LONG, what=f"kill {kill + 1}")
        pump = new_pump(group, pump)
        lines += console_lines(kept)  # the dead pump's log, whole: it writes no more
    stop.touch()
    last = wait_for(lambda: console_lines(log), lambda got: ended(got) is not None, LONG,
                    what="the last line at console")
    group.stop()
    count = ended(lines + last)
    assert count is not None and count > 0
    check_once("console", lines + last, count)


# ----------------------------------------------------------------- by hand, on a journal
class Died(BaseException):
    """The pump dies in a monitor call (not an Exception: never caught)."""


FileMonitor = resolve("file")


class DiesOnce(FileMonitor):  # type: ignore[misc, valid-type]
    """The ``file`` monitor, whose second block kills its pump ``before`` or ``after``
    its write."""

    calls = 0

    def block(self, stream, data, offset):
        DiesOnce.calls += 1
        if DiesOnce.calls == 2 and self.options["die"] == "before":
            raise Died
        super().block(stream, data, offset)
        if DiesOnce.calls == 2:
            raise Died


@pytest.mark.parametrize("max_bytes", [0, 240], ids=["no rotation", "rotating"])
@pytest.mark.parametrize("die", ["before", "after"])
def test_file_tells_a_written_block_from_an_unwritten_one_among_equal_lines(
        tmp_path, die, max_bytes):
    """Every line reads the same: only the file's size before the call, kept in the
    journal, tells whether the call in doubt wrote. With ``max_bytes`` the call rotates the
    file after its second line: its records lie in two files."""
    journal = relay.open_journal(relay.make_journal())
    r, w = relay.make_pipe()
    out = tmp_path / "out.log"
    DiesOnce.calls = 0
    hosts: list[Host] = []

    def pump(cls: Any, why: str) -> relay.Relay:
        options = {"output": str(out), "die": die, "max_bytes": max_bytes}
        host = Host([("file", cls, options)], "g", tmp_path, ledger=Ledger(journal))
        hosts.append(host)
        host.call("setup", why=why, message=None)
        return relay.Relay(r, journal, 0, lambda data, offset, end: host.block(
            "stdout", data, offset, end))

    try:
        first = pump(DiesOnce, "pump start")
        os.write(w, b"tick\n" * 3)
        first.read()
        os.write(w, b"tick\n" * 3)
        with pytest.raises(Died):
            first.read()
        successor = pump(FileMonitor, "pump restart")
        successor.recover()
        successor.deliver()
        os.write(w, b"tock\n")
        successor.drain()
        files = sorted(tmp_path.glob("out.log.*"), reverse=True) + [out]
        assert (len(files) > 1) == bool(max_bytes)
        got = [record[24:] for path in files for record in path.read_bytes().split(b"\n")[:-1]]
        assert [g for g in got if b"stdout" in g] == [b" stdout | tick"] * 6 + [
            b" stdout | tock"]
    finally:
        for host in hosts:
            host.call("shutdown", reason="test")  # closes the file
        journal.close()
        os.close(r)
        os.close(w)


class Counted:
    """A plain pluggy plugin keeping lines in a list; its position is the list's length."""

    def __init__(self) -> None:
        self.kept: list[bytes] = []

    def monitor_stdout(self, line: bytes) -> None:
        self.kept.append(line)
        if line == b"die":
            raise Died

    def monitor_position(self) -> int:
        return len(self.kept)

    def monitor_delivered(self, lines: list[bytes], position: int) -> int:
        return len(self.kept) - position


def test_a_plugin_with_monitor_delivered_is_asked_before_its_setup(tmp_path):
    journal = relay.open_journal(relay.make_journal())
    r, w = relay.make_pipe()
    plugin = Counted()

    def pump() -> relay.Relay:
        host = Host([("counted", plugin, {})], "g", tmp_path, ledger=Ledger(journal))
        return relay.Relay(r, journal, 0, lambda data, offset, end: host.block(
            "stdout", data, offset, end))

    try:
        os.write(w, b"a\nb\ndie\nc\n")
        with pytest.raises(Died):
            pump().read()
        successor = pump()
        successor.recover()
        successor.drain()
        assert plugin.kept == [b"a", b"b", b"die", b"c"]
    finally:
        journal.close()
        os.close(r)
        os.close(w)


LoggingMonitor = resolve("logging")


class LogDiesOnce(LoggingMonitor):  # type: ignore[misc, valid-type]
    """The ``logging`` monitor, whose third line kills its pump ``before`` or ``after``
    the record is written."""

    calls = 0

    def stdout(self, line):
        LogDiesOnce.calls += 1
        if LogDiesOnce.calls == 3 and self.options["die"] == "before":
            raise Died
        super().stdout(line)
        if LogDiesOnce.calls == 3:
            raise Died


@pytest.mark.parametrize("die", ["before", "after"])
def test_logging_follows_a_record_that_rotated_its_file(tmp_path, die):
    """The third record makes the RotatingFileHandler roll over: whether it was written is
    read in the new file, the size kept before it being the old one's."""
    path = tmp_path / "rotating.log"
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=12, backupCount=5)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(lambda record: record.stream != "event")  # lines alone: sizes known
    logger = logging.getLogger(f"immortal.test-doubt-{die}")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    journal = relay.open_journal(relay.make_journal())
    r, w = relay.make_pipe()
    LogDiesOnce.calls = 0

    def pump(cls: Any, why: str) -> relay.Relay:
        options = {"logger": logger.name, "die": die}
        host = Host([("logging", cls, options)], "g", tmp_path, ledger=Ledger(journal))
        host.call("setup", why=why, message=None)
        return relay.Relay(r, journal, 0, lambda data, offset, end: host.block(
            "stdout", data, offset, end))

    try:
        first = pump(LogDiesOnce, "pump start")
        os.write(w, b"tick\n" * 3)
        with pytest.raises(Died):
            first.read()
        successor = pump(LoggingMonitor, "pump restart")
        successor.recover()
        successor.deliver()
        os.write(w, b"tock\n")
        successor.drain()
        assert (tmp_path / "rotating.log.1").exists()
        files = sorted(tmp_path.glob("rotating.log.*"), reverse=True) + [path]
        assert b"".join(f.read_bytes() for f in files) == b"tick\n" * 3 + b"tock\n"
    finally:
        logger.removeHandler(handler)
        handler.close()
        journal.close()
        os.close(r)
        os.close(w)
