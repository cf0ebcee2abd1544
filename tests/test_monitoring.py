"""The monitor contract: discovery, check in the caller, isolation, the file monitor."""

from __future__ import annotations

import json
import os
import re
import signal
import sys

import pytest

import immortal
from conftest import LONG, TALKER, wait_for
from immortal import monitorload

pytestmark = pytest.mark.timeout(120)


def test_third_party_monitor_is_found_through_its_entry_point(recorder):
    assert {"file", "recorder"} <= set(monitorload.installed())
    factory = monitorload.resolve("recorder")
    assert factory.__module__ == "immortal_recorder"
    assert monitorload.resolve("file").__name__ == "FileMonitor"


def test_third_party_monitor_receives_every_event(started, recorder):
    group = started(TALKER, ["--out", "2", "--err", "1"], monitor="recorder",
                    options=recorder.options, policy={"min_uptime": 0.0})
    first = group.pids["target"]
    recorder.wait_for(lambda ev: any(e.get("line") == "ready" for e in ev))
    os.kill(first, signal.SIGTERM)
    recorder.wait_for(lambda ev: any(e["hook"] == "respawn" for e in ev))
    group.stop()
    events = recorder.events()
    hooks = [e["hook"] for e in events]
    assert set(hooks) == {"setup", "spawn", "respawn", "exit", "stdout", "stderr", "shutdown"}
    assert hooks[0] == "setup" and hooks[1] == "spawn" and hooks[-1] == "shutdown"
    assert [e["line"] for e in events if e["hook"] == "stderr"][:1] == ["err 1"]
    first_exit = next(e for e in events if e["hook"] == "exit")
    assert first_exit["pid"] == first and first_exit["text"] == "killed by SIGTERM"


def test_check_refusal_is_raised_verbatim_in_the_caller(recorder, home):
    with pytest.raises(immortal.MonitorOptionsError, match="^recorder refuses: no way$"):
        immortal.start(TALKER, monitor="recorder", options={"path": "x", "refuse": "no way"})
    assert os.listdir(home) == []


def test_module_class_form_and_isolation_of_a_raising_monitor(started, tmp_path):
    path = tmp_path / "noisy.jsonl"
    group = started(TALKER, ["--out", "3"], monitor="plugins.sample:Noisy",
                    options={"path": str(path)}, policy={"min_uptime": 0.0})
    pids = group.pids
    log = group.directory / "pump.log"
    # The monitor raises on every line; the pump reports it on its stderr and goes on.
    wait_for(log.read_text, lambda text: "noisy monitor refuses b'out 1'" in text,
             what="the monitor's traceback in pump.log")
    os.kill(pids["target"], signal.SIGKILL)
    wait_for(lambda: path.read_text() if path.exists() else "",
             lambda text: '"respawn"' in text, what="a respawn after the kill")
    status = group.status()
    assert status.running and status.pids["pump"] == pids["pump"]


def test_a_monitor_calling_sys_exit_in_its_hooks_ends_neither_the_pump_nor_the_others(
        started, tmp_path):
    """SystemExit in a hook is that monitor's error: before, it ended the pump, whose
    successor handed it the same line again, and so on, every monitor stuck there."""
    path, out = tmp_path / "quitter.jsonl", tmp_path / "file.log"
    group = started(TALKER, ["--out", "3"], policy={"min_uptime": 0.0},
                    monitors={"plugins.sample:Quitter": {"path": str(path)},
                              "file": {"output": str(out)}})
    pids = group.pids
    wait_for(lambda: out.read_text() if out.exists() else "",
             lambda text: "stdout | out 3" in text, what="every line in the file monitor's")
    os.kill(pids["target"], signal.SIGKILL)
    wait_for(lambda: path.read_text() if path.exists() else "",
             lambda text: '"respawn"' in text, what="a respawn after the kill")
    assert group.status().pids["pump"] == pids["pump"]
    assert [json.loads(line)["hook"] for line in path.read_text().splitlines()][:1] == [
        "setup"]
    assert sum('"setup"' in line for line in path.read_text().splitlines()) == 1
    log = (group.directory / "pump.log").read_text()
    assert "raised in 'stdout'" in log and "SystemExit: quitter quits at b'out 1'" in log


# The poisoned line once the file its argument names exists: the test reads the first
# pump's pid before any pump dies.
POISONED = """\
import os, sys, time
print("line 1", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
for text in ("poison", "line 2", "line 3"):
    print(text, flush=True)
time.sleep(3600)
"""


def test_a_line_a_monitor_kills_its_pump_on_is_skipped_for_it_after_a_few_deaths(
        started, tmp_path):
    """Each successor pump handed the monitor the line it had died on, and died: no line
    after it reached any monitor, for as long as the group ran. Now the line is skipped
    for that monitor once pumps have died in that call a few times in a row (counted as
    dropped, said in pump.log); every other monitor gets every line once."""
    kept, out, gate = tmp_path / "crasher.txt", tmp_path / "file.log", tmp_path / "gate"
    group = started(sys.executable, ["-c", POISONED, str(gate)], monitors={
        "plugins.sample:Crasher": {"path": str(kept)}, "file": {"output": str(out)}})
    first = group.pids["pump"]
    gate.touch()
    wait_for(lambda: kept.read_bytes() if kept.exists() else b"",
             lambda text: text == b"line 1\nline 2\nline 3\n", LONG,
             what="the lines around the poisoned one")
    # (`file` is called after the crasher, which runs in a process of its own.)
    text = wait_for(out.read_text, lambda text: "stdout | line 3\n" in text, LONG,
                    what="the last line at `file`")
    assert [text.count(f"stdout | {line}\n") for line in
            ("line 1", "poison", "line 2", "line 3")] == [1, 1, 1, 1], text
    status = group.status()
    assert status.running and status.pids["pump"] != first
    assert status.monitors["plugins.sample:Crasher"]["dropped"] == 1, status.monitors
    log = (group.directory / "pump.log").read_text()
    assert ("monitor 'plugins.sample:Crasher': 3 pumps in a row died in its call with 1 "
            "line(s) of stdout") in log, log


def test_a_check_that_is_no_classmethod_is_said_so(home):
    with pytest.raises(immortal.MonitorError, match="monitor 'plugins.sample:InstanceCheck': "
                       r"check\(\) must be a classmethod"):
        immortal.start(TALKER, monitor="plugins.sample:InstanceCheck")
    assert os.listdir(home) == []


# A target that prints a poisoned line among others, then more once its gate exists.
GATED_POISON = """\
import os, sys, time
for text in ("line 1", "poison"):
    print(text, flush=True)
deadline = time.monotonic() + 60
while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
    time.sleep(0.01)
print("line 2", flush=True)
time.sleep(3600)
"""


def test_a_block_a_monitor_kills_its_pump_on_is_skipped_and_the_next_ones_reach_it(
        started, tmp_path):
    """The same for a monitor of whole blocks: the block it died on is skipped for it
    (the lines of that call), and the lines after it reach it."""
    kept, gate = tmp_path / "blocks.txt", tmp_path / "gate"
    group = started(sys.executable, ["-c", GATED_POISON, str(gate)],
                    monitors={"plugins.sample:BlockCrasher": {"path": str(kept)}})
    status = wait_for(group.status, lambda s: s.monitors.get(
        "plugins.sample:BlockCrasher", {}).get("dropped"), LONG, what="the block skipped")
    assert status.running
    gate.touch()
    wait_for(lambda: kept.read_bytes() if kept.exists() else b"",
             lambda text: text.endswith(b"line 2\n"), LONG, what="the line after it")
    assert b"poison" not in kept.read_bytes()
    assert "died in its call with" in (group.directory / "pump.log").read_text()


def test_a_check_calling_sys_exit_is_a_refusal_in_the_caller(home):
    with pytest.raises(immortal.MonitorOptionsError, match=r"^check\(\) called sys.exit\(5\)$"):
        immortal.start(TALKER, monitor="plugins.sample:QuittingCheck")
    assert os.listdir(home) == []


def test_misspelled_monitor_method_is_refused():
    with pytest.raises(immortal.MonitorError, match="did you mean 'stdout'"):
        immortal.start(TALKER, monitor="plugins.sample:Typo")


def test_invalid_pluggy_hook_is_refused():
    with pytest.raises(immortal.MonitorError, match="monitor_stdout"):
        immortal.start(TALKER, monitor="plugins.sample:BadHook")


def test_setup_failure_is_raised_and_nothing_is_left(home):
    with pytest.raises(immortal.StartError, match="cannot open the log sink"):
        immortal.start(TALKER, monitor="plugins.sample:FailingSetup")
    # Only the lock files stay (another start may have opened them), in their directory.
    assert os.listdir(home) == ["talker"]
    assert set(os.listdir(home / "talker")) <= {"lock", "target.lock"}


def test_file_monitor_writes_timestamped_lines_and_events(started, tmp_path):
    out = tmp_path / "worker.log"
    group = started(TALKER, ["--out", "2", "--err", "1"], options={"output": str(out)})
    assert group.output == str(out)
    # stdout and stderr are two pipes, read as each is ready: nothing orders the lines of
    # one against the other's, so "ready" may be in the file before "err 1" is.
    text = wait_for(lambda: out.read_text() if out.exists() else "",
                    lambda t: "stdout | ready" in t and "stderr | err 1" in t,
                    what="the ready line and the stderr line")
    lines = text.splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.fullmatch(stamp + r" event  \| pump start", lines[0])
    assert re.fullmatch(stamp + rf" event  \| spawn pid {group.pids['target']}", lines[1])
    assert any(re.fullmatch(stamp + r" stdout \| out 1", line) for line in lines)
    assert any(re.fullmatch(stamp + r" stderr \| err 1", line) for line in lines)
    group.stop()
    tail = out.read_text().splitlines()[-2:]
    assert tail[0].endswith("killed by SIGTERM") and "exit pid" in tail[0]
    assert tail[1].endswith("shutdown: stop")


def test_file_monitor_default_output_is_in_the_instance_directory(started):
    group = started(TALKER, [])
    assert group.output == str(group.directory / "output.log")


def test_several_monitors_each_with_its_options(started, recorder, tmp_path):
    out = tmp_path / "file.log"
    group = started(TALKER, ["--out", "2"], monitors={"recorder": recorder.options,
                                                      "file": {"output": str(out)}})
    recorder.wait_for(lambda ev: any(e.get("line") == "ready" for e in ev))
    text = wait_for(lambda: out.read_text() if out.exists() else "", lambda t: "ready" in t)
    assert "stdout | out 1" in text
    assert group.output == str(out)  # the first monitor that writes a file says where
    group.stop()
    assert [e["hook"] for e in recorder.events()][-1] == "shutdown"


def test_several_monitors_refusals_name_the_monitor(recorder, home):
    with pytest.raises(immortal.MonitorOptionsError, match="^monitor 'recorder': recorder "):
        immortal.start(TALKER, monitors={"file": {}, "recorder": {}})
    with pytest.raises(immortal.InvalidSpec, match="either monitor= and options="):
        immortal.start(TALKER, monitor="file", monitors={"file": {}})
    with pytest.raises(immortal.MonitorError, match="names no monitor"):
        immortal.start(TALKER, monitors={})
    assert os.listdir(home) == []


def test_cli_monitors_and_check(recorder, capsys):
    from immortal.cli import main

    assert main(["monitors", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {row["name"]: row for row in rows}
    assert by_name["file"]["distribution"] == "immortal"
    assert by_name["recorder"]["distribution"] == "immortal-recorder"
    assert by_name["recorder"]["version"] == "1.0"
    assert main(["check", "-m", "recorder", "-o", "path=x.jsonl"]) == 0
    assert "recorder: ok" in capsys.readouterr().out
    assert main(["check", "-m", "recorder", "-o", "path=x", "-o", "refuse=nope"]) == 2
    assert capsys.readouterr().err == "immortal: error: recorder refuses: nope\n"


def test_cli_options_belong_to_the_monitor_before_them(recorder, home, tmp_path):
    from immortal.cli import main

    out = tmp_path / "f.log"
    code = main(["run", "-n", "two", "-m", "recorder", "-o", f"path={recorder.path}",
                 "-m", "file", "-o", f"output={out}", TALKER])
    try:
        assert code == 0
        recorder.wait_for(lambda ev: any(e.get("line") == "ready" for e in ev))
        wait_for(lambda: out.read_text() if out.exists() else "", lambda t: "ready" in t)
    finally:
        immortal.attach("two").stop()


def test_exit_events_carry_a_restart_record(started, recorder):
    group = started(TALKER, ["--exit", "3"], monitor="recorder", options=recorder.options,
                    policy={"backoff_initial": 0.1, "backoff_factor": 2.0, "jitter": 0.0,
                            "max_restarts": 2, "window": 60})
    group.wait(30)
    events = recorder.events()
    exits = [e["record"] for e in events if e["hook"] == "exit"]
    assert [r["decision"] for r in exits] == ["backoff", "backoff", "give up"]
    assert [r["attempt"] for r in exits] == [1, 2, 3]
    assert [r["delay"] for r in exits[:2]] == [0.1, 0.2]  # not below supervise.QUICK_FLOOR
    assert all(r["code"] == 3 and r["uptime"] >= 0 and not r["core_dumped"] for r in exits)
    assert "max_restarts=2" in exits[-1]["reason"]
    assert [e["why"] for e in events if e["hook"] == "respawn"] == ["exit", "exit"]


def test_manual_restart_is_recorded_as_such(started, recorder):
    group = started(TALKER, [], monitor="recorder", options=recorder.options)
    group.restart()
    events = recorder.wait_for(lambda ev: any(e["hook"] == "respawn" for e in ev))
    exit_record = next(e["record"] for e in events if e["hook"] == "exit")
    assert exit_record["decision"] == "restart" and exit_record["reason"] == "manual"
    assert next(e for e in events if e["hook"] == "respawn")["why"] == "manual"
    group.stop()
    last = [e["record"] for e in recorder.events() if e["hook"] == "exit"][-1]
    assert last["decision"] == "stop" and last["reason"] == "stop"


def test_a_monitor_raising_in_every_hook_harms_neither_target_nor_others(started, recorder):
    group = started(TALKER, ["--out", "2"], policy={"min_uptime": 0.0},
                    monitors={"plugins.sample:Raiser": {}, "recorder": recorder.options})
    first = group.pids["target"]
    recorder.wait_for(lambda ev: any(e.get("line") == "ready" for e in ev))
    os.kill(group.pids["pump"], signal.SIGKILL)  # a "pump restart" setup that raises
    recorder.wait_for(lambda ev: any(e["hook"] == "adopt" for e in ev))
    os.kill(first, signal.SIGKILL)
    recorder.wait_for(lambda ev: any(e["hook"] == "respawn" for e in ev))
    group.reopen()
    group.stop()
    hooks = [e["hook"] for e in recorder.events()]
    assert hooks[:2] == ["setup", "spawn"] and hooks[-1] == "shutdown"
    assert {"adopt", "exit", "respawn", "stdout"} <= set(hooks)
    assert "raised in 'stdout'" in (group.directory / "pump.log.1").read_text()


def test_offsets_let_a_monitor_skip_a_line_handed_over_again(tmp_path):
    """The offset contract, shown on the built-in jsonl monitor: after a pump restart it
    skips lines at offsets already in its file (a dying pump's last line, repeated)."""
    from immortal_monitors.jsonl import JsonlMonitor

    out = tmp_path / "out.jsonl"
    options = JsonlMonitor.check({"output": str(out)})
    first = JsonlMonitor(options, name="g", directory=tmp_path)
    first.setup("pump start", None)
    first.stdout(b"one", 0)
    first.stdout(b"two", 4)  # the pump dies right after this line, before recording it
    first.shutdown("(the dead pump's file, closed here only to keep the test tidy)")
    second = JsonlMonitor(options, name="g", directory=tmp_path)
    second.setup("pump restart", None)
    second.stdout(b"two", 4)  # handed over again by the successor
    second.stdout(b"three", 8)
    second.shutdown("stop")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    kept = [(x["line"], x["offset"]) for x in lines if "stream" in x]
    assert kept == [("one", 0), ("two", 4), ("three", 8)]


def _plugins():
    """Monitors of every shape a user may write, for the finder and pluggy to agree on."""
    import functools
    import types

    from immortal_monitors.file import FileMonitor
    from immortal_monitors.jsonl import JsonlMonitor

    def decorated(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            return function(*args, **kwargs)
        return wrapper

    class Plain:
        def monitor_stdout(self, line, offset, instance=None): ...
        def monitor_exit(self, status): ...
        @decorated
        def monitor_spawn(self, pid, instance): ...
        @staticmethod
        def monitor_setup(why): ...
        @classmethod
        def monitor_shutdown(cls, reason): ...
        def helper(self, x): ...
        evaluated: list[str] = []

        @property
        def looked_at(self):
            self.evaluated.append("looked_at")  # pluggy runs no property: nor may the pump
            return None

    class Marked:
        @immortal.hookimpl(specname="monitor_stderr")
        def errors(self, line): ...
        @immortal.hookimpl(tryfirst=True)
        def monitor_lines(self, stream, lines, offset, instance): ...
        @staticmethod
        @immortal.hookimpl(specname="monitor_exit")
        def ended(status): ...

    class Sub(immortal.Monitor):
        def stdout(self, line): ...

    module = types.ModuleType("plain_module")
    exec("def monitor_stdout(line, instance): pass\n"
         "def monitor_respawn(pid, why): pass\n"
         "def helper(x): pass\n", module.__dict__)
    return [Plain(), Marked(), module, Sub({}, name="g", directory="."),
            FileMonitor({}, name="g", directory="."), JsonlMonitor({}, name="g", directory=".")]


@pytest.mark.parametrize("plugin", _plugins(), ids=lambda p: type(p).__name__)
def test_the_pumps_finder_finds_what_pluggy_registers(plugin):
    # The pump calls monitors without pluggy (hookimpls.py): the same functions, taking
    # the same arguments, as pluggy found when the caller checked them.
    from immortal import hookimpls

    manager = monitorload.plugin_manager()
    manager.register(plugin)
    manager.check_pending()
    registered = {name: (impl.function, tuple(impl.argnames))
                  for name, caller in vars(manager.hook).items() if name.startswith("monitor_")
                  for impl in caller.get_hookimpls() if impl.plugin is plugin}
    assert registered
    assert hookimpls.implementations(plugin) == registered
    assert not getattr(plugin, "evaluated", [])


def test_the_roles_load_no_pluggy_nor_inspect_nor_typing():
    # What a group's daemon and pump import (the built-in monitors included): pluggy and
    # the modules it brings are the largest part of an idle group's memory
    # (docs/benchmarks.md, "Memory of 50 instances"). A third-party monitor may still
    # import them, in its own pump.
    import subprocess
    import sys

    code = ("import sys, immortal._role, immortal.roles, immortal.daemon, immortal.pump, "
            "immortal.monitoring, immortal.pumphosts, immortal_monitors.file; "
            "print(sorted({'pluggy', 'inspect', 'typing'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "[]"


def test_a_monitor_class_with_a_hook_no_specification_names_is_refused_in_the_caller():
    cls = type("Extra", (immortal.Monitor,), {"monitor_stdoutt": lambda self, line: None})
    with pytest.raises(immortal.MonitorError, match="not a valid monitor"):
        monitorload._check_shape("extra", cls)


def test_a_dunder_is_never_a_hook_but_a_monitor_hook_is():
    manager = monitorload.plugin_manager()

    class Plain:
        def monitor_stdout(self, line: bytes) -> None: ...

    plain = Plain()
    assert manager.parse_hookimpl_opts(plain, "__init__") is None
    assert manager.parse_hookimpl_opts(plain, "monitor_stdout") == {}
    manager.register(plain)
    assert [impl.plugin for impl in manager.hook.monitor_stdout.get_hookimpls()] == [plain]


@pytest.mark.parametrize("helper", ["open", "close", "stop", "emit", "lock", "clock", "line",
                                    "blocks", "messages", "spawned", "setup_file", "reset"])
def test_a_helper_method_that_only_looks_like_a_hook_is_accepted(helper):
    cls = type("Helpful", (immortal.Monitor,), {helper: lambda self: None})
    monitorload._check_shape("helpful", cls)  # no MonitorError


@pytest.mark.parametrize("slip, hook", [("stdot", "stdout"), ("spwan", "spawn"),
                                        ("exitt", "exit"), ("setpu", "setup"),
                                        ("shutdwon", "shutdown"), ("stdaut", "stdout")])
def test_a_method_one_slip_from_a_hook_is_refused(slip, hook):
    cls = type("Slip", (immortal.Monitor,), {slip: lambda self: None})
    with pytest.raises(immortal.MonitorError, match=f"did you mean '{hook}'.*'_{slip}'"):
        monitorload._check_shape("slip", cls)


def _needs_extra(self, line, offset, extra):
    pass


def _keyword_only(self, status, *, why):
    pass


@pytest.mark.parametrize("hook, method", [("stdout", _needs_extra), ("exit", _keyword_only)])
def test_a_hook_that_needs_arguments_the_pump_does_not_pass_is_refused(hook, method):
    cls = type("Needy", (immortal.Monitor,), {hook: method})
    with pytest.raises(immortal.MonitorError, match=f"{hook}\\(\\) needs arguments the pump "
                                                    "does not pass"):
        monitorload._check_shape("needy", cls)


@pytest.mark.parametrize("method", [lambda self, line: None,
                                    lambda self, data, offset=0: None,
                                    lambda self, *args: None])
def test_a_hook_that_takes_what_the_pump_passes_is_accepted(method):
    cls = type("Fine", (immortal.Monitor,), {"stdout": method})
    monitorload._check_shape("fine", cls)  # no MonitorError


@pytest.mark.parametrize("monitor, fragments", [
    ("plugins.checks:PathOptions", ("PosixPath('/var/log/app.log')", "JSON", "'output'")),
    ("plugins.checks:ListOptions", ("['output']", "mapping", "list")),
])
def test_check_returning_what_spec_json_cannot_hold_is_a_monitor_error(home, monitor,
                                                                       fragments):
    with pytest.raises(immortal.MonitorError) as info:
        immortal.start(TALKER, monitor=monitor)
    message = str(info.value)
    assert repr(monitor) in message, message
    for fragment in fragments:
        assert fragment in message, message
    assert os.listdir(home) == []
