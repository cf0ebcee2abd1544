"""Output as blocks: the relay hands whole lines over as one ``bytes`` with the first line's
offset; each monitor gets them through the one hook it has (block, lines, stdout/stderr).

The relay is driven by hand here, on a real pipe and a real journal; the last test runs the
whole path in a pump."""

from __future__ import annotations

import types
from typing import Any

import pytest

import immortal
from immortal.monitoring import Host

pytestmark = pytest.mark.timeout(120)


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
