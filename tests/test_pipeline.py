"""The event pipeline under load: backpressure, a raising monitor, the message channel."""

from __future__ import annotations

import json
import sys
import threading

import pytest

import immortal
from conftest import LONG, wait_for

pytestmark = pytest.mark.timeout(180)

LINES = 100_000
FLOOD = (f"import sys\nw = sys.stdout.write\nfor i in range({LINES}): w(f'line {{i}}\\n')\n"
         "sys.stdout.flush()\n")


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Sampler:
    """Samples a process's RSS every 20 ms in a thread; ``peak`` and ``first``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.first = rss(pid)
        self.peak = self.first
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.02):
            try:
                self.peak = max(self.peak, rss(self.pid))
            except OSError:
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


BOUND = 16 * 1024 * 1024  # growth allowed: journal, pipe buffers, Python's own arenas


@pytest.mark.parametrize("backpressure", ["block", "drop"])
def test_slow_monitor_keeps_memory_bounded(started, tmp_path, backpressure):
    path = tmp_path / "seen.json"
    # With "drop" the monitor has a queue of its own, which holds most of the flood: it is
    # made slower, so that it cannot take it all before the group ends.
    rounds = 30 if backpressure == "block" else 300
    group = started(sys.executable, ["-c", FLOOD], monitor="plugins.sample:Slow",
                    options={"path": str(path), "rounds": rounds}, backpressure=backpressure,
                    policy={"final_exit_codes": [0]})
    pump = group.pids["pump"]
    sampler = Sampler(pump)
    try:
        final = group.wait(150)
    finally:
        sampler.stop()
    assert final.state == "stopped"
    result = json.loads(path.read_text())
    assert sampler.peak - sampler.first < BOUND, (sampler.first, sampler.peak)
    if backpressure == "block":
        assert result == {"seen": LINES, "dropped": 0}
        assert final.dropped == 0
    else:
        assert result["dropped"] > 0 and result["seen"] + result["dropped"] == LINES
        assert final.dropped == result["dropped"]


def test_raising_monitor_over_many_lines(started, tmp_path):
    group = started(sys.executable, ["-c", FLOOD], monitor="plugins.sample:Noisy",
                    options={"path": str(tmp_path / "noisy.jsonl")},
                    policy={"final_exit_codes": [0]})
    sampler = Sampler(group.pids["pump"])
    try:
        final = group.wait(150)
    finally:
        sampler.stop()
    assert final.state == "stopped" and final.restarts == 0
    assert sampler.peak - sampler.first < BOUND
    log = (group.directory / "pump.log").read_text()
    reports = log.count("raised in 'stdout'")
    assert 1 <= reports <= 60  # rate-limited: one a second at most


def test_message_channel_both_ways(started, tmp_path):
    target = ("from immortal import channel\n"
              "channel.send({'hello': [1, 2]})\n"
              "print('reply', channel.receive(timeout=20), flush=True)\n"
              "import time; time.sleep(3600)\n")
    path = tmp_path / "messages.jsonl"
    out = tmp_path / "out.log"
    group = started(sys.executable, ["-c", target], channel=True,
                    monitors={"plugins.sample:Echo": {"path": str(path)},
                              "file": {"output": str(out)}})
    text = wait_for(lambda: out.read_text() if out.exists() else "",
                    lambda t: "reply" in t, timeout=LONG, what="the target's reply line")
    assert "reply {'echo': {'hello': [1, 2]}}" in text
    assert json.loads(path.read_text()) == {"hello": [1, 2]}
    assert group.status().restarts == 0


def test_monitor_send_without_a_channel_says_so(tmp_path):
    monitor = immortal.Monitor({})
    with pytest.raises(immortal.ChannelError, match="channel=True"):
        monitor.send({"x": 1})


def test_channel_helper_without_a_channel(monkeypatch):
    from immortal import channel

    monkeypatch.delenv("IMMORTAL_CHANNEL_FD", raising=False)
    assert not channel.available()
    with pytest.raises(immortal.ChannelError, match="IMMORTAL_CHANNEL_FD"):
        channel.send({"x": 1})
