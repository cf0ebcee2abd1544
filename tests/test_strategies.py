"""Each strategy's process tree, restarts after real kills, and events in order."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import immortal
from conftest import LONG, TALKER, cmdline, descendants, imported_after, wait_for
from immortal._linux import parent_pid

pytestmark = pytest.mark.timeout(120)


def hooks(events):
    return [e["hook"] for e in events]


def outputs(events, hook="stdout"):
    return [e["line"] for e in events if e["hook"] == hook]


@pytest.mark.parametrize("strategy", ["daemon", "unattached", "development"])
def test_process_tree(strategy, started, recorder):
    group = started(TALKER, ["--out", "2"], strategy=strategy, monitor="recorder",
                    options=recorder.options)
    pids = group.pids
    if strategy == "daemon":
        assert set(pids) == {"daemon", "pump", "target"}
        assert parent_pid(pids["pump"]) == pids["daemon"]
        wait_for(lambda: cmdline(pids["daemon"]),
                 lambda line: line.startswith("immortal: daemon "), what="the daemon's title")
    else:
        assert set(pids) == {"pump", "target"}
    # ps names the pump whatever its argv: the daemon's (a fork of it) or a JSON blob.
    wait_for(lambda: cmdline(pids["pump"]), lambda line: line.startswith("immortal: pump "),
             what="the pump's title")
    assert parent_pid(pids["target"]) == pids["pump"]
    if strategy == "development":
        assert parent_pid(pids["pump"]) == os.getpid()
    else:
        # Detached: not our child, in a session of its own (no controlling terminal).
        root = pids.get("daemon", pids["pump"])
        assert os.getsid(root) != os.getsid(0)
    assert "talker.py" in cmdline(pids["target"])
    events = recorder.wait_for(lambda ev: "ready" in outputs(ev))
    assert hooks(events)[:2] == ["setup", "spawn"]
    assert events[0]["why"] == "pump start" and events[0]["message"] is None
    assert events[1]["pid"] == pids["target"]
    assert outputs(events) == ["out 1", "out 2", "ready"]
    final = group.stop()
    assert final.state == "stopped" and not final.running
    assert not [p for p in pids.values() if p in descendants()]
    events = recorder.events()
    assert hooks(events)[-2:] == ["exit", "shutdown"]
    assert events[-2]["signal"] == signal.SIGTERM
    assert events[-1]["reason"] == "stop"


def test_development_echoes_output_to_the_terminal(tmp_path, home):
    """In development the pump's output is ours: run it through the CLI and read it."""
    script = (
        "import immortal, sys\n"
        f"g = immortal.start({TALKER!r}, ['--out', '3', '--exit', '7'],"
        " strategy='development', policy={'final_exit_codes': [7]})\n"
        "print('final', g.wait(30).state, flush=True)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=LONG, env={**os.environ, "IMMORTAL_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["out 1", "out 2", "out 3", "final stopped"]


@pytest.mark.parametrize("strategy", ["daemon", "unattached", "development"])
def test_restart_after_kill(strategy, started, recorder):
    group = started(TALKER, [], strategy=strategy, monitor="recorder",
                    options=recorder.options, policy={"min_uptime": 0.0})
    first = group.pids["target"]
    recorder.wait_for(lambda ev: "ready" in outputs(ev))
    os.kill(first, signal.SIGKILL)
    events = recorder.wait_for(lambda ev: "respawn" in hooks(ev))
    assert hooks(events) == ["setup", "spawn", "stdout", "exit", "respawn"]
    assert events[3]["signal"] == signal.SIGKILL and events[3]["pid"] == first
    assert events[3]["text"] == "killed by SIGKILL"
    second = events[4]["pid"]
    assert second != first
    status = wait_for(group.status, lambda s: s.pids.get("target") == second)
    assert status.restarts == 1 and status.state == "running"
    assert status.last_exit is not None and status.last_exit.signal == signal.SIGKILL


def test_exit_codes_and_backoff(started, recorder):
    group = started(TALKER, ["--out", "1", "--exit", "3"], monitor="recorder",
                    options=recorder.options,
                    policy={"backoff_initial": 0.05, "backoff_max": 0.2, "jitter": 0.0})
    events = recorder.wait_for(lambda ev: hooks(ev).count("exit") >= 3)
    exits = [e for e in events if e["hook"] == "exit"]
    assert all(e["code"] == 3 and e["text"] == "exited with status 3" for e in exits)
    # Every death is seen once, then one respawn, and output comes before its exit event.
    sequence = hooks(events)
    assert sequence[:5] == ["setup", "spawn", "stdout", "exit", "respawn"]
    assert group.status().restarts >= 2


def test_a_crash_loop_without_backoff_keeps_the_floor(started):
    """backoff_initial=0 with quick deaths: at most one restart per floor (was hundreds a
    second, the pump busy and the monitor flooded); the loop still goes on."""
    from immortal.supervise import QUICK_FLOOR

    group = started("/bin/sh", ["-c", "exit 1"], policy={"backoff_initial": 0.0})
    first = wait_for(group.status, lambda s: s.spawned >= 2, what="a second spawn")
    began = time.monotonic()
    time.sleep(1.0)  # a window to count restarts in, not a synchronisation
    last = group.status()
    elapsed = time.monotonic() - began
    rate = (last.spawned - first.spawned) / elapsed
    assert last.running and last.spawned > first.spawned, last
    assert rate <= 1.5 / QUICK_FLOOR, f"{rate:.0f} spawns/s"


def test_give_up_is_fatal_and_final(started, recorder):
    group = started(TALKER, ["--exit", "1"], monitor="recorder", options=recorder.options,
                    policy={"backoff_initial": 0.01, "max_restarts": 2, "window": 60})
    final = group.wait(LONG)
    assert final.state == "fatal" and not final.running
    assert "max_restarts=2" in final.reason
    events = recorder.events()
    assert hooks(events).count("exit") == 3 and hooks(events).count("respawn") == 2
    assert hooks(events)[-1] == "shutdown" and events[-1]["reason"].startswith("fatal")


def test_restart_and_attach(started, recorder):
    group = started(TALKER, [], name="worker", monitor="recorder", options=recorder.options)
    first = group.pids["target"]
    other = immortal.attach("worker")
    assert other.pids == group.pids
    other.restart()
    second = group.pids["target"]
    assert second != first
    events = recorder.wait_for(lambda ev: "respawn" in hooks(ev))
    exit_event = next(e for e in events if e["hook"] == "exit")
    assert exit_event["signal"] == signal.SIGTERM
    assert group.status().restarts == 1


def test_stop_escalates_to_kill(started, recorder):
    group = started(TALKER, ["--ignore-term"], monitor="recorder", options=recorder.options,
                    stop_timeout=0.5)
    recorder.wait_for(lambda ev: "ready" in outputs(ev))
    pids = group.pids
    begun = time.monotonic()
    final = group.stop()
    elapsed = time.monotonic() - begun
    assert final.last_exit.signal == signal.SIGKILL
    assert elapsed >= 0.5
    assert not [p for p in pids.values() if p in descendants()]


def test_stop_during_backoff_is_final(started, recorder):
    group = started(TALKER, ["--exit", "1"], monitor="recorder", options=recorder.options,
                    policy={"backoff_initial": 5.0, "jitter": 0.0, "min_uptime": 10})
    wait_for(group.status, lambda s: s.state == "backoff", what="backoff")
    final = group.stop()
    assert final.state == "stopped"
    assert hooks(recorder.events()) == ["setup", "spawn", "exit", "shutdown"]


def test_already_running_touches_nothing(started, recorder):
    group = started(TALKER, [], name="solo", monitor="recorder", options=recorder.options)
    pids = group.pids
    spec_before = (group.directory / "spec.json").read_bytes()
    with pytest.raises(immortal.AlreadyRunning) as info:
        immortal.start(TALKER, ["--other"], name="solo")
    assert str(pids["target"]) in str(info.value)
    assert info.value.pids == pids
    assert group.pids == pids
    assert (group.directory / "spec.json").read_bytes() == spec_before


def test_pump_death_keeps_the_target(started, recorder):
    group = started(TALKER, [], monitor="recorder", options=recorder.options)
    pids = group.pids
    recorder.wait_for(lambda ev: "ready" in outputs(ev))
    os.kill(pids["pump"], signal.SIGKILL)
    events = recorder.wait_for(lambda ev: "adopt" in hooks(ev))
    setup = events[-2]
    assert setup["hook"] == "setup" and setup["why"] == "pump restart"
    assert events[-1] == {"hook": "adopt", "pump": events[-1]["pump"], "pid": pids["target"]}
    status = wait_for(group.status, lambda s: s.pids.get("pump") not in (None, pids["pump"]))
    assert status.pids["target"] == pids["target"]
    assert status.pids["daemon"] == pids["daemon"]
    # The adopted target is still supervised: kill it, and it comes back.
    os.kill(pids["target"], signal.SIGKILL)
    events = recorder.wait_for(lambda ev: "respawn" in hooks(ev))
    assert [e for e in events if e["hook"] == "exit"][-1]["signal"] == signal.SIGKILL


def test_pump_restart_message_is_the_dead_pumps_stderr(started, recorder):
    options = {**recorder.options, "crash_on_line": True}
    group = started(sys.executable, ["-c", "import time; time.sleep(0.2); print('crash-pump',"
                                     " flush=True); time.sleep(3600)"],
                    monitor="recorder", options=options, name="crasher")
    events = recorder.wait_for(lambda ev: hooks(ev).count("setup") == 2)
    assert [e for e in events if e["hook"] == "setup"][-1]["why"] == "pump restart"
    assert group.status().running


def test_daemon_death_keeps_the_target(started, recorder):
    group = started(TALKER, [], monitor="recorder", options=recorder.options)
    pids = group.pids
    recorder.wait_for(lambda ev: "ready" in outputs(ev))
    os.kill(pids["daemon"], signal.SIGKILL)
    events = recorder.wait_for(lambda ev: hooks(ev).count("setup") == 2)
    assert [e for e in events if e["hook"] == "setup"][-1]["why"] == "daemon restart"
    status = wait_for(group.status, lambda s: s.running and s.pids.get("daemon") == pids["pump"])
    assert status.pids["target"] == pids["target"]
    final = group.stop()
    assert final.state == "stopped"
    assert pids["target"] not in descendants()


def test_env_cwd_and_args_reach_the_target(started, recorder, tmp_path):
    args = ["--env", "GREETING", "--env", "PYTHONUNBUFFERED", "--cwd", "--args",
            "$HOME; rm -rf / `x` | y"]
    started(TALKER, args, monitor="recorder", options=recorder.options,
            env={"GREETING": "hi there", "PATH": os.environ["PATH"]}, cwd=tmp_path)
    events = recorder.wait_for(lambda ev: "ready" in outputs(ev))
    lines = outputs(events)
    assert "env GREETING=hi there" in lines
    assert "env PYTHONUNBUFFERED=1" in lines
    assert f"cwd {tmp_path}" in lines
    assert any(line.endswith('"$HOME; rm -rf / `x` | y"]') for line in lines)


def test_partial_last_line_is_delivered_before_exit(started, recorder):
    started(TALKER, ["--out", "1", "--partial", "no newline", "--exit", "0"],
            monitor="recorder", options=recorder.options,
            policy={"final_exit_codes": [0]})
    events = recorder.wait_for(lambda ev: "shutdown" in hooks(ev))
    assert hooks(events) == ["setup", "spawn", "stdout", "stdout", "exit", "shutdown"]
    assert outputs(events) == ["out 1", "no newline"]
    assert "exit code 0" in events[-1]["reason"]


@pytest.mark.parametrize("strategy", ["daemon", "unattached", "development"])
def test_stop_kills_escaped_grandchildren(strategy, started, recorder):
    group = started(TALKER, ["--grandchild"], strategy=strategy, monitor="recorder",
                    options=recorder.options)
    events = recorder.wait_for(lambda ev: "ready" in outputs(ev))
    grandchild = int(next(line for line in outputs(events)
                          if line.startswith("grandchild")).split()[1])
    assert os.getsid(grandchild) == grandchild  # it left the target's session and group
    group.stop()
    assert grandchild not in descendants()


def test_pump_death_during_backoff_spawns_a_new_target(started, recorder):
    group = started(TALKER, ["--exit", "1"], monitor="recorder", options=recorder.options,
                    policy={"backoff_initial": 30.0, "jitter": 0.0, "min_uptime": 10})
    status = wait_for(group.status, lambda s: s.state == "backoff", what="backoff")
    dead_target = status.last_exit.pid
    os.kill(status.pids["pump"], signal.SIGKILL)
    events = recorder.wait_for(lambda ev: hooks(ev).count("spawn") + hooks(ev).count(
        "respawn") >= 2)
    assert events[-1]["pid"] != dead_target
    final = group.stop()
    assert final.state in ("stopped",)


def test_a_title_costs_no_logging_import():
    # setproctitle's package imports logging (memory and time in every role); its extension
    # alone does the job.
    code = ("import immortal._linux as p; p.set_title('immortal: pump /x')\n"
            "assert open('/proc/self/cmdline').read().startswith('immortal: pump /x')")
    assert imported_after(code, {"logging"}) == set()


def test_a_detached_daemon_carries_none_of_the_callers_modules():
    # What a daemon imports, it shares with every pump it forks, but pays for: the
    # foreground daemon's modules (a start's, the Group handle's) and difflib (a refused
    # option's message) are loaded only where they are used.
    code = ("import immortal.spec, immortal.state, immortal.daemon, immortal.pump\n"
            "import immortal.succession, immortal_monitors.file")
    assert imported_after(code, {"immortal.fgdaemon", "immortal.foreground",
                                 "immortal.launcher", "immortal.group", "immortal.groupstart",
                                 "immortal.firstrole", "difflib"}) == set()
