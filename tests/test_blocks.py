"""Output as blocks: the relay hands whole lines over as one ``bytes`` with the first line's
offset; each monitor gets them through the one hook it has (block, lines, stdout/stderr).

The relay is driven by hand here, on a real pipe and a real journal; the last test runs the
whole path in a pump."""

from __future__ import annotations

import json
import os
import re
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import immortal
from conftest import LONG, wait_for
from immortal import relay
from immortal.ledger import Ledger
from immortal.monitoring import Host
from immortal_monitors.file import FileMonitor
from immortal_monitors.jsonl import JsonlMonitor

pytestmark = pytest.mark.timeout(120)

MAX = relay.MAX_LINE


class Pipe:
    """A pipe and a journal as a pump has them, and a relay of the pipe's read end that
    records what it emits."""

    def __init__(self) -> None:
        self.r, self.w = relay.make_pipe()
        self.journal_fd = relay.make_journal()
        self.journal = relay.open_journal(self.journal_fd)
        self.emitted: list[tuple[bytes, int]] = []
        self.ends: list[int] = []  # where each emitted block ends in the stream
        self.relay = self.successor()

    def successor(self, emit: Any = None) -> relay.Relay:
        """A relay on the same pipe and journal (what the next pump builds)."""
        return relay.Relay(self.r, self.journal, 0,
                           emit or self._record)

    def _record(self, data: bytes, offset: int, end: int) -> None:
        self.emitted.append((data, offset))
        self.ends.append(end)

    def feed(self, data: bytes, chunk: int) -> None:
        """Write ``data`` in writes of ``chunk`` bytes, relaying all that is there after
        each (the pipe never fills, so no write blocks)."""
        for at in range(0, len(data), chunk):
            os.write(self.w, data[at:at + chunk])
            while self.relay.read():
                pass

    def end(self) -> None:
        os.close(self.w)
        self.w = -1
        self.relay.drain()

    def close(self) -> None:
        self.journal.close()
        for fd in (self.r, self.w, self.journal_fd):
            if fd >= 0:
                os.close(fd)


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    made = Pipe()
    yield made
    made.close()


def lines_of(blocks: list[tuple[bytes, int]]) -> list[tuple[bytes, int]]:
    """(line, offset) for every line of the blocks, offsets counted within each block."""
    found = []
    for data, offset in blocks:
        assert data.endswith(b"\n")
        for line in data[:-1].split(b"\n"):
            found.append((line, offset))
            offset += len(line) + 1
    return found


# ----------------------------------------------------------------- the relay
def test_a_block_is_the_whole_lines_as_written_with_the_first_ones_offset(pipe):
    pipe.feed(b"one\ntwo\nthr", 100)
    assert pipe.emitted == [(b"one\ntwo\n", 0)]  # the partial line waits for its newline
    pipe.feed(b"ee\n\nfour\n", 100)
    assert pipe.emitted[1] == (b"three\n\nfour\n", 8)
    pipe.feed(b"tail", 100)
    pipe.end()
    assert pipe.emitted[2] == (b"tail\n", 20)  # the last line, its newline added
    assert pipe.ends == [8, 20, 24]  # a newline the relay added is not in the stream


# Pieces of the overlong line, a line of exactly MAX_LINE (whole, however the reads cut
# it), and a last line without its newline.
OVERLONG = (b"a\n" + b"x" * (2 * MAX + 10) + b"\nb\n" + b"y" * MAX + b"\n"
            + (b"0123456789" * 9 + b"\n") * 2000 + b"end")


def expected_overlong() -> list[tuple[bytes, int]]:
    expected = [(b"a", 0), (b"x" * MAX, 2), (b"x" * MAX, 2 + MAX), (b"x" * 10, 2 + 2 * MAX)]
    at = 2 + 2 * MAX + 11
    expected += [(b"b", at), (b"y" * MAX, at + 2)]
    at += 2 + MAX + 1
    for _ in range(2000):
        expected.append((b"0123456789" * 9, at))
        at += 91
    return expected + [(b"end", at)]


@pytest.mark.parametrize("chunk", [997, 4096, MAX, MAX + 1, len(OVERLONG)])
def test_overlong_lines_go_in_pieces_whatever_the_reads(pipe, chunk):
    pipe.feed(OVERLONG, chunk)
    pipe.end()
    assert lines_of(pipe.emitted) == expected_overlong()
    # Each block ends where the next begins: a piece's added newline is not in the stream.
    assert pipe.ends[:-1] == [offset for _, offset in pipe.emitted[1:]]
    for data, _ in pipe.emitted:  # a piece comes alone
        assert data.count(b"\n") == 1 or max(map(len, data.split(b"\n"))) <= MAX


class Died(Exception):
    """The pump dies in the middle of handing a block over."""


def test_a_successor_hands_over_again_only_what_was_not_recorded(pipe):
    pipe.feed(b"one\ntwo\n", 100)
    calls = []

    def dying(data: bytes, offset: int, end: int) -> None:
        calls.append((data, offset))
        raise Died

    pipe.relay = pipe.successor(dying)
    with pytest.raises(Died):
        pipe.feed(b"three\nfour\nfi", 100)
    # The next pump takes the journal over and hands the unrecorded block over again, at
    # the same offset; a monitor that keeps the last offset it stored skips it.
    pipe.relay = pipe.successor()
    pipe.relay.recover()
    pipe.relay.deliver()
    pipe.feed(b"ve\n", 100)
    pipe.end()
    assert calls == [(b"three\nfour\n", 8)]
    assert pipe.emitted == [(b"one\ntwo\n", 0), (b"three\nfour\n", 8), (b"five\n", 19)]


def test_a_successor_draining_before_its_set_up_keeps_what_its_predecessor_read():
    """A successor pump whose daemon dies during its set-up, the group ending, drains the
    pipes at once (a hand-over), before its set-up would have recovered the journal: what
    the dead pump had read but not recorded must not be written over by that drain."""
    from immortal.rolefds import Fds
    from immortal.streams import Streams

    out, err, journal = relay.make_pipe(), relay.make_pipe(), relay.make_journal()
    got: list[bytes] = []

    def sink(stream: str, data: bytes, offset: int, end: int) -> None:
        got.append(bytes(data))

    fds = Fds(out=out, err=err, journal=journal)
    dead = Streams(fds, False, None, sink)
    os.write(out[1], b"one\n")
    dead.relays[0].read()
    # Its last read: in the journal, past the length it recorded, when it died.
    os.write(out[1], b"two\nthree\n")
    relay_ = dead.relays[0]
    buffer = relay_._buffer()
    start = relay_._data(buffer) + relay_._get(buffer)
    view = memoryview(dead.journal)[start: start + relay.CAPACITY // 2]
    os.readv(out[0], [view])
    view.release()
    os.write(out[1], b"four\n")
    successor = Streams(fds, False, None, sink)
    successor.drain(final=False)  # the daemon died during its set-up
    successor.recover()  # what its set-up then does
    assert b"".join(got) == b"one\ntwo\nthree\nfour\n"
    for fd in (*out, *err, journal):
        os.close(fd)


def resident_kb(mapping_name: str) -> int:
    """Resident memory of this process's mappings of the file ``mapping_name``."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and ":" not in fields[0]:
                inside = mapping_name in line
            elif inside and fields[0] == "Rss:":
                total += int(fields[1])
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="reads /proc/self/smaps")
@pytest.mark.parametrize("unrecorded", [b"", b"six\nseven\n"])
def test_recovery_reads_the_journal_through_its_file(pipe, unrecorded):
    """A successor finds the bytes a dead pump read but did not record, and leaves the pages
    nobody wrote into without memory: reading shared memory through the mapping would give
    every page of the journal memory of its own, in every group."""
    pipe.feed(b"one\ntwo\n", 100)
    if unrecorded:  # a read that landed in the journal just before its reader died
        os.write(pipe.w, unrecorded)
        buffer = pipe.relay._buffer()
        length = pipe.relay._get(buffer)
        data = pipe.relay._data(buffer)
        view = memoryview(pipe.journal)[data + length: data + relay.CAPACITY]
        os.readv(pipe.r, [view])
        view.release()
    before = resident_kb("immortal-journal")
    pipe.relay = pipe.successor()
    pipe.relay.recover(pipe.journal_fd)
    pipe.relay.deliver()
    assert resident_kb("immortal-journal") == before
    pipe.feed(b"eight\n", 100)
    pipe.end()
    assert b"".join(data for data, _ in pipe.emitted) == \
        b"one\ntwo\n" + unrecorded + b"eight\n"


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="reads /proc/self/smaps")
def test_an_idle_journal_is_one_page():
    """A journal whose target writes nothing costs one page, whatever its pump did with it:
    both streams recovered (a successor), read from, their monitor's marks set. Every head
    and the ledger share the first page; a group of many instances holds one per instance."""
    fd = relay.make_journal()
    journal = relay.open_journal(fd)
    r, w = relay.make_pipe()
    try:
        before = resident_kb("immortal-journal")
        for index in range(len(relay.STREAMS)):
            stream = relay.Relay(r, journal, index, lambda data, offset, end: None)
            stream.recover(fd)
            stream.read()
            stream.deliver()
        ledger = Ledger(journal)
        ledger.set_mark(0, 1, 0)
        ledger.set_busy(1, 0)
        ledger.snapshot()
        assert resident_kb("immortal-journal") - before == 4
    finally:
        journal.close()
        for each in (fd, r, w):
            os.close(each)


# ----------------------------------------------------------------- the host
class BlockMonitor(immortal.Monitor):
    def block(self, stream, data, offset):
        self.options["got"].append(("block", stream, data, offset))

    def lines(self, stream, lines, offset):  # never called: block comes first
        self.options["got"].append(("lines", stream, lines, offset))


class LinesMonitor(immortal.Monitor):
    def lines(self, stream, lines, offset):
        self.options["got"].append(("lines", stream, lines, offset))


class StdoutMonitor(immortal.Monitor):
    def stdout(self, line, offset):
        self.options["got"].append(("stdout", line, offset))

    def stderr(self, line, offset):
        self.options["got"].append(("stderr", line, offset))


class NoOffsetMonitor(immortal.Monitor):
    def stdout(self, line):
        self.options["got"].append(("stdout", line))


def pluggy_style(got: list[Any], *hooks: str) -> object:
    """A plain plugin object with only the named monitor_* functions."""
    functions = {
        "block": lambda stream, data, offset: got.append(("block", stream, data, offset)),
        "lines": lambda stream, lines, offset: got.append(("lines", stream, lines, offset)),
        "stdout": lambda line, offset: got.append(("stdout", line, offset)),
        "stderr": lambda line, offset: got.append(("stderr", line, offset)),
    }
    return types.SimpleNamespace(**{f"monitor_{hook}": functions[hook] for hook in hooks})


def test_each_monitor_gets_every_line_through_its_own_hook(tmp_path):
    got: dict[str, list[Any]] = {name: [] for name in (
        "block", "lines", "stdout", "no offset", "pluggy block", "pluggy lines",
        "pluggy stdout")}
    host = Host([
        ("block", BlockMonitor, {"got": got["block"]}),
        ("lines", LinesMonitor, {"got": got["lines"]}),
        ("stdout", StdoutMonitor, {"got": got["stdout"]}),
        ("no offset", NoOffsetMonitor, {"got": got["no offset"]}),
        ("pluggy block", pluggy_style(got["pluggy block"], "block", "lines", "stdout"), {}),
        ("pluggy lines", pluggy_style(got["pluggy lines"], "lines", "stdout"), {}),
        ("pluggy stdout", pluggy_style(got["pluggy stdout"], "stdout", "stderr"), {}),
    ], "g", tmp_path)
    host.block("stdout", b"alpha\n\nbeta \r gamma\n", 1000)
    host.block("stderr", b"oops\n", 7)
    lines = [b"alpha", b"", b"beta \r gamma"]
    assert got["block"] == got["pluggy block"] == [
        ("block", "stdout", b"alpha\n\nbeta \r gamma\n", 1000), ("block", "stderr", b"oops\n", 7)]
    assert got["lines"] == got["pluggy lines"] == [
        ("lines", "stdout", lines, 1000), ("lines", "stderr", [b"oops"], 7)]
    assert got["stdout"] == got["pluggy stdout"] == [
        ("stdout", b"alpha", 1000), ("stdout", b"", 1006), ("stdout", b"beta \r gamma", 1007),
        ("stderr", b"oops", 7)]
    assert got["no offset"] == [("stdout", line) for line in lines]  # no stderr method


def test_a_monitor_calling_the_default_block_gets_its_lines(tmp_path):
    """Monitor.block, called directly or through super(), splits and calls lines."""
    got: list[Any] = []
    monitor = LinesMonitor({"got": got}, directory=tmp_path)
    monitor.block("stdout", b"a\nb\n", 5)
    monitor = StdoutMonitor({"got": got}, directory=tmp_path)
    monitor.block("stdout", b"c\n\n", 9)
    assert got == [("lines", "stdout", [b"a", b"b"], 5), ("stdout", b"c", 9),
                   ("stdout", b"", 11)]


# ----------------------------------------------------------------- the file monitor
STAMP = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ", re.M)
BLOCK = b"".join(b"line %d \x00 \xff \r\n" % i for i in range(500)) + b"\n" + b"z" * 300 + b"\n"


def file_output(tmp_path: Path, name: str, feed: Any, **options: Any) -> bytes:
    """What a file monitor writes for the calls ``feed(monitor)``, timestamps removed,
    rotated files first."""
    out = tmp_path / name
    monitor = FileMonitor(FileMonitor.check({"output": str(out), **options}),
                          name="g", directory=tmp_path)
    monitor.setup("pump start", None)
    feed(monitor)
    monitor.shutdown("stop")
    files = sorted(tmp_path.glob(f"{name}.*"), key=lambda p: -int(p.suffix[1:])) + [out]
    return b"\n--\n".join(STAMP.sub(b"", f.read_bytes()) for f in files)


def by_line(monitor: FileMonitor) -> None:
    for line in BLOCK[:-1].split(b"\n"):
        monitor.stdout(line)


@pytest.mark.parametrize("options", [{}, {"max_bytes": 10_000_000},
                                     {"max_bytes": 4000, "backups": 100}])
def test_the_file_monitor_writes_a_block_as_it_writes_each_line(tmp_path, options):
    per_line = file_output(tmp_path, "lines.log", by_line, **options)
    as_block = file_output(tmp_path, "block.log", lambda m: m.block("stdout", BLOCK, 0),
                           **options)
    assert as_block == per_line
    assert per_line.count(b"stdout | ") == 502
    assert (b"--" in per_line) == (options.get("max_bytes") == 4000)  # it rotated


# Lines that JSON escapes, that are not UTF-8 (a sequence cut by its newline), that look
# like format strings; and lines a dead pump's successor hands over again.
TRICKY = (b'a "quoted" \\ back\\slash %d %s %% \t tab\n'
          + b"cut \xe2\x82\nnext \xff\xfe bad \x00 nul \r cr\n"
          + "\u00e9t\u00e9 \u2028 \U0001f600 \\ud800\n".encode() + b"\n" + b"z" * 300 + b"\n")
TIMES = re.compile(rb', "mono": [0-9.e+-]+, "time": "[^"]+"')


def jsonl_output(tmp_path: Path, name: str, feed: Any, **options: Any) -> bytes:
    out = tmp_path / name
    monitor = JsonlMonitor(JsonlMonitor.check({"output": str(out), **options}), name="g",
                           directory=tmp_path)
    monitor.setup("pump start", None)
    monitor.spawn(4321)
    feed(monitor)
    monitor.shutdown("stop")
    files = sorted(tmp_path.glob(f"{name}.*"), key=lambda p: -int(p.suffix[1:])) + [out]
    return b"\n--\n".join(TIMES.sub(b"", f.read_bytes()) for f in files)


def jsonl_by_line(data: bytes, offset: int) -> Callable[[JsonlMonitor], None]:
    def feed(monitor: JsonlMonitor) -> None:
        at = offset
        for line in data[:-1].split(b"\n"):
            monitor.stdout(line, at)
            at += len(line) + 1
    return feed


@pytest.mark.parametrize("options", [{}, {"max_bytes": 1500, "backups": 100}])
@pytest.mark.parametrize("instance", [None, 2])
def test_the_jsonl_monitor_writes_a_block_as_it_writes_each_line(tmp_path, options, instance):
    def block(monitor: JsonlMonitor) -> None:
        monitor.instance = instance
        monitor.block("stdout", TRICKY * 3, 100)

    def lines(monitor: JsonlMonitor) -> None:
        monitor.instance = instance
        jsonl_by_line(TRICKY * 3, 100)(monitor)

    per_line = jsonl_output(tmp_path, "lines.jsonl", lines, **options)
    as_block = jsonl_output(tmp_path, "block.jsonl", block, **options)
    assert as_block == per_line
    records = [json.loads(x) for x in per_line.split(b"\n") if x.startswith(b"{")]
    texts = [r["line"] for r in records if "line" in r]
    assert texts[:6] == ['a "quoted" \\ back\\slash %d %s %% \t tab', "cut \ufffd",
                         "next \ufffd\ufffd bad \x00 nul \r cr",
                         "\u00e9t\u00e9 \u2028 \U0001f600 \\ud800", "", "z" * 300]
    assert (b"--" in per_line) == ("max_bytes" in options)  # it rotated


def test_the_jsonl_monitor_skips_the_lines_of_a_block_it_wrote_before(tmp_path):
    """A successor hands over a block whose first lines this monitor already wrote (its
    file's tail says so): the rest only, whatever the cut."""
    data = b"".join(b"line %d\n" % i for i in range(10))
    at = [sum(len(b"line %d\n" % j) for j in range(i)) for i in range(10)]

    def twice(monitor: JsonlMonitor) -> None:
        jsonl_by_line(data[:at[4]], 0)(monitor)
        monitor._kept = {"stdout": at[3]}
        monitor.block("stdout", data, 0)
        monitor.block("stdout", data, 0)  # all of it written: nothing

    output = jsonl_output(tmp_path, "again.jsonl", twice)
    lines = [json.loads(x)["line"] for x in output.split(b"\n") if b'"line"' in x]
    assert lines == [f"line {i}" for i in range(10)]


# ----------------------------------------------------------------- in a pump
TARGET = r"""
import os, sys
os.write(1, b"".join(b"line %d\n" % i for i in range(3000)))
os.write(1, b"y" * 150000 + b"\nafter\n")
os.write(1, b"partial end")
sys.exit(7)
"""
STREAM = (b"".join(b"line %d\n" % i for i in range(3000)) + b"y" * 150000 + b"\nafter\n"
          + b"partial end")


def test_block_lines_and_file_monitors_in_one_pump(started, tmp_path):
    paths = {name: tmp_path / f"{name}.jsonl" for name in ("block", "lines")}
    out = tmp_path / "out.log"
    started(sys.executable, ["-c", TARGET], monitors={
        "plugins.outputs:BlockOnly": {"path": str(paths["block"])},
        "plugins.outputs:LinesOnly": {"path": str(paths["lines"])},
        "file": {"output": str(out)}}, policy={"final_exit_codes": [7], "min_uptime": 0.0})
    for path in paths.values():
        wait_for(lambda: path.read_text() if path.exists() else "",
                 lambda text: '"shutdown"' in text, LONG, what=f"the shutdown in {path}")
    records = {name: [json.loads(x) for x in path.read_text().splitlines()]
               for name, path in paths.items()}
    blocks = [(r["data"].encode("latin-1"), r["offset"]) for r in records["block"]
              if r["hook"] == "block"]
    from_lines = []
    for batch in (r for r in records["lines"] if r["hook"] == "lines"):
        offset = batch["offset"]
        for line in (text.encode("latin-1") for text in batch["lines"]):
            from_lines.append((line, offset))
            offset += len(line) + 1
    expected = [(b"line %d" % i, sum(len(b"line %d\n" % j) for j in range(i)))
                for i in range(3000)]
    at = len(b"".join(b"line %d\n" % i for i in range(3000)))
    expected += [(b"y" * MAX, at), (b"y" * MAX, at + MAX), (b"y" * (150000 - 2 * MAX),
                                                            at + 2 * MAX),
                 (b"after", at + 150001), (b"partial end", at + 150007)]
    assert lines_of(blocks) == from_lines == expected
    # The bytes as written, but for the newlines after the pieces and the last line.
    assert b"".join(data for data, _ in blocks) == STREAM[:at + 2 * MAX].replace(
        b"y" * MAX, b"y" * MAX + b"\n") + STREAM[at + 2 * MAX:] + b"\n"
    assert len(blocks) < len(expected) / 10  # whole reads, not lines
    text = wait_for(lambda: out.read_bytes() if out.exists() else b"",
                    lambda data: b"shutdown" in data, LONG, what="the file's shutdown")
    written = [line.partition(b" | ")[2] for line in text.split(b"\n")
               if b" stdout | " in line]
    assert written == [line for line, _ in expected]
