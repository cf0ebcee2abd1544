"""A group of several instances of its program (``workers``): each instance supervised on
its own by one daemon and one pump, the fault model held for all of them, each line of
each instance delivered once and marked with its instance, and ``NAME:K`` addressing; with
socket activation (every instance serving the same sockets) and readiness (the start
answered once every instance is ready)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import immortal
from conftest import LONG, PROGRAMS, SHORT, descendants, proc_state, wait_for
from immortal._linux import is_alive
from immortal.cli import main

pytestmark = pytest.mark.timeout(120)

# Each instance says who it is, then (with a count) writes numbered lines, a steady stream,
# and waits; USR1 makes it say so.
PROGRAM = """\
import os, signal, sys, time
k = os.environ["IMMORTAL_INSTANCE"]
signal.signal(signal.SIGUSR1, lambda *_: os.write(1, b"usr1 %s\\n" % k.encode()))
if sys.argv[1:2] == ["stubborn"]:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
os.write(1, b"i=%s g=%s\\n" % (k.encode(), os.environ["IMMORTAL_GROUP"].encode()))
count = int(sys.argv[2]) if len(sys.argv) > 2 else 0
for n in range(count):
    os.write(1, b"w %s %06d\\n" % (k.encode(), n))
    time.sleep(0.001)
while True:
    time.sleep(3600)
"""
LINE = re.compile(rb" stdout:(\d+) \| w (\d+) (\d+)$")


def start(started, workers: int = 4, *args: str, **kwargs):
    return started(sys.executable, ["-c", PROGRAM, *args], workers=workers, **kwargs)


def running(group, count: int):
    """The status once ``count`` instances run, each with a live target that has said who
    it is (its USR1 handler is set)."""
    status = wait_for(group.status, lambda s: s.state == "running"
                      and len(s.instances) == count
                      and all(e.state == "running" and e.pid and is_alive(e.pid, e.start_time)
                              for e in s.instances), LONG, what=f"{count} running instances")

    def said(out: bytes) -> bool:
        for entry in status.instances:
            k = entry.instance
            spawned = re.search(rb"event:%d  \| (re)?spawn pid %d\n" % (k, entry.pid), out)
            if not spawned or f"stdout:{k} | i={k} ".encode() not in out[spawned.end():]:
                return False
        return True
    wait_for(lambda: output(group), said, LONG, what="each instance's first line")
    return status


def pids(status) -> dict[int, int]:
    return {entry.instance: entry.pid for entry in status.instances}


def output(group) -> bytes:
    try:
        with open(group.output, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return b""


def numbered(group) -> dict[int, list[int]]:
    """Each instance's numbered lines, in the order the file monitor wrote them."""
    found: dict[int, list[int]] = defaultdict(list)
    for line in output(group).split(b"\n"):
        match = LINE.search(line)
        if match:
            assert match.group(1) == match.group(2), line  # marked with its own instance
            found[int(match.group(1))].append(int(match.group(3)))
    return found


def test_each_instance_runs_with_its_number_its_pid_and_its_marked_lines(started):
    group = start(started, 4, name="web")
    status = running(group, 4)
    assert sorted(pids(status)) == [0, 1, 2, 3]
    assert len(set(pids(status).values())) == 4
    assert "target" not in status.pids and status.spawned == 4
    for k in range(4):
        wait_for(lambda: output(group), lambda out: f"stdout:{k} | i={k} g=web".encode()
                 in out, SHORT, what=f"instance {k}'s first line")
    text = output(group).decode()
    assert all(f"event:{k}  | spawn pid {pid}" in text for k, pid in pids(status).items())
    assert "event  | pump start" in text  # the group's own events are not marked


def test_a_killed_instance_alone_is_restarted(started):
    group = start(started, 4, policy={"min_uptime": 0.0})
    before = pids(running(group, 4))
    os.kill(before[2], signal.SIGKILL)
    after = wait_for(group.status, lambda s: pids(s).get(2) not in (None, before[2])
                     and s.instances[2].state == "running", SHORT, what="instance 2 again")
    now = pids(after)
    assert {k: now[k] for k in (0, 1, 3)} == {k: before[k] for k in (0, 1, 3)}
    assert [e.restarts for e in after.instances] == [0, 0, 1, 0]
    assert after.instances[2].last_exit.signal == signal.SIGKILL
    assert after.instances[2].last_exit.instance == 2
    wait_for(lambda: output(group), lambda out: f"event:2  | exit pid {before[2]}: killed "
             "by SIGKILL".encode() in out, SHORT, what="instance 2's exit event")


def whole(group, before: dict[int, int], gone: set[int]):
    """The status once a live daemon and pump (none of ``gone``) run the same targets."""
    def ready(status) -> bool:
        return (status.running and pids(status) == before
                and all(status.pids.get(role) not in (None, *gone)
                        and is_alive(status.pids[role], status.start_times.get(role))
                        for role in ("daemon", "pump")))
    return wait_for(group.status, ready, LONG, what="the group whole again")


def test_the_pump_and_the_daemon_killed_keep_every_target_and_every_line(started):
    count = 3000
    group = start(started, 4, "steady", str(count))
    before = pids(running(group, 4))
    first = group.status().pids
    wait_for(lambda: numbered(group), lambda lines: len(lines) == 4
             and min(map(len, lines.values())) >= 300, LONG, what="lines flowing")
    os.kill(first["pump"], signal.SIGKILL)
    after_pump = whole(group, before, {first["pump"]})
    wait_for(lambda: numbered(group), lambda lines: min(map(len, lines.values())) >= 1500,
             LONG, what="more lines")
    os.kill(after_pump.pids["daemon"], signal.SIGKILL)
    whole(group, before, {first["pump"], after_pump.pids["daemon"]})
    lines = wait_for(lambda: numbered(group), lambda lines: all(
        len(set(lines[k])) == count for k in range(4)), LONG, what="every line")
    for k in range(4):
        assert lines[k] == list(range(count)), f"instance {k}: lost, repeated or reordered"
    for pid in before.values():
        assert is_alive(pid, None)
    assert [e.restarts for e in group.status().instances] == [0, 0, 0, 0]


def test_a_stop_ends_every_instance_at_once(started):
    group = start(started, 4, "stubborn", stop_timeout=1.5)
    before = pids(running(group, 4))
    began = time.monotonic()
    final = group.stop()
    took = time.monotonic() - began
    assert final.state == "stopped" and not final.running
    assert not any(is_alive(pid, None) for pid in before.values())
    # TERM is ignored by each: one grace period for all, not one after another (6 s).
    assert 1.4 <= took < 4.5, took
    assert all(e.state == "stopped" and e.pid is None for e in final.instances)
    assert {f"target.{k}.lock" for k in (1, 2, 3)} <= set(os.listdir(group.directory))


def test_restart_of_all_and_of_one(started):
    group = start(started, 3, policy={"min_uptime": 0.0})
    before = pids(running(group, 3))
    group.restart(instance=1)
    after_one = pids(group.status())
    assert after_one[1] != before[1]
    assert {k: after_one[k] for k in (0, 2)} == {k: before[k] for k in (0, 2)}
    group.restart()
    after_all = pids(running(group, 3))
    assert all(after_all[k] != after_one[k] for k in range(3))
    with pytest.raises(immortal.InvalidSpec, match="'instance' must be from 0 to 2"):
        group.signal("USR1", instance=3)


def test_a_batch_with_all_at_once_is_refused_before_anything_restarts(started):
    group = start(started, 2)
    before = pids(running(group, 2))
    with pytest.raises(immortal.InvalidSpec, match="give one or the other "
                       r"\(got batch=2, all_at_once=True\)"):
        group.restart(batch=2, all_at_once=True)
    assert pids(group.status()) == before
    assert group.status().roll is None


def test_the_cli_addresses_one_instance_as_name_colon_k(started, capsys):
    group = start(started, 3, name="api", policy={"min_uptime": 0.0})
    before = pids(running(group, 3))
    assert main(["signal", "api:1", "USR1"]) == 0
    wait_for(lambda: output(group), lambda out: b"stdout:1 | usr1 1" in out, SHORT,
             what="instance 1's USR1")
    assert main(["signal", "api", "USR1"]) == 0
    # Each instance's line comes through its own pipe: instance 1's second may come last.
    wait_for(lambda: output(group), lambda out: all(
        f"stdout:{k} | usr1 {k}".encode() in out for k in (0, 2))
        and out.count(b"usr1 1") == 2, SHORT, what="every instance's USR1, instance 1's twice")
    assert main(["restart", "api:2"]) == 0
    now = pids(running(group, 3))
    assert now[2] != before[2] and now[0] == before[0] and now[1] == before[1]
    capsys.readouterr()
    assert main(["status", "api"]) == 0
    shown = capsys.readouterr().out
    for k in range(3):
        assert re.search(rf"^  api:{k} +pid {now[k]}, running", shown, re.M), shown
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert re.search(rf"^api:2 +running +{now[2]}", listed, re.M), listed
    assert main(["signal", "api:7", "USR1"]) == 2
    assert main(["restart", "api:x"]) == 2
    # logs NAME:K: that instance's lines and events alone, from the file's end.
    assert main(["logs", "api:1", "-n", "3"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert len(shown) == 3 and all(" stdout:1 | " in line or " event:1 " in line
                                   for line in shown), shown
    assert any("usr1 1" in line for line in shown), shown
    mine = list(group.tail(1000, instance=2))
    assert mine and all(b" stdout:2 | " in line or b" event:2 " in line for line in mine)
    assert any(b"spawn pid %d" % now[2] in line for line in mine)


def test_logs_of_an_instance_the_group_does_not_have_is_refused(started, capsys):
    """As signal and restart refuse it, rather than print nothing and succeed."""
    group = start(started, 4, name="four")
    running(group, 4)
    capsys.readouterr()
    assert main(["logs", "four:9"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "NAME:K must be from 0 to 3: group 'four' runs 4 instance(s) (got 9)" \
        in captured.err, captured.err
    for read in (group.tail, group.follow):
        with pytest.raises(immortal.InvalidSpec, match="'instance' must be from 0 to 3"):
            read(instance=4)
    group.stop()
    # A stopped group keeps its instances, and their lines: K is checked against them.
    assert main(["logs", "four:3", "-n", "1"]) == 0
    assert " event:3 " in capsys.readouterr().out


def test_scale_up_keeps_the_running_and_down_retires_the_highest(started, capsys):
    group = start(started, 2, name="pool", stop_timeout=2.0)
    before = pids(running(group, 2))
    grown = group.scale(4)
    assert {k: pids(grown)[k] for k in (0, 1)} == before
    after = pids(running(group, 4))
    # The daemon holds the new instances' files: a new pump adopts all four.
    pump = group.status().pids["pump"]
    os.kill(pump, signal.SIGKILL)
    whole(group, after, {pump})
    assert main(["scale", "pool", "1"]) == 0
    assert "'pool' runs 1 instance(s): target " in capsys.readouterr().out
    status = group.status()
    assert status.instances == [] and status.pids["target"] == after[0]  # a group of one
    assert not any(is_alive(after[k], None) for k in (1, 2, 3))
    text = output(group).decode()
    assert all(f"event:{k}  | exit pid {after[k]}: killed by SIGTERM" in text for k in (1, 2, 3))
    with pytest.raises(immortal.InvalidSpec, match="'workers' must be from 1 to"):
        group.scale(0)


def test_a_daemon_killed_under_a_pump_with_monitor_threads_keeps_every_instance(started):
    """Backpressure "drop" runs a thread per monitor in the pump, which then exec's into
    the daemon (``roles.hand_over``) instead of becoming it in place: every instance's
    files and target go through the exec and the fresh successor pump."""
    group = start(started, 3, backpressure="drop")
    before = pids(running(group, 3))
    daemon = group.status().pids["daemon"]
    os.kill(daemon, signal.SIGKILL)
    after = whole(group, before, {daemon})
    assert [e.restarts for e in after.instances] == [0, 0, 0]
    assert main(["signal", f"{group.name}:2", "USR1"]) == 0
    wait_for(lambda: output(group), lambda out: b"stdout:2 | usr1 2" in out, SHORT,
             what="instance 2's USR1 through the new pump")


# --- with socket activation -----------------------------------------------------------------

LISTENER = str(PROGRAMS / "listener.py")
CURL = shutil.which("curl")


def curl(address: str, path: str = "/") -> dict:
    """GET ``path`` from the HTTP server at ``address`` (``tcp://HOST:PORT``) with curl."""
    result = subprocess.run([CURL, "-sS", "--fail", "--max-time", str(SHORT),
                             f"http://{address[len('tcp://'):]}{path}"],
                            capture_output=True, text=True, timeout=SHORT + 5)
    assert result.returncode == 0, f"curl {address}{path}: {result.stderr}"
    return json.loads(result.stdout)


def each_answers(address: str, want: dict[int, int]) -> None:
    """Every instance (``want``: instance to pid) answers on ``address``: rounds of
    concurrent requests that each hold their connection a moment, so that a busy instance
    leaves the next connection to another, until every instance was seen."""
    seen: dict[int, int] = {}
    deadline = time.monotonic() + LONG
    with ThreadPoolExecutor(len(want)) as pool:
        while seen != want:
            assert time.monotonic() < deadline, f"answers seen: {seen}, wanted: {want}"
            for answer in pool.map(lambda _: curl(address, "/?hold=0.3"), want):
                k = int(answer["instance"])
                assert answer["pid"] == want[k]
                assert answer["env"]["LISTEN_PID"] == str(want[k])
                assert answer["env"]["LISTEN_FDS"] == "1"
                assert answer["fd"] == 3 and answer["env"]["IMMORTAL_GROUP"] == "web"
                seen[k] = answer["pid"]


def idle_stopped(pid: int) -> None:
    """SIGSTOP ``pid`` at a moment it holds no client's connection (its only socket is the
    listening one at fd 3): a stopped process accepts nothing, so what it leaves in the
    backlog is served by the others."""
    deadline = time.monotonic() + LONG
    while True:
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: proc_state(pid), lambda state: state == "T", SHORT,
                 what=f"process {pid} stopped")
        sockets = [fd for fd in os.listdir(f"/proc/{pid}/fd")
                   if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")]
        if sockets == ["3"]:
            return
        assert time.monotonic() < deadline, f"process {pid} always holds a connection"
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.005)  # not a synchronisation: a chance for it to finish its request


@pytest.mark.skipif(CURL is None, reason="needs curl")
def test_four_instances_serve_one_port_and_a_killed_one_refuses_no_client(started):
    group = started(LISTENER, workers=4, name="web", listen=["tcp://127.0.0.1:0"],
                    ready="line:^serving", policy={"min_uptime": 0.0})
    status = group.status()
    assert status.ready and all(entry.ready for entry in status.instances)
    address = status.listen[0]
    before = pids(status)
    # One socket: the same kernel object at fd 3 in every instance.
    assert len({os.readlink(f"/proc/{pid}/fd/3") for pid in before.values()}) == 1
    each_answers(address, before)

    done = threading.Event()
    results: list[str | None] = []  # None: answered; else the error

    def clients() -> None:
        while not done.is_set():
            try:
                curl(address)
                results.append(None)
            except AssertionError as exc:
                results.append(str(exc))

    loop = threading.Thread(target=clients)
    loop.start()
    try:
        wait_for(lambda: len(results), lambda n: n >= 20, LONG, what="requests before")
        idle_stopped(before[1])
        os.kill(before[1], signal.SIGKILL)
        killed_at = len(results)
        after = wait_for(group.status, lambda s: pids(s).get(1) not in (None, before[1])
                         and s.instances[1].ready, LONG, what="instance 1 again, ready")
        wait_for(lambda: len(results), lambda n: n >= killed_at + 20, LONG,
                 what="requests after")
    finally:
        done.set()
        loop.join(LONG)
    assert [error for error in results if error] == []
    assert {k: pids(after)[k] for k in (0, 2, 3)} == {k: before[k] for k in (0, 2, 3)}
    each_answers(address, pids(after))


# --- with readiness ---------------------------------------------------------------------------

# Instance K says it is up after K * 0.3 s, once it has left a mark; with "die" instance 1
# dies first, with a few lines on stderr.
UP_LATE = """\
import os, sys, time
k = int(os.environ["IMMORTAL_INSTANCE"])
if sys.argv[1:2] == ["die"] and k == 1:
    for n in range(3):
        print(f"instance {k} fails {n}", file=sys.stderr, flush=True)
    sys.exit(3)
time.sleep(0.3 * k)
open(os.path.join(sys.argv[2], f"up.{k}"), "w").close()
print(f"up {k}", flush=True)
while True:
    time.sleep(3600)
"""


def test_start_returns_once_every_instance_printed_its_line(started, tmp_path):
    group = started(sys.executable, ["-c", UP_LATE, "live", str(tmp_path)], workers=3,
                    ready=r"line:^up \d$", ready_timeout=LONG)
    # Each instance marks the file before it prints: the answer came after all three.
    assert sorted(os.listdir(tmp_path)) == ["up.0", "up.1", "up.2"]
    status = group.status()
    assert status.ready and [e.ready for e in status.instances] == [True, True, True]
    assert "ready    yes" in str(status)


def test_an_instance_dead_before_ready_fails_the_start_and_leaves_nothing(tmp_path):
    before = set(descendants())
    with pytest.raises(immortal.StartError) as caught:
        immortal.start(sys.executable, ["-c", UP_LATE, "die", str(tmp_path)], workers=3,
                       name="dies", ready=r"line:^up \d$", ready_timeout=LONG,
                       stop_timeout=5.0)
    error = caught.value
    assert "instance 1: its target exited with status 3 before it was ready" in str(error)
    assert error.status is not None and error.status.code == 3 and error.status.instance == 1
    assert error.stderr == [f"instance 1 fails {n}" for n in range(3)]
    assert set(descendants()) - before == set()
    assert "dies" not in [s.name for s in immortal.groups()]
    with pytest.raises(immortal.NotRunning, match="no group named 'dies'"):
        immortal.attach("dies")  # what the failed start left is no group


def test_a_scale_up_waits_for_the_new_instances_to_be_ready(started, tmp_path):
    group = started(sys.executable, ["-c", UP_LATE, "live", str(tmp_path)], workers=1,
                    ready=r"line:^up \d$", ready_timeout=LONG)
    status = group.scale(3)
    assert sorted(os.listdir(tmp_path)) == ["up.0", "up.1", "up.2"]
    assert status.ready and [e.ready for e in status.instances] == [True, True, True]


# Instances 0 and 1 say they are up (and with "stubborn", ignore SIGTERM); the others never do.
TWO_UP = """\
import os, signal, sys, time
k = int(os.environ["IMMORTAL_INSTANCE"])
if k < 2:
    if sys.argv[1:] == ["stubborn"]:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"up {k}", flush=True)
while True:
    time.sleep(3600)
"""


def test_a_scale_overtaken_by_another_fails_at_once_and_undoes_nothing(started):
    """Two scales at once: the one overtaken fails at once, naming the count the other
    set, and leaves it (before, it waited out its patience, then "scaled back" over the
    other's count)."""
    group = started(sys.executable, ["-c", TWO_UP], workers=2, ready=r"line:^up \d$",
                    ready_timeout=SHORT, stop_timeout=1)
    spec = group.directory / "spec.json"
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(group.scale, 4)
        wait_for(lambda: json.loads(spec.read_text()).get("workers"), lambda n: n == 4,
                 SHORT, what="the first scale asked")
        assert immortal.attach(group.name).scale(1).instances == []
        began = time.monotonic()
        with pytest.raises(immortal.ImmortalError,
                           match="scaled to 1 instance\\(s\\) by another command") as caught:
            first.result(timeout=LONG)
    assert time.monotonic() - began < SHORT
    assert not isinstance(caught.value, (immortal.StartError, immortal.StopTimeout))
    assert "workers" not in json.loads(spec.read_text())  # a group of one again
    assert group.status().instances == []


def test_a_scale_cut_short_by_a_stop_says_so_and_blames_no_instance(started):
    """A stop during a scale up: the scale says the group was stopped, not that its new
    instances died before they were ready (the stop killed them), nor that it scaled back."""
    group = started(sys.executable, ["-c", TWO_UP, "stubborn"], workers=2,
                    ready=r"line:^up \d$", ready_timeout=SHORT, stop_timeout=2)
    spec = group.directory / "spec.json"
    with ThreadPoolExecutor(2) as pool:
        scaling = pool.submit(group.scale, 4)
        wait_for(lambda: json.loads(spec.read_text()).get("workers"), lambda n: n == 4,
                 SHORT, what="the scale asked")
        stopping = pool.submit(immortal.attach(group.name).stop)
        with pytest.raises(immortal.NotRunning, match="was stopped") as caught:
            scaling.result(timeout=LONG)
        stopping.result(timeout=LONG)
    assert "before it was ready" not in str(caught.value)
    assert "scaled back" not in str(caught.value)


def test_a_roll_while_a_scale_down_still_retires_is_refused_at_once(started):
    """A rolling restart asked while the last scale's instances still retire: refused at
    once, with why. Before, the pump refused it in its log alone, and the caller waited
    minutes for a roll that never began, then said it did not end in time."""
    group = start(started, 3, "stubborn", stop_timeout=3)
    running(group, 3)
    with ThreadPoolExecutor(1) as pool:
        scaling = pool.submit(group.scale, 1)
        wait_for(group.status, lambda s: any(e.state == "stopping" for e in s.instances),
                 SHORT, what="instances retiring")
        began = time.monotonic()
        with pytest.raises(immortal.ImmortalError, match="still retiring"):
            group.restart()
        assert time.monotonic() - began < SHORT
        scaling.result(timeout=LONG)
    group.stop(timeout=1)  # it ignores TERM: not the fixture's long grace


# Instance K says it is up once the file GATE.K exists.
GATED = """\
import os, sys, time
k = os.environ["IMMORTAL_INSTANCE"]
while not os.path.exists(sys.argv[1] + "." + k):
    time.sleep(0.05)
print(f"up {k}", flush=True)
while True:
    time.sleep(3600)
"""


def test_a_restart_during_a_scale_up_does_not_fail_it(started, tmp_path):
    """``restart --all-at-once`` while a scale up waits for its new instance: the instance
    is restarted, and the scale waits for the new target (before, it failed, blaming the
    instance 'killed by SIGTERM before it was ready', and scaled the group back)."""
    gate = tmp_path / "gate"
    Path(f"{gate}.0").touch()
    group = started(sys.executable, ["-c", GATED, str(gate)], workers=1,
                    ready=r"line:^up \d$", ready_timeout=LONG, stop_timeout=1)
    with ThreadPoolExecutor(1) as pool:
        scaling = pool.submit(group.scale, 2)
        wait_for(group.status, lambda s: len(s.instances) == 2 and s.instances[1].pid,
                 SHORT, what="the new instance spawned")
        first = group.status().instances[1].pid
        immortal.attach(group.name).restart(all_at_once=True)
        wait_for(group.status, lambda s: s.instances[1].pid not in (None, first), SHORT,
                 what="the new instance restarted")
        Path(f"{gate}.1").touch()
        assert [e.ready for e in scaling.result(timeout=LONG).instances] == [True, True]


@pytest.mark.parametrize("strategy", ["daemon", "unattached"])
def test_a_scale_overtaken_by_another_to_the_same_count_fails_at_once(
        started, tmp_path, strategy):
    """Two scales to the same count at once: the first is told at once that the other
    took its wait over (before, both waited and both said they scaled, and a failure of
    the first would have scaled the group back under the second); the other waits for
    the instances, and succeeds once they are ready."""
    gate = tmp_path / "gate"
    Path(f"{gate}.0").touch()
    group = started(sys.executable, ["-c", GATED, str(gate)], workers=1, strategy=strategy,
                    ready=r"line:^up \d$", ready_timeout=LONG, stop_timeout=1)
    spec = group.directory / "spec.json"
    with ThreadPoolExecutor(2) as pool:
        try:
            first = pool.submit(group.scale, 3)
            wait_for(lambda: json.loads(spec.read_text()).get("workers"), lambda n: n == 3,
                     SHORT, what="the first scale asked")
            second = pool.submit(immortal.attach(group.name).scale, 3)
            with pytest.raises(immortal.ImmortalError, match="scaled to 3 instance\\(s\\) "
                               "again by another command") as caught:
                first.result(timeout=SHORT)
            assert not isinstance(caught.value, (immortal.StartError, immortal.StopTimeout))
        finally:
            for k in (1, 2):
                Path(f"{gate}.{k}").touch()
        assert [e.ready for e in second.result(timeout=LONG).instances] == [True] * 3
    assert json.loads(spec.read_text())["workers"] == 3  # nothing undone


# Instance K waits for the file GATE.K: says it is up, or dies if the file says "die"
# (the test renames it into place, so it never reads it half-written).
GATED_OR_DEAD = """\
import os, sys, time
gate = sys.argv[1] + "." + os.environ["IMMORTAL_INSTANCE"]
while not os.path.exists(gate):
    time.sleep(0.05)
if open(gate).read() == "die":
    sys.exit(3)
print("up", flush=True)
while True:
    time.sleep(3600)
"""


@pytest.mark.parametrize("scales", [2, 3])
def test_a_scale_that_took_another_over_fails_at_once_when_a_new_instance_dies(
        started, tmp_path, scales):
    """The last of two (or three) scales to the same count waits for the first one's new
    instances as its own: one that dies before it is ready fails it at once, undoing
    nothing (before, it waited out its whole patience while the instance died and was
    spawned again; a third scale, before, took over from the second, which had found the
    count it asked)."""
    gate = tmp_path / "gate"
    Path(f"{gate}.0").touch()
    group = started(sys.executable, ["-c", GATED_OR_DEAD, str(gate)], workers=1,
                    ready="line:^up", ready_timeout=LONG, stop_timeout=1)
    spec = group.directory / "spec.json"
    with ThreadPoolExecutor(scales) as pool:
        earlier = pool.submit(group.scale, 3)
        wait_for(lambda: json.loads(spec.read_text()).get("workers"), lambda n: n == 3,
                 SHORT, what="the first scale asked")
        wait_for(group.status, lambda s: len(s.instances) == 3, SHORT,
                 what="the new instances listed")
        for _ in range(scales - 1):
            later = pool.submit(immortal.attach(group.name).scale, 3)
            with pytest.raises(immortal.ImmortalError, match="again by another command"):
                earlier.result(timeout=SHORT)
            earlier = later
        Path(f"{gate}.2").touch()
        Path(f"{gate}.1.new").write_text("die")
        os.replace(f"{gate}.1.new", f"{gate}.1")  # whole when it appears: read at once
        began = time.monotonic()
        with pytest.raises(immortal.StartError, match="instance 1: its target") as caught:
            earlier.result(timeout=LONG + SHORT)
    assert time.monotonic() - began < SHORT
    assert "not scaled back" in str(caught.value)
    assert json.loads(spec.read_text())["workers"] == 3  # nothing undone


def test_a_port_probe_is_refused_with_several_instances():
    with pytest.raises(immortal.InvalidSpec, match="'ready' 'port:8080' works with one "
                       "instance only"):
        immortal.start(sys.executable, ["-c", "pass"], workers=2, ready="port:8080")


# Each instance tells sd_notify it is ready, with its own STATUS text; instance 2 through a
# child of its own, as systemd-notify would.
NOTIFIES = """\
import os, socket, time
k = os.environ["IMMORTAL_INSTANCE"]
if k != "2" or os.fork() == 0:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(f"READY=1\\nSTATUS=instance {k} up".encode(), os.environ["NOTIFY_SOCKET"])
while True:
    time.sleep(3600)
"""


def test_notify_counts_for_the_instance_whose_target_sent_it(started):
    group = started(sys.executable, ["-c", NOTIFIES], workers=3, ready="notify",
                    ready_timeout=LONG)
    status = group.status()
    assert status.ready
    assert [(e.ready, e.notify_status) for e in status.instances] == [
        (True, f"instance {k} up") for k in range(3)]
    assert "notify 'instance 1 up'" in str(status)


def test_a_scale_up_whose_new_instance_dies_fails_at_once_and_is_undone(started, tmp_path):
    """A new instance dead before it is ready fails the scale at once, as in a start (not
    after the whole grace period and ``ready_timeout``), and the scale is undone: no
    instance is left restarting in a loop."""
    group = started(sys.executable, ["-c", UP_LATE, "die", str(tmp_path)], workers=1,
                    ready=r"line:^up \d$", ready_timeout=LONG, stop_timeout=LONG)
    began = time.monotonic()
    with pytest.raises(immortal.StartError) as caught:
        group.scale(3)
    assert time.monotonic() - began < LONG
    assert "instance 1: its target exited with status 3 before it was ready" in str(
        caught.value) and "scaled back to 1" in str(caught.value)
    assert caught.value.status is not None and caught.value.status.code == 3
    status = wait_for(group.status, lambda s: not s.instances and s.ready, LONG,
                      what="the group back to one instance")
    assert status.state == "running"


def test_a_scale_whose_caller_was_killed_stands_and_status_says_so(started, home):
    """``immortal scale`` killed while it waits for new instances that are never ready:
    nothing undoes the count it asked, and ``immortal status`` shows that count, what
    runs, and that its caller is gone (before, nothing told a scale under way at all)."""
    group = started(sys.executable, ["-c", TWO_UP], workers=2, ready=r"line:^up \d$",
                    ready_timeout=LONG, stop_timeout=1)
    env = {**os.environ, "IMMORTAL_HOME": str(home)}

    def shown() -> str:
        return subprocess.run([sys.executable, "-m", "immortal", "status", group.name],
                              env=env, capture_output=True, text=True, timeout=LONG).stdout

    caller = subprocess.Popen([sys.executable, "-m", "immortal", "scale", group.name, "4"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        status = wait_for(group.status, lambda s: (s.scales.get("") or {}).get("caller"),
                          SHORT, what="the scale recorded")
        assert status.scales[""]["caller"][0] == caller.pid
        head = f"  scale    #{status.scales['']['id']} to 4 (from 2): "
        wait_for(shown, lambda text: f"{head}4 instance(s), 2 ready; its caller (pid "
                 f"{caller.pid}) waits for it" in text, SHORT, what="the scale under way")
    finally:
        caller.kill()
        caller.wait(timeout=LONG)
    wait_for(shown, lambda text: f"{head}4 instance(s), 2 ready; its caller (pid "
             f"{caller.pid}) is gone: the count stands, nothing scales it back" in text,
             SHORT, what="the caller's death in the status")
    assert json.loads((group.directory / "spec.json").read_text())["workers"] == 4
    assert len(group.status().instances) == 4  # nothing undone
