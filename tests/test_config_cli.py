"""``immortal validate``, ``config``, ``completion``, ``--version`` and ``run``'s options that
mirror start()'s: real ``immortal`` processes on real files.

Every command runs in a subprocess with the test's private IMMORTAL_HOME and no
IMMORTAL_ENV or IMMORTAL_READY unless the test gives them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import LONG, TALKER, imported_after

pytestmark = pytest.mark.timeout(120)

BIN = os.path.dirname(sys.executable)  # where the console script is


def immortal(home: Path, cwd: Path, *args: str,
             **environ: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("IMMORTAL_ENV", "IMMORTAL_READY")}
    env.update(IMMORTAL_HOME=str(home), PATH=BIN + os.pathsep + env.get("PATH", ""), **environ)
    return subprocess.run([sys.executable, "-m", "immortal", *args], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=LONG)


def described(result: subprocess.CompletedProcess[str]) -> str:
    return (f"exit {result.returncode}\n--- stdout ---\n{result.stdout}"
            f"--- stderr ---\n{result.stderr}")


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """A project directory with three programs; its immortal.toml is the test's to write."""
    directory = tmp_path / "shop"
    directory.mkdir()
    for program in ("web.py", "worker.py", "cron.py"):
        shutil.copy(TALKER, directory / program)
    return directory


def write(directory: Path, text: str, name: str = "immortal.toml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


THREE = '''\
    strategy = "unattached"

    [programs.web]
    file = "web.py"
    workers = 2
    ready = "line:serving"

    [programs.web.env]
    PORT = "8000"

    [programs.web.env.production]
    PORT = "80"

    [programs.worker]
    file = "worker.py"
    stop_timeout = 30

    [programs.cron]
    file = "cron.py"
    policy.final_exit_codes = [0]

    [env.production]
    strategy = "daemon"
    programs.web.workers = 4
    programs.worker.stop_timeout = 60
    '''


# --- validate --------------------------------------------------------------------------------

def test_validate_accepts_a_good_file(home, shop):
    write(shop, THREE)
    result = immortal(home, shop, "validate", "-E", "production")
    assert result.returncode == 0, described(result)
    assert "ok: group 'shop', programs web, worker, cron, environment 'production'" in \
        result.stdout
    assert not (home / "shop").exists(), "validate started nothing"


BAD_FILES = {
    "syntax": ("[programs.web]\nfile = 'web.py'\nworkers = \n", 3, "TOML syntax error"),
    "unknown-key": ("[programs.web]\nfile = 'web.py'\nstop_timout = 3\n", 3,
                    "did you mean 'stop_timeout'"),
    "wrong-type": ("[programs.web]\nfile = 'web.py'\nargs = '--port'\n", 3,
                   "expected an array of strings"),
    "missing-program": ("[programs.web]\n\nfile = 'nope.py'\n", 3, "'nope.py'"),
    "bad-value": ("[programs.web]\nfile = 'web.py'\nworkers = 0\n", 3, "'workers' must be"),
    # good alone, refused together: 'up' starts the file's programs as one group
    "listen-twice": ("[programs.web]\nfile = 'web.py'\nlisten = ['unix:s.sock']\n"
                     "[programs.worker]\nfile = 'worker.py'\nlisten = ['unix:s.sock']\n", 6,
                     "is program 'web''s already"),
    "channel": ("[programs.web]\nfile = 'web.py'\n[programs.worker]\nfile = 'worker.py'\n"
                "channel = true\n", 5, "programs.worker.channel: 'channel' works in a group"),
}


@pytest.mark.parametrize("text, line, fragment", list(BAD_FILES.values()), ids=list(BAD_FILES))
@pytest.mark.parametrize("command", ["validate", "config"])
def test_a_bad_file_exits_2_naming_its_line(home, shop, command, text, line, fragment):
    write(shop, text)
    result = immortal(home, shop, command)
    assert result.returncode == 2, described(result)
    assert result.stdout == ""
    assert result.stderr.startswith(f"immortal: error: immortal.toml:{line}: "), described(result)
    assert fragment in result.stderr


def test_validate_reports_every_problem_at_once(home, shop):
    write(shop, '''\
        [programs.web]
        file = "web.py"
        workrs = 2
        [programs.worker]
        file = "nope.py"
        stop_timeout = "long"
        ''', "deploy.toml")
    result = immortal(home, shop, "validate", "-c", "deploy.toml", "-E", "production",
                      "--set", "strategy=deamon")
    assert result.returncode == 2, described(result)
    lines = result.stderr.splitlines()
    assert all(line.startswith("immortal: error: ") for line in lines), described(result)
    assert [line.split(": ")[2] for line in lines] == [
        "deploy.toml:3", "deploy.toml:5", "deploy.toml:6", "command line", "command line"]
    assert "did you mean 'daemon'" in lines[-1]
    assert "unknown environment 'production'" in result.stderr


def test_validate_reports_every_problem_of_the_programs_together(home, shop):
    """Good alone, refused together: each such problem, not the first one only."""
    write(shop, """\
        [programs.web]
        file = "web.py"
        listen = ["unix:s.sock"]
        [programs.worker]
        file = "worker.py"
        listen = ["unix:s.sock"]
        channel = true
        [programs.cron]
        file = "worker.py"
        listen = ["unix:s.sock"]
        """)
    result = immortal(home, shop, "validate")
    assert result.returncode == 2, described(result)
    lines = [line.split(": ", 4)[2:4] for line in result.stderr.splitlines()]
    assert lines == [["immortal.toml:7", "programs.worker.channel"],
                     ["immortal.toml:10", "programs.cron.listen"]], described(result)
    assert "is program 'web''s already" in result.stderr.splitlines()[1]


def test_validate_without_e_checks_every_environment(home, shop):
    """With no environment chosen, validate checks the file with none and in each of its
    environments: a bad value of one is found (named with it), a problem of the file once."""
    write(shop, THREE.replace("stop_timeout = 30", "stop_timeout = -1")
          .replace("programs.web.workers = 4", "programs.web.workers = 0")
          + "\n    [env.staging]\n    programs.cron.file = \"nope.py\"\n")
    result = immortal(home, shop, "validate")
    assert result.returncode == 2, described(result)
    lines = [line.split(": ", 4)[2:4] for line in result.stderr.splitlines()]
    assert lines == [["immortal.toml:16", "programs.worker.stop_timeout"],
                     ["immortal.toml:24", "programs.web.workers (in environment 'production')"],
                     ["immortal.toml:28", "programs.cron.file (in environment 'staging')"]], \
        described(result)
    write(shop, THREE + "\n    [env.staging]\n")
    result = immortal(home, shop, "validate")
    assert result.returncode == 0, described(result)
    assert result.stdout.endswith(
        "programs web, worker, cron; with no environment and in 'production', 'staging'\n")


def test_a_set_of_a_program_the_file_does_not_have_names_it(home, shop):
    """--set of a program the file does not have: that, with the file's programs (no
    'missing file' of a program nobody wrote); one with its file is a program added."""
    write(shop, THREE)
    result = immortal(home, shop, "validate", "--set", "programs.wbe.workers=2")
    assert result.returncode == 2, described(result)
    assert result.stderr == (
        "immortal: error: command line: programs.wbe: the file has no program 'wbe' (did "
        "you mean 'web'?); its programs: web, worker, cron (a program added here needs its "
        "file: programs.wbe.file)\n")
    result = immortal(home, shop, "validate", "--set", "programs.more.file=cron.py")
    assert result.returncode == 0, described(result)
    assert "programs web, worker, cron, more" in result.stdout


def test_an_unknown_environment_from_immortal_env(home, shop):
    write(shop, THREE)
    result = immortal(home, shop, "validate", IMMORTAL_ENV="prod")
    assert result.returncode == 2, described(result)
    assert "$IMMORTAL_ENV: env: unknown environment 'prod' (did you mean 'production'?)" \
        in result.stderr


def test_no_file_here(home, tmp_path):
    result = immortal(home, tmp_path, "validate")
    assert result.returncode == 2
    assert f"no immortal.toml in {tmp_path}; give one with -c FILE" in result.stderr


# --- config ----------------------------------------------------------------------------------

def test_config_shows_each_value_and_its_source(home, shop):
    write(shop, THREE)
    result = immortal(home, shop, "config", "-E", "production", "--set",
                      "programs.cron.workers=2", IMMORTAL_READY="spawn")
    assert result.returncode == 0, described(result)
    rows = {}
    section = ""
    for line in result.stdout.splitlines():
        if line.startswith("[programs."):
            section = line[len("[programs."):-1] + "."
        elif " = " in line and not line.startswith("#"):
            setting, _, source = line.partition("  # ")
            key, _, value = setting.partition(" = ")
            rows[section + key] = (json.loads(value), source.strip())
    assert rows["strategy"] == ("daemon", "env.production:23")
    assert rows["name"] == ("shop", "default (the file's directory)")
    assert rows["web.workers"] == (4, "env.production:24")
    assert rows["web.ready"] == ("spawn", "$IMMORTAL_READY")
    assert rows["web.env.PORT"] == ("80", "env.production:12")
    assert rows["web.file"] == (str(shop / "web.py"), "file:4")
    assert rows["worker.stop_timeout"] == (60, "env.production:25")
    assert rows["cron.workers"] == (2, "command line")
    assert rows["cron.policy.final_exit_codes"] == ([0], "file:20")
    assert rows["cron.stop_timeout"] == (10.0, "default")
    assert result.stdout.startswith(f"# {shop / 'immortal.toml'}, environment 'production' "
                                    "(command line)")


def test_config_json(home, shop):
    write(shop, THREE)
    result = immortal(home, shop, "config", "--json", IMMORTAL_ENV="production")
    assert result.returncode == 0, described(result)
    data = json.loads(result.stdout)
    assert data["environment"] == {"value": "production", "source": "$IMMORTAL_ENV",
                                   "kind": "variable", "line": None}
    assert data["programs"]["web"]["workers"] == {
        "value": 4, "source": "env.production:24", "kind": "env", "line": 24}
    assert data["programs"]["web"]["ready"]["source"] == "file:6"
    assert list(data["programs"]) == ["web", "worker", "cron"]


def test_config_and_validate_do_not_touch_the_run_path(home, shop):
    """'immortal run' never reads the file, and 'stop' or 'status' import none of it."""
    write(shop, "this is not = valid toml [\n")
    result = immortal(home, shop, "run", "--ready", "spawn", "--stop-timeout", "5",
                      "web.py")
    try:
        assert result.returncode == 0, described(result)
    finally:
        stop = immortal(home, shop, "stop", "web")
    assert stop.returncode == 0, described(stop)
    code = "import sys; sys.argv = ['immortal', 'status', 'x']\nfrom immortal.cli import main"
    assert imported_after(code, {"tomllib", "immortal.config", "immortal.configfile",
                                 "immortal.completion"}) == set()


# --- run's options ---------------------------------------------------------------------------

def test_run_takes_every_option_of_start(home, shop):
    (shop / "vars.env").write_text("FROM_FILE=1\nBOTH=file\n")
    result = immortal(home, shop, "run", "-n", "opts", "--ready", "spawn",
                      "--start-timeout", "20", "--backoff-initial", "0.25",
                      "--backoff-factor", "3", "--backoff-max", "9", "--jitter", "0",
                      "--final-exit-codes", "0,3", "--min-uptime", "2", "--window", "30",
                      "--max-restarts", "4", "--backpressure", "drop", "--channel",
                      "--env-file", "vars.env", "-e", "BOTH=option", "--instances", "1",
                      "web.py")
    try:
        assert result.returncode == 0, described(result)
        written = json.loads((home / "opts" / "spec.json").read_text())
    finally:
        immortal(home, shop, "stop", "opts")
    assert written["policy"] == {
        "min_uptime": 2.0, "backoff_initial": 0.25, "backoff_factor": 3.0, "backoff_max": 9.0,
        "jitter": 0.0, "max_restarts": 4, "window": 30.0, "final_exit_codes": [0, 3]}
    assert (written["start_timeout"], written["backpressure"], written["channel"]) == (
        20.0, "drop", True)
    assert (written["env"]["FROM_FILE"], written["env"]["BOTH"]) == ("1", "option")


@pytest.mark.parametrize("argv, fragment", [
    (["--final-exit-codes", "0,x"], "exit codes must be integers"),
    (["--backoff-factor", "0.5"], "--backoff-factor"),
    (["--jitter", "2"], "--jitter"),
    (["--backpressure", "dorp"], "did you mean 'drop'"),
    (["--env-file", "missing.env"], "missing.env"),
])
def test_run_refuses_bad_new_options(home, shop, argv, fragment):
    result = immortal(home, shop, "run", *argv, "web.py")
    assert result.returncode == 2, described(result)
    assert fragment in result.stderr
    assert result.stderr.count("\n") == 1


# --- version, help, completion ---------------------------------------------------------------

def test_version_and_examples_in_help(home, tmp_path):
    version = immortal(home, tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.startswith("immortal 0."), \
        described(version)
    for command in ("run", "config", "validate", "completion", "stop"):
        shown = immortal(home, tmp_path, command, "--help")
        assert shown.returncode == 0
        examples = shown.stdout.partition("\nexamples:\n")[2]
        assert f"immortal {command}" in examples, shown.stdout


def bash_complete(home: Path, cwd: Path, script: str, *words: str) -> list[str]:
    """What the bash completion offers for the command line ``words`` (the last: the word
    being completed), through the real script in a real bash."""
    program = (f"source {script}\nCOMP_WORDS=({' '.join(repr(w) for w in words)})\n"
               f"COMP_CWORD={len(words) - 1}\n_immortal\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"")
    env = {**os.environ, "IMMORTAL_HOME": str(home),
           "PATH": BIN + os.pathsep + os.environ.get("PATH", "")}
    result = subprocess.run(["bash", "--norc", "-c", program], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=LONG)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line]


def test_bash_completion(home, shop, started, tmp_path):
    write(shop, THREE)
    script = tmp_path / "immortal.bash"
    generated = immortal(home, shop, "completion", "bash")
    assert generated.returncode == 0, described(generated)
    script.write_text(generated.stdout)
    started(TALKER, name="running", ready="spawn")
    assert bash_complete(home, shop, str(script), "immortal", "va") == ["validate"]
    assert bash_complete(home, shop, str(script), "immortal", "run", "--backoff-") == [
        "--backoff-initial", "--backoff-factor", "--backoff-max"]
    assert bash_complete(home, shop, str(script), "immortal", "run", "-s", "d") == [
        "daemon", "development"]
    assert bash_complete(home, shop, str(script), "immortal", "stop", "") == [
        "running", "shop/web", "shop/worker", "shop/cron"]
    assert bash_complete(home, shop, str(script), "immortal", "config", "-E", "") == [
        "production"]
    assert bash_complete(home, shop, str(script), "immortal", "signal", "running", "US") == [
        "USR1", "USR2"]
    assert "web.py" in bash_complete(home, shop, str(script), "immortal", "run", "w")


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_completion_loads(home, tmp_path):
    generated = immortal(home, tmp_path, "completion", "zsh")
    assert generated.returncode == 0, described(generated)
    assert generated.stdout.startswith("#compdef immortal\n")
    script = tmp_path / "_immortal"
    script.write_text(generated.stdout)
    syntax = subprocess.run(["zsh", "-n", str(script)], capture_output=True, text=True,
                            timeout=LONG)
    assert syntax.returncode == 0, syntax.stderr
    loaded = subprocess.run(
        ["zsh", "-fc", f"autoload -U compinit && compinit -u -d {tmp_path}/zcompdump && "
         f"source {script} && print -r -- $_comps[immortal]"],
        capture_output=True, text=True, timeout=LONG)
    assert loaded.stdout.strip() == "_immortal", loaded.stdout + loaded.stderr


def test_a_bad_type_in_an_environment_is_named_as_the_key_it_sets(home, shop):
    """As a bad value there is: 'programs.web.workers (in environment 'production')', not
    the table's own path ('env.production.programs.web.workers')."""
    write(shop, THREE.replace("programs.web.workers = 4", 'programs.web.workers = "eight"'))
    for args in (["validate"], ["validate", "-E", "production"]):
        result = immortal(home, shop, *args)
        assert result.returncode == 2, described(result)
        assert "programs.web.workers (in environment 'production'): expected an integer" \
            in result.stderr and "env.production" not in result.stderr, described(result)
