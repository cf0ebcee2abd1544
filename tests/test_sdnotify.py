"""immortal's own sd_notify messages to its service manager (``sdnotify``), in the
foreground: the protocol's logic with a fake clock, then a real foreground group talking to
a datagram socket that stands in for systemd's NOTIFY_SOCKET."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import LONG, SHORT, TALKER, wait_for
from immortal.sdnotify import Notifier, address, watchdog_interval
from immortal.state import read_status

pytestmark = pytest.mark.timeout(120)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_address_is_a_path_or_an_abstract_name():
    assert address("/run/systemd/notify") == "/run/systemd/notify"
    assert address("@abc") == b"\0abc"
    assert address("") is None and address("vsock:2:99") is None


def test_the_watchdog_is_ours_only_when_systemd_meant_this_process():
    assert watchdog_interval({"WATCHDOG_USEC": "2000000"}, 7) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "7"}, 7) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "8"}, 7) is None
    assert watchdog_interval({}, 7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, 7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, 7) is None


def test_pings_every_half_interval_only_while_healthy_and_never_without_a_watchdog():
    sent: list[bytes] = []
    clock = Clock()
    notifier = Notifier(sent.append, 4.0, clock)
    clock.now = 100.5
    assert notifier.next_ping(True) == 100.0  # the first at once: a time that stays put
    notifier.ping()
    assert notifier.next_ping(True) == 102.5
    assert notifier.next_ping(False) is None  # unhealthy: no timer at all
    clock.now = 103.0
    notifier.ping()
    assert notifier.next_ping(True) == 105.0
    clock.now = 105.0
    notifier.ping(vouched=False)  # the pump not seen draining: no ping, a look again later
    assert notifier.next_ping(True) == 107.0
    notifier.stopping()
    assert notifier.next_ping(True) is None
    assert sent == [b"WATCHDOG=1", b"WATCHDOG=1", b"STOPPING=1"]
    assert Notifier(sent.append, None, clock).next_ping(True) is None


def test_status_only_when_it_changes_stopping_once_reloading_stamped():
    sent: list[bytes] = []
    clock = Clock()
    notifier = Notifier(sent.append, None, clock)
    notifier.status("running")
    notifier.status("running")
    notifier.ready("running")  # said already: READY=1 alone
    notifier.status("backoff;\nrestarts 1")
    notifier.reloading()
    notifier.stopping()
    notifier.stopping()
    assert sent == [b"STATUS=running", b"READY=1", b"STATUS=backoff; restarts 1",
                    b"RELOADING=1\nMONOTONIC_USEC=100000000", b"STOPPING=1"]


def test_no_ready_once_stopping_a_reload_cut_short_by_a_stop():
    sent: list[bytes] = []
    notifier = Notifier(sent.append, None, Clock())
    notifier.ready("running")
    notifier.reloading()
    notifier.stopping()  # the stop came during the rolling restart
    notifier.ready("stopping")  # the reload is over: the group ends
    assert sent[-2:] == [b"STOPPING=1", b"STATUS=stopping"]


# --- a foreground group and a stand-in for systemd --------------------------------------------

class Manager:
    """A datagram socket at NOTIFY_SOCKET's path: what the service sent, in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def heard(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return list(self.messages)

    def wait_for(self, wanted: str, timeout: float = SHORT) -> list[str]:
        return wait_for(self.heard, lambda got: any(wanted in m for m in got), timeout,
                        f"{wanted!r} from the service")


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Manager]:
    found = Manager(tmp_path / "notify")
    yield found
    found.sock.close()


def run_foreground(home: Path, manager: Manager, name: str, *words: str,
                   **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "immortal", "run", "--foreground", "-n", name, *words],
        env={**os.environ, "IMMORTAL_HOME": str(home), "NOTIFY_SOCKET": str(manager.path),
             **env}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def ended(popen: subprocess.Popen[str]) -> int:
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)  # a test that failed half-way: stop it
    try:
        popen.communicate(timeout=LONG)
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.communicate()
    return popen.returncode


def test_ready_only_once_the_target_is_ready_and_stopping_on_stop(home, manager):
    popen = run_foreground(home, manager, "notified", "--ready", "line:^got USR1", TALKER,
                           "--", "--trap", "USR1", "--env", "NOTIFY_SOCKET", "--env",
                           "WATCHDOG_USEC")
    try:
        manager.wait_for("(not ready)")  # up, the target running, not ready yet
        output = home / "notified" / "output.log"
        text = wait_for(lambda: output.read_text() if output.exists() else "",
                        lambda text: "env WATCHDOG_USEC" in text)  # its trap is set by now
        # immortal's own socket is not the target's
        assert "env NOTIFY_SOCKET=None" in text and "env WATCHDOG_USEC=None" in text
        assert not any("READY=1" in m for m in manager.heard())
        status = read_status(home / "notified")
        os.kill(status.pids["target"], signal.SIGUSR1)  # now it is
        manager.wait_for("READY=1")
        stop = subprocess.run([sys.executable, "-m", "immortal", "stop", "notified"],
                              env={**os.environ, "IMMORTAL_HOME": str(home)},
                              capture_output=True, text=True, timeout=LONG)
        assert stop.returncode == 0, stop.stderr
        heard = manager.wait_for("STOPPING=1")
    finally:
        code = ended(popen)
    assert code == 0
    assert not any("WATCHDOG=1" in m for m in heard)  # none asked: no pings
    assert heard.index(next(m for m in heard if "READY=1" in m)) < \
        heard.index("STOPPING=1")


def test_a_reload_is_announced_and_the_watchdog_pinged(home, manager):
    popen = run_foreground(home, manager, "reloaded", TALKER, WATCHDOG_USEC="400000")
    try:
        manager.wait_for("READY=1")
        wait_for(lambda: sum(m == "WATCHDOG=1" for m in manager.heard()), lambda n: n >= 3,
                 SHORT, "three pings")
        before = len(manager.heard())
        popen.send_signal(signal.SIGHUP)
        heard = manager.wait_for("RELOADING=1")
        reloading = next(m for m in heard if m.startswith("RELOADING=1"))
        stamp = int(reloading.split("MONOTONIC_USEC=")[1])
        assert abs(stamp / 1e6 - time.monotonic()) < SHORT
        wait_for(lambda: manager.heard()[before:],
                 lambda got: "READY=1" in [m.split("\n")[0] for m in
                                           got[got.index(reloading) + 1:]],
                 LONG, "READY=1 after the reload")
        assert read_status(home / "reloaded").spawned == 2
        popen.send_signal(signal.SIGTERM)
        manager.wait_for("STOPPING=1")
    finally:
        code = ended(popen)
    assert code == 0


# Writes 64 KiB blocks of lines for ever: blocked in its writes as soon as nobody reads.
FLOOD = "import os\nblock = b'x' * 99 + b'\\n'\nwhile True: os.write(1, block * 655)\n"


def test_the_pings_stop_once_a_frozen_pump_leaves_output_waiting(home, manager):
    """Not only once the status tells the stall: at the second look that finds output
    waiting and nothing drained since the first (a ping's period, 0.2 s here); they come
    again once the pump runs."""
    popen = run_foreground(home, manager, "frozen", "-o", "output=/dev/null", sys.executable,
                           "--", "-c", FLOOD, WATCHDOG_USEC="400000")
    try:
        manager.wait_for("READY=1")
        pump = read_status(home / "frozen").pids["pump"]
        os.kill(pump, signal.SIGSTOP)
        try:
            frozen = len(manager.heard())
            manager.wait_for("output stalled", LONG)
            heard = manager.heard()
            after = heard[frozen:heard.index(next(m for m in heard if "output stalled" in m))]
            # The look that first found output waiting may ping, the next one no longer.
            assert after.count("WATCHDOG=1") <= 2, after
        finally:
            os.kill(pump, signal.SIGCONT)
        resumed = len(manager.heard())
        wait_for(lambda: manager.heard()[resumed:], lambda got: "WATCHDOG=1" in got, LONG,
                 "a ping once the pump drains again")
        popen.send_signal(signal.SIGTERM)
        manager.wait_for("STOPPING=1")
    finally:
        code = ended(popen)
    assert code == 0
