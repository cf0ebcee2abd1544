"""``immortal up``, ``down``, ``reload`` on a real immortal.toml, a program of the file by its
bare name, several names and ``--all``, ``start NAME`` and ``forget``: real ``immortal``
commands, real servers and a real HTTP client.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import LONG, PROGRAMS, TALKER, wait_for
from test_config_cli import described, immortal, write

pytestmark = pytest.mark.timeout(240)

SHOP = '''\
    [programs.web]
    file = "listener.py"
    workers = 2
    listen = ["tcp://127.0.0.1:0"]
    ready = "line:serving"
    stop_timeout = 5

    [programs.worker]
    file = "worker.py"
    args = ["--env", "QUEUE", "--out", "1"]
    stop_timeout = 5

    [programs.worker.env]
    QUEUE = "jobs"

    [programs.worker.env.production]
    QUEUE = "jobs-prod"

    [programs.audit]
    file = "audit.py"
    args = ["--out", "2"]
    stop_timeout = 5
    monitors = { logging = {} }

    [env.production]
    programs.web.workers = 4
    programs.worker.args = ["--env", "QUEUE", "--out", "3"]
    '''


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    directory = tmp_path / "shop"
    directory.mkdir()
    shutil.copy(PROGRAMS / "listener.py", directory / "listener.py")
    for program in ("worker.py", "audit.py"):
        shutil.copy(TALKER, directory / program)
    write(directory, SHOP)
    return directory


@pytest.fixture(autouse=True)
def stopped_at_the_end(home, tmp_path):
    """Every group the test started is stopped, even after a failure."""
    yield
    immortal(home, tmp_path, "stop", "--all")


def ok(result, code: int = 0) -> str:
    assert result.returncode == code, described(result)
    return result.stdout


def pids(home: Path, cwd: Path, name: str = "shop") -> dict[str, int]:
    """Each instance's pid, by its address ('shop/web:0')."""
    data = json.loads(ok(immortal(home, cwd, "status", name, "--json")))
    return {f"{name}/{e['program']}:{e['instance']}": e["pid"] for e in data["instances"]}


def address(home: Path, cwd: Path) -> str:
    data = json.loads(ok(immortal(home, cwd, "status", "shop", "--json")))
    return data["listen"][0].replace("tcp://", "http://")


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=LONG) as answer:
        return json.loads(answer.read())


def output(home: Path, program: str) -> str:
    path = home / "shop" / "programs" / program / "output.log"
    return path.read_text() if path.exists() else ""


def test_up_config_reload_down_with_environment_and_command_line(home, shop):
    """The file's three programs started by 'up -E production' with a command line
    override; 'config' shows where each value came from; a reload after one program was
    edited rolls that one alone (even run from another environment); 'down' ends all."""
    override = ("--set", "programs.audit.stop_timeout=7")
    result = immortal(home, shop, "up", "-E", "production", *override)
    out = ok(result)
    assert re.search(r"^started shop/web: shop/web:0 \d+, shop/web:1 \d+, shop/web:2 \d+, "
                     r"shop/web:3 \d+$", out, re.M), out
    assert "started shop/worker" in out and "started shop/audit" in out
    before = pids(home, shop)
    assert sorted(before) == ["shop/audit:0", *(f"shop/web:{k}" for k in range(4)),
                              "shop/worker:0"]

    served = {get(address(home, shop))["pid"] for _ in range(8)}
    assert served <= {before[f"shop/web:{k}"] for k in range(4)}
    wait_for(lambda: output(home, "worker"), lambda text: "out 3" in text, LONG,
             "the production args")
    assert "env QUEUE=jobs-prod" in output(home, "worker")

    shown = ok(immortal(home, shop, "config", "-E", "production", *override, "--json"))
    programs = json.loads(shown)["programs"]
    assert programs["audit"]["stop_timeout"]["source"] == "command line"
    assert programs["web"]["workers"]["source"].startswith("env.production:")
    assert programs["worker"]["args"]["source"].startswith("env.production:")
    assert programs["worker"]["env.QUEUE"]["source"].startswith("env.production:")
    assert programs["audit"]["args"]["source"] == "file:21"
    assert programs["web"]["stop_timeout"]["source"] == "file:6"

    text = (shop / "immortal.toml").read_text()
    write(shop, text.replace('"--out", "3"]', '"--out", "4"]'))
    again = immortal(home, shop, "reload", "-E", "production", *override,
                     ANOTHER_SHELL="1", TERM="dumb")
    lines = ok(again).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "applied environment 'production' (command line)", "unchanged shop/web",
        "rolled shop/worker", "unchanged shop/audit"], described(again)
    after = pids(home, shop)
    assert after["shop/worker:0"] != before["shop/worker:0"]
    assert {k: v for k, v in after.items() if "worker" not in k} == \
        {k: v for k, v in before.items() if "worker" not in k}
    wait_for(lambda: output(home, "worker"), lambda text: "out 4" in text, LONG,
             "the new args")

    ok(immortal(home, shop, "down"))
    assert ok(immortal(home, shop, "status", "shop"), 3).startswith("shop: stopped")
    assert all(not os.path.exists(f"/proc/{pid}") for pid in after.values())


#: a reload in a process of its own, counting the opens of the group's spec.json (argv[1])
COUNTED_RELOAD = """
import sys
from immortal import fileverbs
from immortal.config import load

config = load()
opened = []
sys.addaudithook(lambda event, args: opened.append(args[0])
                 if event == "open" and args and str(args[0]) == sys.argv[1] else None)
outcome = fileverbs.reload(config)
reads = len(opened)  # before describe()
print(reads, *fileverbs.describe(outcome), sep="\\n")
"""


def test_a_reload_reads_the_running_spec_once(home, shop):
    """'reload' reads the group's spec.json once: the running definitions it builds the
    file's programs for are those it compares them with, and those its notes compare the
    file's group settings with (the file asks for another start_timeout: a note)."""
    ok(immortal(home, shop, "up", "worker", "audit"))
    # The file's group without its listener, and a start_timeout the group does not run with.
    worker_and_audit = SHOP[SHOP.index("    [programs.worker]"):SHOP.index("    [env.")]
    write(shop, "    start_timeout = 20\n\n" + worker_and_audit + "    [env.production]\n")
    spec = home / "shop" / "spec.json"
    counted = subprocess.run([sys.executable, "-c", COUNTED_RELOAD, str(spec)], cwd=shop,
                             env={**{k: v for k, v in os.environ.items()
                                     if k not in ("IMMORTAL_ENV", "IMMORTAL_READY")},
                                  "IMMORTAL_HOME": str(home)},  # as immortal() runs 'up'
                             stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=LONG)
    lines = ok(counted).splitlines()
    assert [line.split(":")[0] for line in lines[1:]] == [
        "unchanged shop/worker", "unchanged shop/audit", "note"], described(counted)
    assert "start_timeout 20" in lines[-1], lines
    assert lines[0] == "1", described(counted)
    ok(immortal(home, shop, "down"))


def test_a_reload_with_another_umask_changes_no_program(home, shop):
    """A program whose umask the file does not set keeps the one its group was started
    with: a reload from a shell (a unit, cron) with another umask rolls nothing."""
    def run(*args: str, umask: int) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("IMMORTAL_ENV", "IMMORTAL_READY")}
        return subprocess.run([sys.executable, "-m", "immortal", *args], cwd=shop,
                              env={**env, "IMMORTAL_HOME": str(home)}, umask=umask,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=LONG)

    ok(run("up", "worker", umask=0o022))
    before = pids(home, shop)["shop/worker:0"]
    write(shop, SHOP[SHOP.index("    [programs.worker]"):SHOP.index("    [programs.audit]")]
          + "    [env.production]\n")
    out = ok(run("reload", umask=0o077))
    assert out.startswith("unchanged shop/worker"), out
    assert pids(home, shop)["shop/worker:0"] == before
    status = Path(f"/proc/{before}/status").read_text()
    assert re.search(r"^Umask:\s+0022$", status, re.M), status
    ok(immortal(home, shop, "down"))


def test_a_reload_without_e_applies_the_environment_the_group_runs_in(home, shop):
    """A group started with -E production: a reload without -E (a unit, cron, another
    shell) applies production again and says so; -E '' applies none; 'up' adds programs
    in the group's environment only."""
    worker = SHOP[SHOP.index("    [programs.worker]"):SHOP.index("    [programs.audit]")]
    write(shop, worker + "    [env.production]\n")
    ok(immortal(home, shop, "up", "-E", "production"))
    wait_for(lambda: output(home, "worker"), lambda text: "env QUEUE=jobs-prod" in text,
             LONG, "the production variable")
    before = pids(home, shop)["shop/worker:0"]
    lines = ok(immortal(home, shop, "reload")).splitlines()
    assert lines[0] == "applied environment 'production' (the running group's)", lines
    assert lines[1].startswith("unchanged shop/worker"), lines
    assert pids(home, shop)["shop/worker:0"] == before
    write(shop, worker.replace("[programs.worker.env.production]\n", "")
          .replace('QUEUE = "jobs-prod"', ""))
    gone = immortal(home, shop, "reload")
    assert gone.returncode == 2, described(gone)
    assert "unknown environment 'production'" in gone.stderr
    assert "the group runs in it: apply another with -E NAME, or none with -E ''" in \
        gone.stderr
    write(shop, worker + "    [env.production]\n")

    lines = ok(immortal(home, shop, "reload", "-E", "")).splitlines()
    assert lines[0] == ("applied no environment (command line); the group ran in "
                        "environment 'production'"), lines
    assert lines[1].startswith("rolled shop/worker"), lines
    wait_for(lambda: output(home, "worker"), lambda text: "env QUEUE=jobs\n" in text,
             LONG, "the variable of no environment")
    refused = immortal(home, shop, "up", "-E", "production")
    assert refused.returncode == 2, described(refused)
    assert "group 'shop' runs in no environment, not environment 'production'" in \
        refused.stderr
    ok(immortal(home, shop, "down"))


def test_reload_and_down_without_e_find_a_group_its_environment_renamed(home, shop):
    """An environment that names the group otherwise: 'reload' and 'down' without -E
    (a unit, cron) find the group it runs as, not the file's group of no environment."""
    worker = SHOP[SHOP.index("    [programs.worker]"):SHOP.index("    [programs.audit]")]
    write(shop, worker + '    [env.production]\n    name = "shop-prod"\n')
    ok(immortal(home, shop, "up", "-E", "production"))
    lines = ok(immortal(home, shop, "reload")).splitlines()
    assert lines[0] == "applied environment 'production' (the running group's)", lines
    assert lines[1].startswith("unchanged shop-prod/worker"), lines
    out = ok(immortal(home, shop, "down"))
    assert "shop-prod/worker" in out and "stopped" in out, out
    gone = immortal(home, shop, "reload")
    assert gone.returncode != 0 and "is not running" in gone.stderr, described(gone)


def test_up_of_some_programs_then_the_rest_leaves_the_first_untouched(home, shop):
    """'up PROGRAM' starts the group with it alone; a later 'up' adds the others it can:
    a program that listens is bound when the group starts, and is refused, clearly."""
    out = ok(immortal(home, shop, "up", "worker"))
    assert out.startswith("started shop/worker: shop/worker:0 ")
    first = pids(home, shop)
    assert list(first) == ["shop/worker:0"]
    out = ok(immortal(home, shop, "up", "audit", "worker"))
    assert [line.split(":")[0] for line in out.splitlines()] == [
        "running shop/worker", "started shop/audit"]
    assert pids(home, shop)["shop/worker:0"] == first["shop/worker:0"]
    listening = immortal(home, shop, "up")
    assert listening.returncode == 2, described(listening)
    assert "program 'web': 'listen' addresses are bound when the group starts" in \
        listening.stderr
    assert sorted(pids(home, shop)) == ["shop/audit:0", "shop/worker:0"]
    ok(immortal(home, shop, "down"))


def test_a_job_of_the_file_that_finished_leaves_reload_restart_and_readiness_working(
        home, shop):
    """A program that ends with a final exit code (a job) beside a worker: the group is
    ready, a reload with nothing changed and a restart return at once, and a second 'up'
    says the job finished rather than running."""
    write(shop, """\
        [programs.worker]
        file = "worker.py"
        stop_timeout = 5
        [programs.job]
        file = "job.sh"
        ready = "spawn"
        policy.final_exit_codes = [0]
        """)
    (shop / "job.sh").write_text("#!/bin/sh\necho done\n")
    (shop / "job.sh").chmod(0o755)
    ok(immortal(home, shop, "up"))
    wait_for(lambda: json.loads(ok(immortal(home, shop, "status", "shop", "--json"))),
             lambda data: [e["state"] for e in data["instances"]] == ["running", "stopped"],
             LONG, what="the job done, the worker running")
    ok(immortal(home, shop, "status", "--ready", "shop"))
    assert [line.split(":")[0] for line in ok(immortal(home, shop, "reload")).splitlines()
            ][:2] == ["unchanged shop/worker", "unchanged shop/job"]
    assert ok(immortal(home, shop, "restart", "shop")).startswith("restarted 'shop'")
    lines = ok(immortal(home, shop, "up")).splitlines()
    assert lines[0].startswith("running shop/worker: ") and lines[1].startswith(
        "finished shop/job (a final exit code: its job is done; 'immortal restart shop/job' "
        "runs it again)"), lines


def test_a_stopped_group_of_a_programs_name_notes_the_files_program(home, shop):
    """An old group 'worker' (stopped) and the file's program 'worker' running: the group
    comes first, as documented, and a note says what the file's program is called."""
    ok(immortal(home, shop, "run", "-n", "worker", "--ready", "spawn", str(TALKER)))
    ok(immortal(home, shop, "stop", "worker"))
    ok(immortal(home, shop, "up", "worker"))
    shown = immortal(home, shop, "status", "worker")
    assert shown.returncode == 3, described(shown)
    assert "note: 'worker' is a group that does not run; the configuration's program is " \
        "'shop/worker'" in shown.stderr, described(shown)
    ok(immortal(home, shop, "down"))


def test_a_program_by_its_bare_name(home, shop):
    """status, restart, logs, scale, stop and up of PROGRAM: the file's group's
    program."""
    ok(immortal(home, shop, "up"))
    before = pids(home, shop)
    status = ok(immortal(home, shop, "status", "worker"))
    assert "shop/worker:0" in status and "shop/web:0" not in status
    restarted = ok(immortal(home, shop, "restart", "worker"))
    assert restarted.startswith("restarted 'shop/worker'")
    now = pids(home, shop)
    assert now["shop/worker:0"] != before["shop/worker:0"]
    assert now["shop/web:1"] == before["shop/web:1"]
    wait_for(lambda: ok(immortal(home, shop, "logs", "worker")),
             lambda text: "env QUEUE=jobs" in text, LONG, "the worker's lines")
    assert ok(immortal(home, shop, "scale", "worker", "2")).startswith(
        "'worker' runs 2 instance(s): shop/worker:0 ")
    assert "shop/worker:1" in pids(home, shop)
    ok(immortal(home, shop, "scale", "worker", "1"))
    assert ok(immortal(home, shop, "stop", "worker")) == "stopped shop/worker\n"
    assert "shop/worker:0" not in pids(home, shop)
    assert not os.path.exists(f"/proc/{now['shop/worker:0']}")
    missing = immortal(home, shop, "down", "worker")
    assert missing.returncode == 3, described(missing)
    assert "program 'worker' of 'shop' is not running" in missing.stderr
    ok(immortal(home, shop, "up", "worker"))
    ok(immortal(home, shop, "down", "audit"))
    assert sorted(pids(home, shop)) == ["shop/web:0", "shop/web:1", "shop/worker:0"]
    ok(immortal(home, shop, "down"))


PAIR = '''\
    name = "pair"

    [programs.front]
    file = "front.py"
    workers = 2
    stop_timeout = 5

    [programs.back]
    file = "back.py"
    stop_timeout = 5
    '''


def test_status_of_one_program_shows_what_is_that_programs(home, tmp_path):
    """'status GROUP/PROGRAM': the group's name and state, then the program's instances,
    spawns, restarts, readiness and output alone; not the group's supervisors, start or
    directory, nor the other program's instances, restarts or output."""
    directory = tmp_path / "pair"
    directory.mkdir()
    for program in ("front.py", "back.py"):
        shutil.copy(TALKER, directory / program)
    write(directory, PAIR, "pair.toml")
    ok(immortal(home, directory, "up", "-c", "pair.toml"))
    back = pids(home, directory, "pair")["pair/back:0"]
    os.kill(back, signal.SIGKILL)  # back's one restart; front's instances run on
    wait_for(lambda: json.loads(ok(immortal(home, directory, "status", "pair", "--json"))),
             lambda data: all(e["pid"] not in (None, back) and e["ready"]
                              for e in data["instances"]), LONG, "back's new target, ready")

    result = immortal(home, directory, "status", "pair/back")
    text = ok(result)
    lines = text.splitlines()
    assert lines[0] == "pair: running", described(result)
    assert lines[1].startswith("  pair/back: running, 1 instance(s), restarts 1"), text
    assert re.search(r"^  pair/back:0 +pid \d+, running", text, re.M), text
    assert "front" not in text, text
    assert "  spawned 2, restarts 1" in lines, text  # the group's: spawned 4
    assert [line for line in lines if line.startswith("  output")] == [
        f"  output   {home / 'pair' / 'programs' / 'back' / 'output.log'}"], text
    for group_line in ("  daemon", "  pump", "  started", "  dir"):
        assert not any(line.startswith(group_line) for line in lines), text

    data = json.loads(ok(immortal(home, directory, "status", "pair/back", "--json")))
    assert (data["name"], data["program"], data["state"]) == ("pair", "back", "running")
    assert [e["program"] for e in data["instances"]] == ["back"]
    assert (data["spawned"], data["restarts"]) == (2, 1)
    assert data["pids"] == {} and set(data["figures"]) == {"instance:back:0"}
    assert data["output"].endswith("/back/output.log")
    group = json.loads(ok(immortal(home, directory, "status", "pair", "--json")))
    assert (group["spawned"], group["restarts"], len(group["instances"])) == (4, 1, 3)
    ok(immortal(home, directory, "down", "-c", "pair.toml"))


def test_bad_names_and_a_group_that_does_not_run(home, shop):
    typo = immortal(home, shop, "up", "wroker")
    assert typo.returncode == 2, described(typo)
    assert "no program 'wroker'" in typo.stderr and "did you mean 'worker'" in typo.stderr
    assert not (home / "shop").exists()
    for command in ("reload", "down"):
        result = immortal(home, shop, command)
        assert result.returncode == 3, described(result)
        assert "group 'shop'" in result.stderr and "is not running" in result.stderr


@pytest.mark.parametrize("text, where, fragment", [
    ("[programs.web]\nfile = 'listener.py'\nworkres = 2\n", "immortal.toml:3",
     "did you mean 'workers'"),
    ("[programs.web]\nfile = 'listener.py'\nargs = '--port'\n", "immortal.toml:3",
     "expected an array of strings"),
    ("[programs.web]\nfile = 'nope.py'\n", "immortal.toml:2", "'nope.py'"),
    ("[programs.web\n", "immortal.toml:1", "TOML syntax error"),
    ("[programs.web]\nfile = 'listener.py'\n[env.staging]\n", "command line",
     "unknown environment 'production'"),
], ids=["unknown-key", "wrong-type", "missing-file", "syntax", "unknown-environment"])
def test_up_with_a_bad_file_starts_nothing(home, shop, text, where, fragment):
    write(shop, text)
    result = immortal(home, shop, "up", *(["-E", "production"] if "[env." in text else []))
    assert result.returncode == 2, described(result)
    assert result.stderr.startswith(f"immortal: error: {where}"), described(result)
    assert fragment in result.stderr
    assert len(result.stderr.splitlines()) == 1, described(result)
    assert not (home / "shop").exists()


def test_several_names_and_all(home, shop, tmp_path):
    for name in ("one", "two"):
        ok(immortal(home, tmp_path, "run", "--name", name, "--stop-timeout", "5", TALKER))
    both = json.loads(ok(immortal(home, tmp_path, "status", "one", "two", "--json")))
    assert [s["name"] for s in both] == ["one", "two"]
    missing = immortal(home, tmp_path, "status", "one", "three")
    assert missing.returncode == 3, described(missing)
    assert "one: running" in missing.stdout and "'three'" in missing.stderr
    assert ok(immortal(home, tmp_path, "restart", "--all")).count("restarted") == 2
    both_names = immortal(home, tmp_path, "stop", "one", "--all")
    assert both_names.returncode == 2
    out = ok(immortal(home, tmp_path, "stop", "--all"))
    assert "stopped 'one'" in out and "stopped 'two'" in out
    assert immortal(home, tmp_path, "stop", "--all").returncode == 3
    listed = immortal(home, tmp_path, "status", "--all")
    assert listed.returncode == 3 and "one: stopped" in listed.stdout


def test_start_a_stopped_group_by_name_and_forget_it(home, tmp_path):
    ok(immortal(home, tmp_path, "run", "--name", "job", "--stop-timeout", "5", TALKER, "--",
                "--out", "1"))
    refused = immortal(home, tmp_path, "forget", "job")
    assert refused.returncode == 4, described(refused)
    assert "is running" in refused.stderr
    ok(immortal(home, tmp_path, "stop", "job"))
    started = ok(immortal(home, tmp_path, "start", "job"))
    assert started.startswith("started 'job'")
    again = immortal(home, tmp_path, "start", "job")
    assert again.returncode == 4, described(again)
    ok(immortal(home, tmp_path, "stop", "job"))
    assert ok(immortal(home, tmp_path, "forget", "job")).startswith("forgot 'job'")
    assert not (home / "job").exists()
    assert "no groups" in ok(immortal(home, tmp_path, "list"))
    gone = immortal(home, tmp_path, "forget", "job")
    assert gone.returncode == 3, described(gone)
    assert immortal(home, tmp_path, "start", "job").returncode == 3


def test_forget_removes_what_a_failed_start_left(home, tmp_path):
    """A start that fails leaves its lock files and its output (to read why) in a directory
    no command listed nor removed; forget removes it."""
    failed = immortal(home, tmp_path, "run", "--name", "bad", "--ready", "uptime:5", TALKER,
                      "--", "--exit", "3")
    assert failed.returncode == 1, described(failed)
    assert (home / "bad" / "lock").exists()
    assert "no groups" in ok(immortal(home, tmp_path, "list"))
    assert ok(immortal(home, tmp_path, "forget", "bad")).startswith("forgot 'bad'")
    assert not (home / "bad").exists()
    assert immortal(home, tmp_path, "forget", "bad").returncode == 3


@pytest.mark.parametrize("command, name, fragment", [
    ("start", "web", "(got 'web': program 'web' of 'shop'); 'immortal up web' starts it"),
    ("start", "shop/web", "'immortal up web' starts it again from its file"),
    ("forget", "shop/worker:0", "'immortal forget shop' removes the stopped group"),
])
def test_start_and_forget_of_a_program_say_what_acts_on_it(home, shop, command, name,
                                                           fragment):
    """A program stopped by 'stop shop/web' is started again by 'up web', not 'start':
    said so, rather than a name refused as badly spelt ('pick another name')."""
    refused = immortal(home, shop, command, name)
    assert refused.returncode == 2, described(refused)
    assert fragment in refused.stderr and "pick another name" not in refused.stderr


ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
def test_a_unit_for_a_configuration_file(home, shop, tmp_path, user):
    """'startup systemd -c FILE': the unit runs 'up --foreground' of the file's group and
    reloads it with 'reload', the file and environment named; systemd accepts it."""
    text = ok(immortal(home, shop, "startup", "systemd", *(["--user"] if user else []),
                       "-c", "immortal.toml", "-E", "production"))
    fields = {key: value for key, _, value in
              (line.partition("=") for line in text.splitlines()) if value}
    config = str(shop / "immortal.toml")
    assert fields["ExecStart"].split()[-6:] == ["up", "--foreground", "-c", config, "-E",
                                                "production"]
    assert fields["ExecReload"].split()[-5:] == ["reload", "-c", config, "-E", "production"]
    assert fields["TimeoutStopSec"] == "10"  # the longest stop_timeout, and a margin
    assert fields["Type"] == "notify" and fields["KillMode"] == "mixed"
    path = tmp_path / "immortal-shop.service"
    path.write_text(text)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    verified = subprocess.run(
        [ANALYZE, *(["--user"] if user else []), "verify", str(path)],
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)}, capture_output=True, text=True,
        timeout=LONG)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    both = immortal(home, shop, "startup", "systemd", "shop", "-c", "immortal.toml")
    assert both.returncode == 2 and "not both" in both.stderr


def test_up_in_the_foreground_under_a_service_manager(home, shop, tmp_path):
    """'up --foreground' (a unit's ExecStart from 'startup systemd -c'): this process is
    the file's group's daemon; READY=1 once every program is ready; 'reload' (ExecReload)
    is RELOADING=1 then READY=1, rolling the program edited alone; SIGTERM stops it, exit 0."""
    import socket

    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(str(tmp_path / "notify"))
    manager.settimeout(LONG)
    env = {key: value for key, value in os.environ.items()
           if key not in ("IMMORTAL_ENV", "IMMORTAL_READY")}  # as immortal() runs commands
    env.update(IMMORTAL_HOME=str(home), NOTIFY_SOCKET=str(tmp_path / "notify"))
    service = subprocess.Popen([sys.executable, "-m", "immortal", "up", "--foreground",
                                "-E", "production"], cwd=shop, env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        heard: list[str] = []

        def until(word: str) -> None:
            while not any(m.startswith(word) for m in heard):
                heard.append(manager.recv(4096).decode())

        until("READY=1")
        status = json.loads(ok(immortal(home, shop, "status", "shop", "--json")))
        assert status["pids"]["daemon"] == service.pid
        before = pids(home, shop)
        assert sorted(before) == ["shop/audit:0", *(f"shop/web:{k}" for k in range(4)),
                                  "shop/worker:0"]
        heard.clear()
        text = (shop / "immortal.toml").read_text()
        write(shop, text.replace('"--out", "3"]', '"--out", "5"]'))
        lines = ok(immortal(home, shop, "reload", "-E", "production")).splitlines()
        assert [line.split(":")[0] for line in lines] == [
            "applied environment 'production' (command line)", "unchanged shop/web",
            "rolled shop/worker", "unchanged shop/audit"]
        until("READY=1")
        assert any(m.startswith("RELOADING=1") for m in heard), heard
        after = pids(home, shop)
        assert after["shop/web:3"] == before["shop/web:3"]
        assert after["shop/worker:0"] != before["shop/worker:0"]
        service.send_signal(signal.SIGTERM)
        until("STOPPING=1")
        service.communicate(timeout=LONG)
        assert service.returncode == 0
    finally:
        manager.close()
        if service.poll() is None:
            service.kill()
            service.communicate()
