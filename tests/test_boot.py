"""What survives a reboot, and what a probe or a scraper reads: systemd units
(``startup systemd``, checked by ``systemd-analyze verify``, and their ``ExecStart`` run for
real), ``start-recorded``, ``save``/``resurrect`` after every process of the groups was
killed, ``status --ready`` as a readiness probe, ``metrics`` read by prometheus_client's
own OpenMetrics parser."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import immortal
from conftest import LONG, SHORT, TALKER, kill_at_once, wait_for
from immortal._linux import is_alive
from immortal.recorded import arguments, record
from immortal.state import read_status

pytestmark = pytest.mark.timeout(180)


def cli(home: Path, *args: str, env: dict[str, str] | None = None,
        timeout: float = LONG) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "immortal", *args],
                          env={**os.environ, "IMMORTAL_HOME": str(home), **(env or {})},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}{result.stderr}"
    return result.stdout


@pytest.fixture
def stopped_at_end(home: Path):
    names: list[str] = []
    yield names
    for name in names:
        cli(home, "stop", name)


def same_options(name: str) -> dict[str, object]:
    """What the group's record says it runs with (its import path aside)."""
    return arguments(record(name))


# --- systemd units ----------------------------------------------------------------------------

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def unit_lines(text: str) -> dict[str, str]:
    return {key: value for key, _, value in (line.partition("=") for line in text.splitlines())
            if value}


@needs_analyze
@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
def test_a_unit_for_a_group_passes_systemd_analyze_verify(home, tmp_path, user,
                                                          stopped_at_end):
    stopped_at_end.append("svc")
    ok(cli(home, "run", "-n", "svc", "--stop-timeout", "7", TALKER))
    text = ok(cli(home, "startup", "systemd", *(["--user"] if user else []), "svc"))
    fields = unit_lines(text)
    assert fields["Type"] == "notify" and fields["NotifyAccess"] == "main"
    assert fields["KillMode"] == "mixed" and fields["Restart"] == "on-failure"
    assert fields["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert fields["TimeoutStopSec"] == "12"  # stop_timeout, and a margin
    assert fields["Environment"] == f"IMMORTAL_HOME={home}"
    assert fields["WantedBy"] == ("default.target" if user else "multi-user.target")
    command = fields["ExecStart"].split()
    assert os.access(command[0], os.X_OK)
    assert command[-3:] == ["start-recorded", "--foreground", "svc"]
    path = tmp_path / "immortal-svc.service"
    path.write_text(text)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    verified = subprocess.run([ANALYZE, *(["--user"] if user else []), "verify", str(path)],
                              env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
                              capture_output=True, text=True, timeout=LONG)
    assert verified.returncode == 0, verified.stdout + verified.stderr


@needs_analyze
@pytest.mark.parametrize("name, unit", [("x+y", "immortal-x\\x2by.service"),
                                        ("a@b.c-d", "immortal-a\\x40b.c-d.service")])
def test_a_unit_for_a_name_systemd_escapes_passes_systemd_analyze_verify(
        home, tmp_path, name, unit, stopped_at_end):
    """A '+' is no character of a unit name, and an '@' makes it an instance of a template
    ('immortal-a@' for 'immortal-a@b'): the unit is named with systemd's escape for them,
    a plain unit; '.' and '-' stay."""
    stopped_at_end.append(name)
    ok(cli(home, "run", "-n", name, TALKER))
    units = tmp_path / "units"
    said = ok(cli(home, "startup", "systemd", "--install", "--no-enable", "--unit-dir",
                  str(units), name))
    assert os.listdir(units) == [unit]
    assert f"wrote {units / unit}" in said
    assert f"systemctl start {shlex.quote(unit)}" in said  # as a shell takes it
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    verified = subprocess.run([ANALYZE, "verify", str(units / unit)],
                              env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
                              capture_output=True, text=True, timeout=LONG)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_unit_names_keep_to_systemds_rules():
    """systemd.unit(5): letters, digits, ':-_.\\' and one '@', at most 255 bytes; every
    character a group name may hold."""
    from immortal.units import unit_name

    allowed = re.compile(r"[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?\.service")
    for name in ("web", "x+y", "a@b", "a.b-c_d", "A" + "+" * 40):
        assert allowed.fullmatch(unit_name(name)), unit_name(name)
    assert unit_name("x+y") == "immortal-x\\x2by.service"  # as systemd-escape writes it
    assert unit_name("a@b") == "immortal-a\\x40b.service"  # a plain unit, no instance
    with pytest.raises(immortal.InvalidSpec, match="more than systemd takes"):
        unit_name("A" + "+" * 63)


def test_the_units_command_line_runs_the_group_in_the_foreground(home, tmp_path,
                                                                 stopped_at_end):
    """What systemd would run: the group again, in the foreground, saying READY=1."""
    stopped_at_end.append("again")
    ok(cli(home, "run", "-n", "again", "--stop-timeout", "3", TALKER, "--", "--out", "1"))
    command = unit_lines(ok(cli(home, "startup", "systemd", "again")))["ExecStart"].split()
    ok(cli(home, "stop", "again"))
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(str(tmp_path / "notify"))
    manager.settimeout(SHORT)
    service = subprocess.Popen(command, env={**os.environ, "IMMORTAL_HOME": str(home),
                                             "NOTIFY_SOCKET": str(tmp_path / "notify")},
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        heard = []
        while not any(m.startswith("READY=1") for m in heard):
            heard.append(manager.recv(4096).decode())
        status = read_status(home / "again")
        assert status.running and status.pids["daemon"] == service.pid
        service.send_signal(signal.SIGTERM)  # systemctl stop, with KillMode=mixed
        while "STOPPING=1" not in heard:
            heard.append(manager.recv(4096).decode())
        out, err = service.communicate(timeout=LONG)
        assert service.returncode == 0, err
    finally:
        manager.close()
        if service.poll() is None:
            service.kill()
            service.communicate()


def test_install_writes_the_unit_and_enables_it(home, tmp_path, stopped_at_end):
    stopped_at_end.append("inst")
    ok(cli(home, "run", "-n", "inst", TALKER))
    printed = ok(cli(home, "startup", "systemd", "--user", "inst"))
    units = tmp_path / "units"
    said = ok(cli(home, "startup", "systemd", "--user", "--install", "--no-enable",
                  "--unit-dir", str(units), "inst"))
    path = units / "immortal-inst.service"
    assert path.read_text() == printed and f"wrote {path}" in said
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    # A stand-in systemctl on PATH records what it is asked.
    fake = tmp_path / "bin"
    fake.mkdir()
    asked = tmp_path / "asked"
    (fake / "systemctl").write_text(f"#!/bin/sh\necho \"$@\" >> {asked}\n")
    (fake / "systemctl").chmod(0o755)
    said = ok(cli(home, "startup", "systemd", "--user", "--install", "--unit-dir",
                  str(units), "inst", env={"PATH": f"{fake}:{os.environ['PATH']}"}))
    # By its path: systemd does not search a directory of one's own for a name.
    assert asked.read_text() == f"--user enable {path}\n"
    assert "enabled immortal-inst.service" in said and "enable-linger" in said
    asked.unlink()
    ok(cli(home, "startup", "systemd", "--user", "--install", "inst",
           env={"PATH": f"{fake}:{os.environ['PATH']}", "HOME": str(tmp_path)}))
    assert asked.read_text() == "--user enable immortal-inst.service\n"


def test_startup_of_a_group_that_does_not_exist_is_exit_3(home):
    result = cli(home, "startup", "systemd", "nothing")
    assert result.returncode == 3 and "no group named 'nothing'" in result.stderr


# --- start-recorded, save, resurrect ---------------------------------------------------------

def test_start_recorded_starts_a_stopped_group_again_with_its_options(home, tmp_path,
                                                                      stopped_at_end):
    stopped_at_end.append("rec")
    ok(cli(home, "run", "-n", "rec", "-w", "2", "-e", "FOO=bar", "--stop-timeout", "3",
           "--max-restarts", "9", "-o", f"output={tmp_path / 'rec.txt'}", TALKER, "--",
           "--env", "FOO"))
    before = same_options("rec")
    ok(cli(home, "stop", "rec"))
    said = ok(cli(home, "start-recorded", "rec"))
    assert "started 'rec'" in said
    status = read_status(home / "rec")
    assert status.running and len(status.instances) == 2
    assert same_options("rec") == before


def kill_everything(home: Path, name: str) -> None:
    """SIGKILL a group's supervisors (at one instant) and then its targets."""
    status = read_status(home / name)
    targets = [entry.pid for entry in status.instances if entry.pid] or \
        [status.pids["target"]]
    kill_at_once(*(status.pids[role] for role in ("daemon", "pump") if role in status.pids))
    for pid in targets:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: [pid for pid in (*status.pids.values(), *targets)
                      if is_alive(pid, None)], lambda alive: alive == [], SHORT,
             f"every process of {name!r} gone")


def test_save_then_resurrect_after_everything_was_killed(home, stopped_at_end):
    stopped_at_end.extend(["web", "jobs"])
    ok(cli(home, "run", "-n", "web", "-w", "2", "-e", "MODE=web", "--stop-timeout", "4",
           "-m", "jsonl", TALKER, "--", "--env", "MODE"))
    ok(cli(home, "run", "-n", "jobs", "-s", "unattached", "--min-uptime", "2",
           "--final-exit-codes", "5", TALKER))
    options = {name: same_options(name) for name in ("web", "jobs")}
    said = ok(cli(home, "save"))
    assert "saved 2 group(s)" in said and (home / ".saved.json").exists()
    listed = ok(cli(home, "list"))  # the record is no group of the home's
    assert [line.split()[0] for line in listed.splitlines()[1:-1]] == ["jobs", "web", "web:0",
                                                                       "web:1"], listed
    for name in ("web", "jobs"):
        kill_everything(home, name)
        assert not read_status(home / name).running
    said = ok(cli(home, "resurrect"))
    assert "started 'web'" in said and "started 'jobs'" in said
    for name in ("web", "jobs"):
        status = read_status(home / name)
        assert status.running, name
        assert same_options(name) == options[name]
    assert len(read_status(home / "web").instances) == 2
    assert read_status(home / "jobs").strategy == "unattached"
    again = ok(cli(home, "resurrect"))  # nothing to do: each runs
    assert "'web' is running already" in again and "'jobs' is running already" in again


def test_resurrect_with_nothing_saved_is_exit_3(home):
    result = cli(home, "resurrect")
    assert result.returncode == 3 and "immortal save" in result.stderr


# --- probes and metrics ----------------------------------------------------------------------

def test_status_ready_is_a_readiness_probe(home, stopped_at_end):
    stopped_at_end.append("probe")
    run = subprocess.Popen([sys.executable, "-m", "immortal", "run", "-n", "probe",
                            "--ready", "line:^got USR1", TALKER, "--", "--trap", "USR1",
                            "--out", "1"],
                           env={**os.environ, "IMMORTAL_HOME": str(home)},
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        output = home / "probe" / "output.log"
        wait_for(lambda: output.read_text() if output.exists() else "",
                 lambda text: "out 1" in text, LONG, "the target's trap set")
        assert cli(home, "status", "probe").returncode == 0  # running: alive
        assert cli(home, "status", "--ready", "probe").returncode == 3  # not ready yet
        os.kill(read_status(home / "probe").pids["target"], signal.SIGUSR1)
        out, err = run.communicate(timeout=LONG)
        assert run.returncode == 0, err
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert cli(home, "status", "--ready", "probe").returncode == 0
    ok(cli(home, "stop", "probe"))
    assert cli(home, "status", "--ready", "probe").returncode == 3
    assert cli(home, "status", "probe").returncode == 3


def test_metrics_are_openmetrics_per_instance(home, stopped_at_end):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    stopped_at_end.extend(["m1", "m2"])
    ok(cli(home, "run", "-n", "m1", "-w", "2", TALKER))
    ok(cli(home, "run", "-n", "m2", "--min-uptime", "0", TALKER))
    os.kill(read_status(home / "m2").pids["target"], signal.SIGKILL)
    wait_for(lambda: read_status(home / "m2"),
             lambda s: s.restarts == 1 and s.state == "running", LONG, "m2 restarted")
    text = ok(cli(home, "metrics"))
    families = {family.name: family for family in text_string_to_metric_families(text)}
    values = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
              for family in families.values() for sample in family.samples}
    assert values[("immortal_up", (("group", "m1"),))] == 1
    assert values[("immortal_restarts_total", (("group", "m2"), ("instance", "0")))] == 1
    for k in ("0", "1"):
        assert values[("immortal_ready", (("group", "m1"), ("instance", k)))] == 1
        assert values[("immortal_state", (("group", "m1"), ("immortal_state", "running"),
                                          ("instance", k)))] == 1
        assert values[("immortal_uptime_seconds", (("group", "m1"), ("instance", k)))] >= 0
    assert values[("immortal_dropped_lines_total", (("group", "m1"), ("monitor", "file")))] == 0
    assert families["immortal_uptime_seconds"].unit == "seconds"
    one = ok(cli(home, "metrics", "m2"))
    assert 'group="m1"' not in one and one.endswith("# EOF\n")
    ok(cli(home, "stop", "m1"))
    stopped = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(ok(cli(home, "metrics", "m1")))
               for s in f.samples}
    assert stopped[("immortal_up", (("group", "m1"),))] == 0
    assert not any(name == "immortal_uptime_seconds" for name, _ in stopped)


def test_metrics_of_a_group_of_programs_name_each_program(home, stopped_at_end):
    """Each program numbers its instances from 0: without a program label, web:0 and
    worker:0 would be one series twice, and a scraper refuses the whole text."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    stopped_at_end.append("site")
    immortal.start_group("site", {
        "web": {"file": TALKER, "workers": 2, "ready": "spawn", "stop_timeout": 5.0},
        "worker": {"file": TALKER, "ready": "spawn", "stop_timeout": 5.0}})
    text = ok(cli(home, "metrics", "site"))
    values = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
              for family in text_string_to_metric_families(text)
              for sample in family.samples}
    for program, instance in (("web", "0"), ("web", "1"), ("worker", "0")):
        labels = (("group", "site"), ("instance", instance), ("program", program))
        assert values[("immortal_spawned_total", labels)] == 1
    for program in ("web", "worker"):
        key = (("group", "site"), ("monitor", "file"), ("program", program))
        assert values[("immortal_dropped_lines_total", key)] == 0


def test_a_failed_start_from_the_record_keeps_the_record(home, stopped_at_end):
    """A unit restarted after a failure (here an address in use) must find it again."""
    stopped_at_end.append("held")
    ok(cli(home, "run", "-n", "held", "--listen", "tcp://127.0.0.1:0", TALKER))
    address = read_status(home / "held").listen[0]
    ok(cli(home, "stop", "held"))
    record_before = (home / "held" / "spec.json").read_text()
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", int(address.rsplit(":", 1)[1])))
    squatter.listen()
    try:
        failed = cli(home, "start-recorded", "held")
        assert failed.returncode == 1 and "tcp://127.0.0.1" in failed.stderr, failed
        assert (home / "held" / "spec.json").read_text() == record_before
    finally:
        squatter.close()
    ok(cli(home, "start-recorded", "held"))
    assert read_status(home / "held").listen == [address]


def test_unit_words_are_quoted_as_systemd_reads_them():
    from immortal.units import quote

    assert quote("/usr/bin/immortal") == "/usr/bin/immortal"
    assert quote("a b") == '"a b"'
    assert quote('say "hi"\\') == '"say \\"hi\\"\\\\"'
    assert quote("100%") == "100%%" and quote("$HOME") == "$$HOME"
    assert quote("K=$v", variables=False) == "K=$v"
