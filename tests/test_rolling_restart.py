"""A rolling restart of real servers on one socket (``rollout``, docs/workers.md): four
instances of the stdlib server taking its socket by socket activation, a client asking as
fast as it can meanwhile, and a sampler of the pump's children: every instance replaced,
no request failed, never more than N + batch processes of the program; a broken release
aborts the roll with the old processes serving; SIGHUP and SIGCONT to the daemon roll, not
the SIGCONT that resumes a job-control stop."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import immortal
from conftest import LONG, PROGRAMS, SHORT, children_of, cmdline, proc_state, wait_for
from immortal._linux import is_alive
from immortal.cli import main

pytestmark = pytest.mark.timeout(120)

LISTENER = str(PROGRAMS / "listener.py")


def pids(status: immortal.Status) -> dict[int, int]:
    return {entry.instance: entry.pid for entry in status.instances if entry.pid}


class Traffic:
    """A client asking as fast as it can, and a sampler counting the program's processes
    (the pump's children running the listener), until ``done``."""

    def __init__(self, address: str, pump: int) -> None:
        host, port = address[len("tcp://"):].rsplit(":", 1)
        self.host, self.port, self.pump = host, int(port), pump
        self.answered = 0
        self.failures: list[str] = []
        self.most = 0
        self.done = threading.Event()

    def client(self) -> None:
        while not self.done.is_set():
            connection = http.client.HTTPConnection(self.host, self.port, timeout=SHORT)
            try:
                connection.request("GET", "/")
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    self.answered += 1
                else:
                    self.failures.append(f"status {response.status}")
            except OSError as exc:
                self.failures.append(repr(exc))
            finally:
                connection.close()

    def sampler(self) -> None:
        while not self.done.is_set():
            alive = 0
            for pid in children_of(self.pump):
                try:
                    alive += "listener.py" in cmdline(pid)
                except OSError:
                    pass
            self.most = max(self.most, alive)
            self.done.wait(0.002)

    def requests(self, more: int) -> None:
        """Wait until ``more`` requests more were answered."""
        start = self.answered
        wait_for(lambda: self.answered, lambda n: n >= start + more, LONG,
                 what=f"{more} requests answered")


@contextmanager
def traffic(group: immortal.Group) -> Iterator[Traffic]:
    status = group.status()
    running = Traffic(status.listen[0], status.pids["pump"])
    threads = [threading.Thread(target=running.client), threading.Thread(target=running.sampler)]
    for thread in threads:
        thread.start()
    try:
        running.requests(20)
        yield running
        running.requests(20)
    finally:
        running.done.set()
        for thread in threads:
            thread.join(LONG)


@pytest.fixture
def web(started: Callable[..., immortal.Group], tmp_path: Path) -> immortal.Group:
    """Four instances on one port, ready once they print 'serving', each answering the
    request in hand on TERM; broken while ``tmp_path / "broken"`` exists."""
    return started(LISTENER, ["--graceful", "--broken", str(tmp_path / "broken")],
                   workers=4, name="web", listen=["tcp://127.0.0.1:0"],
                   ready="line:^serving", ready_timeout=SHORT, stop_timeout=SHORT)


def test_a_roll_replaces_every_instance_refusing_no_request(web, capsys):
    before = pids(web.status())
    with traffic(web) as running:
        answered = running.answered
        assert main(["restart", "web"]) == 0
        assert running.answered > answered  # the client was served during the roll
        after = pids(web.status())
        assert set(after) == {0, 1, 2, 3}
        assert not set(after.values()) & set(before.values())
    assert running.failures == []
    assert 4 <= running.most <= 5, f"{running.most} processes of the program alive at once"
    status = web.status()
    assert status.roll["state"] == "done" and sorted(status.roll["replaced"]) == [0, 1, 2, 3]
    capsys.readouterr()
    assert main(["status", "web"]) == 0
    assert "  roll     #1 done: 4 of 4 replaced\n" in capsys.readouterr().out
    assert all(entry.ready and entry.state == "running" for entry in status.instances)
    # Each instance's lock file is held by its new process; no replacement lock is.
    directory = Path(status.directory)
    assert {p.name for p in directory.glob("target*.next.lock")} <= {
        "target.next.lock", *(f"target.{k}.next.lock" for k in range(1, 4))}


def test_the_graceful_server_answers_a_client_slow_to_send_its_request(web):
    """The server the rolls are tested with gives up an accept another instance won after
    a moment; a connection it did accept must wait for its request however long the client
    takes (a loaded machine), or the rolls' "no request failed" would fail for it."""
    host, port = web.status().listen[0][len("tcp://"):].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=LONG) as sock:
        time.sleep(0.5)  # the slow client itself, longer than the accept's give-up
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        answer = sock.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.0 200"), answer[:200]


def test_a_batch_of_two_and_one_instance_alone(web):
    before = pids(web.status())
    with traffic(web) as running:
        web.restart(batch=2)
        middle = pids(web.status())
        web.restart(instance=2)
    after = pids(web.status())
    assert not set(middle.values()) & set(before.values())
    assert after[2] != middle[2] and {k: after[k] for k in (0, 1, 3)} == \
        {k: middle[k] for k in (0, 1, 3)}
    assert running.failures == []
    assert running.most <= 6, f"{running.most} processes of the program alive at once"


def test_a_broken_release_aborts_the_roll_and_the_old_ones_serve(web, tmp_path, capsys):
    before = pids(web.status())
    (tmp_path / "broken").write_text("")
    with traffic(web) as running:
        with pytest.raises(immortal.StartError, match="instance 0") as failure:
            web.restart()
        assert ("instance 0: its replacement exited with status 4 before it was ready "
                "(ready=line:^serving)") in str(failure.value)
        assert failure.value.stderr and "broken:" in failure.value.stderr[-1]
        assert pids(web.status()) == before
        assert main(["restart", "web"]) == 1
        assert "rolling restart was aborted" in capsys.readouterr().err
    assert pids(web.status()) == before
    assert running.failures == []
    assert running.most <= 5
    (tmp_path / "broken").unlink()
    web.restart()  # and a good release after it
    assert not set(pids(web.status()).values()) & set(before.values())


def test_sighup_to_the_daemon_rolls_and_a_second_roll_is_refused(web):
    before = pids(web.status())
    status = web.status()
    with traffic(web) as running:
        os.kill(status.pids["daemon"], signal.SIGHUP)
        rolling = wait_for(web.status, lambda s: (s.roll or {}).get("state") == "rolling",
                           SHORT, what="the roll under way")
        with pytest.raises(immortal.NotRunning, match="in progress"):
            web.restart()
        assert rolling.roll["id"] == 1
        done = wait_for(web.status, lambda s: (s.roll or {}).get("state") == "done", LONG,
                        what="the roll done")
    assert not set(pids(done).values()) & set(before.values())
    assert running.failures == []
    assert running.most <= 5


def test_sigcont_to_the_daemon_rolls_one_instance_at_a_time(started, recorder):
    group = started(LISTENER, ["--graceful"], workers=2, name="web",
                    listen=["tcp://127.0.0.1:0"], ready="line:^serving",
                    ready_timeout=LONG, stop_timeout=SHORT, monitor="recorder",
                    options=recorder.options)
    before = pids(group.status())
    with traffic(group) as running:
        os.kill(group.status().pids["daemon"], signal.SIGCONT)
        done = wait_for(group.status, lambda s: (s.roll or {}).get("state") == "done", LONG,
                        what="the roll done")
    after = pids(done)
    assert done.roll["id"] == 1 and sorted(done.roll["replaced"]) == [0, 1]
    assert set(after) == {0, 1} and not set(after.values()) & set(before.values())
    assert running.failures == []
    assert running.most <= 3, f"{running.most} processes of the program alive at once"
    # One by one: each old process is gone before the next replacement is spawned.
    events = recorder.wait_for(lambda found: sum(
        event["hook"] == "exit" and event["pid"] in before.values() for event in found) == 2)
    steps = [(event["hook"], event["pid"]) for event in events
             if (event["hook"] == "respawn" and event["why"] == "roll")
             or (event["hook"] == "exit" and event["pid"] in before.values())]
    assert [hook for hook, _ in steps] == ["respawn", "exit", "respawn", "exit"], steps
    assert {steps[0][1], steps[2][1]} == set(after.values())
    assert {steps[1][1], steps[3][1]} == set(before.values())


def stopped_as_a_job(pid: int) -> None:
    """Ctrl-Z as a terminal sends it (SIGTSTP), then what ``fg`` sends (SIGCONT), each
    waited for: stopped, then back asleep in its loop (it took the SIGCONT)."""
    os.kill(pid, signal.SIGTSTP)
    wait_for(lambda: proc_state(pid), lambda state: state == "T", SHORT,
             what=f"process {pid} stopped")
    os.kill(pid, signal.SIGCONT)
    wait_for(lambda: proc_state(pid), lambda state: state == "S", SHORT,
             what=f"process {pid} resumed, back in its loop")


def test_the_sigcont_that_resumes_a_job_stop_does_not_roll(started):
    group = started(LISTENER, ["--graceful"], workers=2, name="web",
                    listen=["tcp://127.0.0.1:0"], ready="line:^serving",
                    ready_timeout=LONG, stop_timeout=SHORT)
    status = group.status()
    before, daemon = pids(status), status.pids["daemon"]
    stopped_as_a_job(daemon)
    stopped_as_a_job(daemon)  # twice: each stop's own SIGCONT is known
    # Had a SIGCONT rolled, this restart (the daemon passes it on after them) would be
    # refused as a second roll, or be roll #2.
    group.restart()
    middle = group.status()
    assert middle.roll["id"] == 1 and middle.pids["daemon"] == daemon
    assert not set(pids(middle).values()) & set(before.values())
    os.kill(daemon, signal.SIGCONT)  # a SIGCONT of its own, after all that: a roll
    done = wait_for(group.status, lambda s: (s.roll or {}).get("id") == 2
                    and s.roll["state"] == "done", LONG, what="roll #2 done")
    assert not set(pids(done).values()) & set(pids(middle).values())


def test_a_stop_during_a_roll_stops_old_and_new(web, tmp_path):
    status = web.status()
    os.kill(status.pids["daemon"], signal.SIGHUP)
    rolling = wait_for(web.status, lambda s: (s.roll or {}).get("replacements"), SHORT,
                       what="a replacement spawned")
    replacement = int(next(iter(rolling.roll["replacements"].values()))[0])
    web.stop()
    assert not os.path.exists(f"/proc/{replacement}") or \
        open(f"/proc/{replacement}/stat").read().split()[2] == "Z"
    for pid in pids(status).values():
        assert not os.path.exists(f"/proc/{pid}")


# A server that takes SIGTERM from its start. A replacement (its instance ran before)
# says it is ready only once told to stop and once the old process is gone, then never
# ends by itself: as a server whose start-up outlasts the stop's TERM.
READY_AS_IT_STOPS = """\
import os, signal, sys, time
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
mark = f"{sys.argv[1]}.{os.environ['IMMORTAL_INSTANCE']}"
deadline = time.monotonic() + 60
if os.path.exists(mark):
    old = int(open(mark).read())
    open(f"{mark}.replacement", "w").close()
    while not stopping and time.monotonic() < deadline:
        time.sleep(0.01)
    while os.path.exists(f"/proc/{old}") and time.monotonic() < deadline:
        time.sleep(0.01)
    print("up", flush=True)
    while time.monotonic() < deadline:
        time.sleep(0.01)
else:
    with open(mark + ".new", "w") as handle:
        handle.write(str(os.getpid()))
    os.replace(mark + ".new", mark)
    print("up", flush=True)
    while not stopping:
        time.sleep(0.01)
"""


def test_a_replacement_ready_as_the_stop_ends_it_takes_no_slot(started, tmp_path):
    """A stop during a roll whose replacement becomes ready only after the stop's TERM:
    the stop ends the group, the replacement KILLed after its grace period. Before, that
    readiness made the replacement the slot's running target, which nothing stopped, until
    the daemon killed the lot on the stop's deadline."""
    output = tmp_path / "out.log"
    group = started(sys.executable, ["-c", READY_AS_IT_STOPS, str(tmp_path / "ran")],
                    workers=2, ready="line:^up", ready_timeout=LONG, stop_timeout=1,
                    options={"output": str(output)})
    said: list[BaseException] = []

    def restart() -> None:
        try:
            group.restart()
        except immortal.ImmortalError as exc:  # the roll ends with the group
            said.append(exc)

    caller = threading.Thread(target=restart)
    caller.start()
    try:
        wait_for(lambda: list(tmp_path.glob("ran.*.replacement")), bool, SHORT,
                 what="a replacement taking SIGTERM")
        status = group.stop()
    finally:
        caller.join(LONG)
    assert len(said) == 1 and "stopped" in str(said[0]), said
    assert status.state == "stopped" and status.reason == "stop", status.reason
    events = [line for line in output.read_text().splitlines() if " event" in line]
    assert sum(" spawn pid " in line for line in events) == 2, events
    assert sum(" respawn pid " in line for line in events) == 1, events  # the replacement


def test_a_group_of_one_that_listens_rolls_too(started):
    group = started(LISTENER, ["--graceful"], name="one", listen=["tcp://127.0.0.1:0"],
                    ready="line:^serving", stop_timeout=SHORT)
    before = group.pids["target"]
    with traffic(group) as running:
        group.restart()
    assert group.pids["target"] != before
    assert group.status().roll["state"] == "done"
    assert running.failures == []
    assert 1 <= running.most <= 2


@pytest.mark.parametrize("role", ["pump", "daemon"])
def test_a_supervisor_killed_during_a_roll_and_its_successor_resumes_it(
        started, tmp_path, role, capsys):
    """The old processes serve on, the new pump takes the replacement over and the roll
    goes on to its end; the caller waits through it; no request fails."""
    # Each replacement waits 1 s before it serves (and says so): time to kill the role.
    group = started(LISTENER, ["--graceful", "--state", str(tmp_path / "pids"),
                               "--delay", "1"], workers=2, name="web",
                    listen=["tcp://127.0.0.1:0"], ready="line:^serving",
                    ready_timeout=LONG, stop_timeout=SHORT)
    before = pids(group.status())
    outcome: list[BaseException | None] = []

    def restart() -> None:
        try:
            group.restart()
            outcome.append(None)
        except BaseException as exc:  # what the caller of a roll sees
            outcome.append(exc)

    with traffic(group) as running:
        caller = threading.Thread(target=restart)
        caller.start()
        rolling = wait_for(group.status, lambda s: (s.roll or {}).get("replacements"), SHORT,
                           what="a replacement spawned")
        replacement, started_at = next(iter(rolling.roll["replacements"].values()))
        assert main(["status", "web"]) == 0
        assert (f"  roll     #1 rolling (batch 1): 0 of 2 replaced; replacing web:0 pid "
                f"{replacement}\n") in capsys.readouterr().out
        os.kill(rolling.pids[role], signal.SIGKILL)
        caller.join(LONG)
        assert outcome == [None]
        status = group.status()
        assert status.pids[role] != rolling.pids[role]
        assert status.roll["state"] == "done" and status.roll["id"] == 1
        assert sorted(status.roll["replaced"]) == [0, 1]
        after = pids(status)
        assert after[0] == replacement  # taken over, not spawned again
        assert not set(after.values()) & set(before.values())
        assert all(entry.ready for entry in status.instances)
        for pid in before.values():
            wait_for(lambda: is_alive(pid, None), lambda alive: not alive, SHORT,
                     what=f"old process {pid} gone")
    assert running.failures == []
    assert running.most <= 4


def test_a_pump_killed_after_a_slot_was_replaced_leaves_that_slot_alone(
        started, tmp_path, capsys):
    """The roll records each slot once it is replaced, not only at its end: the status
    counts it meanwhile, and the successor of a pump killed while slot 1 is replaced
    takes slot 1's replacement over and replaces slot 0 no more."""
    # Each replacement waits a second before it serves: slot 1's is still starting when
    # the status is read and the pump killed.
    group = started(LISTENER, ["--graceful", "--state", str(tmp_path / "pids"), "--delay",
                               "1"], workers=2, name="web", listen=["tcp://127.0.0.1:0"],
                    ready="line:^serving", ready_timeout=LONG, stop_timeout=SHORT)
    caller = threading.Thread(target=group.restart)
    caller.start()
    try:
        second = wait_for(group.status,
                          lambda s: "1" in ((s.roll or {}).get("replacements") or {}), LONG,
                          what="slot 1's replacement spawned")
        first = pids(second)[0]
        assert second.roll["replaced"] == [0]
        assert main(["status", "web"]) == 0
        assert "  roll     #1 rolling (batch 1): 1 of 2 replaced; replacing web:1 pid " \
            in capsys.readouterr().out
        os.kill(second.pids["pump"], signal.SIGKILL)
    finally:
        caller.join(LONG)
    assert not caller.is_alive()
    status = group.status()
    assert status.roll["state"] == "done" and sorted(status.roll["replaced"]) == [0, 1]
    assert status.pids["pump"] != second.pids["pump"]
    assert pids(status) == {0: first, 1: int(second.roll["replacements"]["1"][0])}


def test_a_pump_killed_while_an_old_process_drains_and_the_roll_goes_on(started, tmp_path):
    """Each instance holds a slow request, until the test lets it go: the old process of
    slot 0, told to go once its replacement is ready, drains it while the pump is killed.
    The successor retires it again (its request still answered), swaps the slot once it is
    gone, and rolls slot 1."""
    group = started(LISTENER, ["--graceful"], workers=2, name="web",
                    listen=["tcp://127.0.0.1:0"], ready="line:^serving",
                    ready_timeout=LONG, stop_timeout=LONG)
    before = pids(group.status())
    host, port = group.status().listen[0][len("tcp://"):].rsplit(":", 1)
    held: list[int | BaseException] = []
    gate = tmp_path / "answer"

    def hold() -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=LONG)
        try:
            connection.request("GET", f"/?until={gate}")
            held.append(json.loads(connection.getresponse().read())["pid"])
        except BaseException as exc:  # what the test reports
            held.append(exc)
        finally:
            connection.close()

    holders = [threading.Thread(target=hold) for _ in before]
    with traffic(group) as running:
        # The client's requests wait from here until slot 0's replacement is ready.
        for thread in holders:
            thread.start()
        wait_for(lambda: {pid for pid in before.values()
                          if os.path.exists(f"{gate}.{pid}")},
                 lambda busy: busy == set(before.values()), SHORT,
                 what="each instance holding a slow request")
        caller = threading.Thread(target=group.restart)
        caller.start()
        draining = wait_for(group.status, lambda s: 0 in (s.roll or {}).get("ready", ()),
                            LONG, what="slot 0's replacement ready")
        os.kill(draining.pids["pump"], signal.SIGKILL)
        gate.touch()  # the slow requests are answered: the old processes go
        caller.join(LONG)
        assert not caller.is_alive()
        for thread in holders:
            thread.join(LONG)
    assert sorted(held) == sorted(before.values())  # both slow requests answered
    status = group.status()
    assert status.roll["state"] == "done" and sorted(status.roll["replaced"]) == [0, 1]
    assert status.pids["pump"] != draining.pids["pump"]
    after = pids(status)
    assert after[0] == int(draining.roll["replacements"]["0"][0])
    assert not set(after.values()) & set(before.values())
    assert running.failures == []


def test_all_at_once_is_the_old_restart_and_a_bad_batch_is_refused(web, capsys):
    before = pids(web.status())
    with pytest.raises(immortal.InvalidSpec, match="'batch'"):
        web.restart(batch=0)
    assert main(["restart", "web", "--batch", "0"]) == 2
    assert "--batch must be an int, 1 or more (got 0)" in capsys.readouterr().err
    web.restart(all_at_once=True)
    status = web.status()
    assert status.roll is None  # no roll was made
    assert not set(pids(status).values()) & set(before.values())


def test_the_promise_across_a_roll_and_every_kill(web):
    """Four servers on one socket, a client asking as fast as it can: a rolling restart, the
    pump killed, the daemon killed and one instance killed, and not one request fails."""
    from test_workers import idle_stopped

    with traffic(web) as running:
        before = pids(web.status())
        web.restart()
        rolled = pids(web.status())
        assert set(rolled) == {0, 1, 2, 3} and not set(rolled.values()) & set(before.values())
        assert 4 <= running.most <= 5, f"{running.most} processes of the program alive at once"
        for role in ("pump", "daemon"):
            old = web.status().pids[role]
            os.kill(old, signal.SIGKILL)
            wait_for(lambda: web.status().pids.get(role), lambda pid: pid and pid != old,
                     LONG, what=f"a new {role}")
            running.requests(20)
            assert pids(web.status()) == rolled, f"the {role}'s death touched an instance"
        victim = rolled[2]
        idle_stopped(victim)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: pids(web.status()).get(2), lambda pid: pid and pid != victim, LONG,
                 what="instance 2 respawned")
        wait_for(lambda: web.status().ready, bool, LONG, what="instance 2 ready again")
    assert running.failures == []
    after = pids(web.status())
    assert {k: pid for k, pid in after.items() if k != 2} == \
        {k: pid for k, pid in rolled.items() if k != 2}


def test_a_roll_a_stop_ends_says_nothing_keeps_serving(started, tmp_path):
    """The caller of a roll that a stop ends is told so, not that the old processes keep
    serving (none does: the group is stopped)."""
    group = started(LISTENER, ["--graceful", "--delay", "1"], workers=2, name="web",
                    listen=["tcp://127.0.0.1:0"], ready="line:^serving",
                    ready_timeout=LONG, stop_timeout=SHORT)
    failed: list[BaseException] = []

    def roll() -> None:
        try:
            group.restart()
        except (immortal.StartError, immortal.NotRunning) as exc:
            failed.append(exc)

    thread = threading.Thread(target=roll)
    thread.start()
    try:
        wait_for(group.status, lambda s: (s.roll or {}).get("replacements"), SHORT,
                 what="a replacement spawned")
        group.stop()
    finally:
        thread.join(LONG)
    assert failed and "keep serving" not in str(failed[0]), failed


def test_old_and_new_killed_together_as_the_slot_swaps_leave_it_supervised(started, tmp_path):
    """The old target draining (told to go, its replacement ready) and the replacement
    killed at once (a signal to the group reaches both): the old one's death swaps the slot
    to its replacement, whose death, reported in the same turn of the pump's loop, is the
    slot's to handle from then on. Before, the roll's stale watch took it: the slot showed
    the dead pid as running and ready, was never spawned again, and nothing served."""
    group = started(LISTENER, ["--graceful"], name="swapkill", listen=["tcp://127.0.0.1:0"],
                    ready="line:^serving", ready_timeout=LONG, stop_timeout=LONG)
    old = group.pids["target"]
    host, port = group.status().listen[0][len("tcp://"):].rsplit(":", 1)
    gate = tmp_path / "answer"

    def hold() -> None:  # keeps the old process draining once it is told to go
        connection = http.client.HTTPConnection(host, int(port), timeout=LONG)
        try:
            connection.request("GET", f"/?until={gate}")
            connection.getresponse().read()
        except OSError:
            pass  # killed with the request held
        finally:
            connection.close()

    def restart() -> None:
        try:
            group.restart()
        except immortal.ImmortalError:
            pass  # the roll may say its replacement died: the slot is what is checked

    holder = threading.Thread(target=hold)
    caller = threading.Thread(target=restart)
    try:
        holder.start()
        wait_for(lambda: os.path.exists(f"{gate}.{old}"), bool, SHORT,
                 what="the old process holding a slow request")
        caller.start()
        ready = wait_for(group.status, lambda s: 0 in (s.roll or {}).get("ready", ()), LONG,
                         what="the replacement ready, the old process draining")
        new = int(ready.roll["replacements"]["0"][0])
        # Both dead, the old one first, before the pump looks: one turn of its loop gets
        # both deaths, in that order (a signal to the group sends them so, but the pump may
        # look in between).
        pump = ready.pids["pump"]
        os.kill(pump, signal.SIGSTOP)
        try:
            for pid in (old, new):
                os.kill(pid, signal.SIGKILL)
                wait_for(lambda: proc_state(pid), lambda state: state in ("Z", None), SHORT,
                         what=f"{pid} dead")
        finally:
            os.kill(pump, signal.SIGCONT)
        caller.join(LONG)
        status = wait_for(group.status, lambda s: s.pids.get("target") not in (None, old, new)
                          and is_alive(s.pids["target"], s.start_times.get("target")),
                          LONG, what="the slot spawned again")
        assert status.state == "running", status
    finally:
        gate.touch()
        holder.join(LONG)
        caller.join(LONG)


def test_an_aborted_roll_says_the_old_process_serves_only_if_it_does():
    """Whose old process keeps serving, by the status a failed roll's caller reads."""
    from immortal.group import _serves
    from immortal.state import InstanceStatus, Status

    several = Status("g", "running", instances=[
        InstanceStatus(instance=0, state="running", pid=10, program="web"),
        InstanceStatus(instance=1, state="backoff", pid=None, program="web")])
    assert _serves(several, "web:0") and not _serves(several, "web:1")
    assert _serves(several, None)
    one = Status("g", "backoff", pids={"pump": 5})
    assert not _serves(one, 0) and _serves(Status("g", "running", pids={"target": 7}), 0)
