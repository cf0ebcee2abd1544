"""immortal.toml, read directly: where keys are written (tomlkeys), environment files, the
schema against start()'s own keywords and defaults, the precedence chain, and every kind of
bad file reported at its line, all at once. One real group started from a loaded file.

The command line's side (``immortal config``, ``validate``, ``completion``) is
tests/test_config_cli.py.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import immortal
from immortal import config, configcheck, configfile, configkeys, envfile, request, spec
from immortal.configfile import CLI, DEFAULT, ENV_FILE, ENV_TABLE, FILE, VARIABLE, ConfigError, toml
from immortal.tomlkeys import key_lines, line_of

from conftest import LONG, TALKER, wait_for

ENVIRON = {"PATH": os.defpath}  # no IMMORTAL_READY, no IMMORTAL_ENV: the tests say theirs


def project(tmp_path: Path, text: str, name: str = "shop", **files: str) -> Path:
    """A project directory ``name`` holding immortal.toml (``text``), web.py, worker.py and
    ``files``; the file's path."""
    directory = tmp_path / name
    directory.mkdir()
    for program in ("web.py", "worker.py", "cron.py"):
        shutil.copy(TALKER, directory / program)
    for file_name, content in files.items():
        (directory / file_name.replace("_", ".")).write_text(textwrap.dedent(content))
    path = directory / "immortal.toml"
    path.write_text(textwrap.dedent(text))
    return path


def load(path: Path, env_name: str | None = None, environ: dict[str, str] | None = None,
         **kwargs: Any) -> config.Config:
    return config.load(path, env_name, environ={**ENVIRON, **(environ or {})}, **kwargs)


def problems(path: Path, **kwargs: Any) -> list[configfile.Problem]:
    with pytest.raises(ConfigError) as caught:
        load(path, **kwargs)
    return caught.value.problems


# --- where keys are written ------------------------------------------------------------------

def test_key_lines_follow_every_toml_form():
    text = textwrap.dedent('''\
        # a comment with = and [brackets]
        name = "shop"
        "strategy" = 'daemon'
        [programs.web]
        file = "web.py"   # trailing comment
        args = ["--port",
           "8000", # inside an array
        ]
        doc = """
        [not.a.table]
        x = 1
        """
        monitors = { file = { output = "x" }, "a.b" = {} }
        policy.max_restarts = 5

        [programs.web.env.production]
        DEBUG = "0"
        [[items]]
        a = 1
        [[items]]
        a = 2
        ''')
    toml().loads(text)
    lines = key_lines(text)
    assert lines[("name",)] == 2
    assert lines[("strategy",)] == 3
    assert lines[("programs", "web")] == 4
    assert lines[("programs", "web", "args", 1)] == 7
    assert lines[("programs", "web", "monitors", "file", "output")] == 13
    assert lines[("programs", "web", "monitors", "a.b")] == 13
    assert lines[("programs", "web", "policy", "max_restarts")] == 14
    assert lines[("programs", "web", "env", "production", "DEBUG")] == 17
    assert lines[("items", 1, "a")] == 21
    assert ("not", "a", "table") not in lines, "a string's content is no table"
    assert line_of(lines, ("programs", "web", "nothere")) == 4  # its table's header
    assert line_of(lines, ("programs",)) == 4  # a table implied by its sub-tables


# --- environment files -----------------------------------------------------------------------

def test_env_files_read_key_value_lines():
    text = "# comment\n\nA=1\nexport B = two words \nC='quoted # not a comment'\nD=\"x\"\nE=\n"
    assert envfile.parse(text, ".env") == [
        ("A", "1", 3), ("B", "two words", 4), ("C", "quoted # not a comment", 5),
        ("D", "x", 6), ("E", "", 7)]
    with pytest.raises(envfile.EnvFileError) as caught:
        envfile.parse("A=1\nnot a variable\n", ".env")
    assert caught.value.line == 2
    assert ".env:2" in str(caught.value)
    assert envfile.parse("spring.profiles.active=dev\nQ-DASH=x\n", ".env") == [
        ("spring.profiles.active", "dev", 1), ("Q-DASH", "x", 2)]
    with pytest.raises(envfile.EnvFileError, match="letters, digits and _.-, not starting "
                       "with a digit"):
        envfile.parse("1BAD=x\n", ".env")


@pytest.mark.parametrize("value", ['"unterminated', "'", "'mixed\"", '"a" b'])
def test_env_files_refuse_a_quote_that_does_not_close(value):
    with pytest.raises(envfile.EnvFileError, match=r"\.env:2: the value of Q opens a . quote "
                       "that does not close") as caught:
        envfile.parse(f"A=1\nQ={value}\n", ".env")
    assert caught.value.line == 2


# --- the schema is start()'s -----------------------------------------------------------------

def test_every_start_option_has_a_key_and_the_same_default():
    parameters = inspect.signature(request.build).parameters
    group_level = {"name", "strategy", "start_timeout"}
    python_only = {"monitor", "options", "capture", "unknown"}  # monitors= covers the first two
    options = set(parameters) - group_level - python_only
    assert options <= set(configfile.PROGRAM_KEYS), "start() options the file cannot give"
    assert set(configfile.POLICY_KEYS) == set(immortal.RestartPolicy._fields)
    # None in start() means the same as the file's default here.
    same = {"args": [], "listen": [], "ready": "uptime:1"}
    for key, default in configcheck.DEFAULTS.items():
        if key in parameters:
            expected = parameters[key].default
            assert default == (same[key] if key in same else expected), key
    for key, default in config.GROUP_DEFAULTS.items():
        assert parameters[key].default == default, key


def test_a_programs_keys_are_its_record_s_fields():
    """Every field of a program of start_group() (``spec.Program``) has its key in the
    file, and every key of the file is one (``instances``: ``workers``; ``env_file``: the
    ``env``; ``log_path``: the monitors'; ``variables``: the names ``env`` and ``env_file``
    set; ``environment``: the one chosen, -E)."""
    fields = set(spec.Program._fields) - {"name", "log_path", "variables", "environment"}
    assert set(configkeys.PROGRAM_KEYS) - {"instances", "env_file"} == fields
    assert set(configcheck.ORDER) - {"env_file"} == fields


def test_the_operators_options_reach_the_programs(tmp_path):
    path = project(tmp_path, '''\
        [programs.web]
        file = "web.py"
        watch = ["web.py", "conf/**/*.toml"]
        ignore = ["*.swp"]
        watch_delay = 0.2
        memory_limit = "300M"
        comment = "the shop's front"
        [programs.worker]
        file = "worker.py"
        memory_limit = 400000000
        memory_window = 5
        memory_children = true
        ''')
    (path.parent / "conf").mkdir()
    loaded = load(path)
    web, worker = (loaded.programs[name].kwargs for name in ("web", "worker"))
    assert web["watch"] == [str(path.parent / "web.py"), str(path.parent / "conf/**/*.toml")]
    assert (web["ignore"], web["watch_delay"], web["memory_limit"], web["comment"]) == (
        ["*.swp"], 0.2, 300 << 20, "the shop's front")
    assert (worker["memory_limit"], worker["memory_window"], worker["memory_children"]) == (
        400000000, 5, True)
    assert loaded.programs["web"].settings["comment"].source.line == 7
    from immortal.programs import build_programs

    made = {p.name: p for p in build_programs("shop", loaded.programs_kwargs(),
                                              spec.Strategy.DAEMON, str(tmp_path / "d"))}
    assert made["web"].watch == tuple(web["watch"]) and made["web"].comment == web["comment"]
    assert made["worker"].memory_window == 5.0 and made["worker"].watch == ()
    for key, value, words in (("watch_delay", "1", "needs 'watch'"),
                              ("memory_limit", '"lots"', "must be a size"),
                              # the file's directory, not the command's
                              ("watch", '["gone/*.py"]', f"starts from {tmp_path}/bad_watch)")):
        bad = project(tmp_path, f'''\
            [programs.web]
            file = "web.py"
            {key} = {value}
            ''', name=f"bad_{key}")
        found = {p.key: p.message for p in problems(bad)}
        assert words in found[f"programs.web.{key}"], found


# --- precedence ------------------------------------------------------------------------------

CHAIN = '''\
    strategy = "unattached"

    [programs.web]
    file = "web.py"
    workers = 2
    stop_timeout = 5
    ready = "line:serving"
    ready_timeout = 20

    [programs.web.env]
    LEVEL = "file"

    [programs.web.env.production]
    LEVEL = "production"

    [env.production]
    strategy = "daemon"
    programs.web.workers = 4
    programs.web.stop_timeout = 7
    '''


def test_precedence_defaults_file_environment_variables_command_line(tmp_path):
    path = project(tmp_path, CHAIN)
    loaded = load(path, "production", {"IMMORTAL_READY": "spawn"},
                  overrides=[("programs.web.workers", 8)])
    web = loaded.programs["web"].settings

    def seen(key: str) -> tuple[Any, str]:
        return web[key].value, web[key].source.kind

    assert seen("policy.window") == (60.0, DEFAULT)  # 1. built-in
    assert seen("ready_timeout") == (20, FILE)  # 2. file
    assert seen("stop_timeout") == (7, ENV_TABLE)  # 3. environment beats file
    assert seen("env.LEVEL") == ("production", ENV_TABLE)
    assert seen("ready") == ("spawn", VARIABLE)  # 4. variable beats file
    assert seen("workers") == (8, CLI)  # 5. command line beats environment
    assert (loaded.strategy.value, loaded.strategy.source.kind) == ("daemon", ENV_TABLE)
    assert str(web["ready_timeout"].source) == "file:8"
    assert str(web["stop_timeout"].source) == "env.production:19"
    assert str(web["env.LEVEL"].source) == "env.production:14"
    assert str(web["ready"].source) == "$IMMORTAL_READY"
    assert str(web["workers"].source) == "command line"
    kwargs = loaded.programs["web"].kwargs
    assert (kwargs["workers"], kwargs["stop_timeout"], kwargs["ready"]) == (8, 7, "spawn")
    assert kwargs["env"]["LEVEL"] == "production" and kwargs["env"]["PATH"] == os.defpath
    # Without the environment, the variable or the command line: the file's own values.
    plain = load(path).programs["web"].settings
    assert (plain["workers"].value, plain["ready"].value, plain["env.LEVEL"].value) == (
        2, "line:serving", "file")


def test_the_environment_comes_from_the_option_else_immortal_env(tmp_path):
    path = project(tmp_path, CHAIN + "\n[env.staging]\nprograms.web.workers = 3\n")
    assert load(path, environ={"IMMORTAL_ENV": "staging"}).programs["web"].kwargs[
        "workers"] == 3
    chosen = load(path, "production", {"IMMORTAL_ENV": "staging"})
    assert chosen.programs["web"].kwargs["workers"] == 4
    assert chosen.environment.source.kind == CLI
    assert load(path, environ={"IMMORTAL_ENV": "staging"}).environment.source == \
        configfile.Source(VARIABLE, name="IMMORTAL_ENV")
    assert load(path).environment.value is None


def test_environment_variables_of_a_program_by_layer(tmp_path):
    path = project(tmp_path, '''\
        [programs.web]
        file = "web.py"
        env_file = ".env"
        [programs.web.env]
        B = "table"
        PORT = 8000
        [env.production.programs.web]
        env_file = ".env.production"
        ''', _env="A=env-file\nB=env-file\nC=env-file\n", _env_production="A=prod-file\n")
    web = load(path).programs["web"]
    assert web.variables == {"A": "env-file", "B": "table", "C": "env-file", "PORT": "8000"}
    assert str(web.settings["env.A"].source) == "env_file .env:1"
    # The production env_file replaces the first one's variables; the file's table stays.
    production = load(path, "production", overrides=[("programs.web.env.C", "cli")])
    assert production.programs["web"].variables == {
        "A": "prod-file", "B": "table", "C": "cli", "PORT": "8000"}
    assert production.programs["web"].settings["env.A"].source.kind == ENV_FILE


def test_paths_are_relative_to_the_file_and_instances_spells_workers(tmp_path, monkeypatch):
    path = project(tmp_path, '''\
        name = "shop-test"
        [programs.web]
        file = "web.py"
        cwd = "data"
        instances = 3
        listen = "unix:web.sock"
        umask = "027"
        ''')
    (path.parent / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    loaded = config.load(path.name, environ=ENVIRON, cwd=str(path.parent))
    kwargs = loaded.programs["web"].kwargs
    assert kwargs["file"] == str(path.parent / "web.py")
    assert kwargs["cwd"] == str(path.parent / "data")
    assert kwargs["listen"] == [f"unix:{path.parent / 'web.sock'}"]
    assert (kwargs["workers"], kwargs["umask"]) == (3, 0o27)
    assert loaded.programs["web"].settings["workers"].source == configfile.Source(FILE, 5)
    assert loaded.name.value == "shop-test"
    assert load(project(tmp_path, "[programs.a]\nfile = 'web.py'\n", "other")).name.value \
        == "other"  # the directory's name by default


def test_config_shows_the_env_file_read(tmp_path, monkeypatch):
    """An env_file is read from the file's directory: 'config' shows that path, wherever
    it runs from."""
    path = project(tmp_path, '''\
        [programs.web]
        file = "web.py"
        env_file = "./.env"
        ''', _env="SECRET=1\n")
    monkeypatch.chdir(tmp_path)
    loaded = load(path)
    env_file = loaded.programs["web"].settings["env_file"]
    assert (env_file.value, str(env_file.source)) == (str(path.parent / ".env"), "file:3")
    assert loaded.programs["web"].kwargs["env"]["SECRET"] == "1"
    shown = subprocess.run([sys.executable, "-m", "immortal", "config", "-c", str(path)],
                           env={**ENVIRON, "IMMORTAL_HOME": str(tmp_path / "home")},
                           capture_output=True, text=True, timeout=LONG)
    assert f'env_file = "{path.parent / ".env"}"' in shown.stdout, shown


def test_an_ignored_path_is_relative_to_the_file_as_the_watched_one(tmp_path, monkeypatch):
    """Run from another directory (a unit's reload, cron), the program ignores the same
    files, and its definition does not change with the command's directory."""
    path = project(tmp_path, '''\
        [programs.web]
        file = "web.py"
        watch = ["src"]
        ignore = ["src/generated/*", "*.log", "build/"]
        ''')
    (path.parent / "src").mkdir()
    monkeypatch.chdir(tmp_path)
    from immortal.programs import build_programs

    kwargs = load(path).programs_kwargs()
    made = build_programs("shop", kwargs, spec.Strategy.DAEMON, str(tmp_path / "d"))
    assert made[0].ignore == (str(path.parent / "src/generated/*"), "*.log", "build/")
    assert made[0].watch == (str(path.parent / "src"),)


# --- bad files -------------------------------------------------------------------------------

BAD = {
    "syntax": ("[programs.web]\nfile = \"web.py\"\nworkers = = 2\n", 3, "TOML syntax error"),
    "unknown-top-key": ("stratgy = \"daemon\"\n[programs.web]\nfile = \"web.py\"\n", 1,
                        "did you mean 'strategy'"),
    "unknown-program-key": ("[programs.web]\nfile = \"web.py\"\n\nworkrs = 2\n", 4,
                            "did you mean 'workers'"),
    "unknown-policy-field": ("[programs.web]\nfile = \"web.py\"\n[programs.web.policy]\n"
                             "backof_max = 3\n", 4, "did you mean 'backoff_max'"),
    "wrong-type": ("[programs.web]\nfile = \"web.py\"\nworkers = \"4\"\n", 3,
                   "expected an integer"),
    "wrong-type-in-env": ("[programs.web]\nfile = \"web.py\"\n[env.production]\n"
                          "programs.web.channel = 1\n", 4, "expected true or false"),
    "out-of-range": ("[programs.web]\nfile = \"web.py\"\nstop_timeout = -1\n", 3,
                     "'stop_timeout' must be"),
    "missing-program-file": ("[programs.web]\nfile = \"nope.py\"\n", 2, "'nope.py'"),
    "no-file-key": ("[programs.web]\nworkers = 2\n", 1, "missing"),
    "bad-ready": ("[programs.web]\nfile = \"web.py\"\nready = \"lin:x\"\n", 3,
                  "did you mean 'line'"),
    "undeclared-environment": ("[env.production]\n[programs.web]\nfile = \"web.py\"\n"
                               "[programs.web.env.prodution]\nA = \"1\"\n", 4,
                               "did you mean 'production'"),
    "both-spellings": ("[programs.web]\nfile = \"web.py\"\nworkers = 2\ninstances = 2\n", 4,
                       "not both"),
    "missing-env-file": ("[programs.web]\nfile = \"web.py\"\nenv_file = \"no.env\"\n", 3,
                         "no.env"),
    "bad-monitor": ("[programs.web]\nfile = \"web.py\"\n[programs.web.monitors.fiel]\n", 3,
                    "did you mean 'file'"),
    "together": ("[programs.web]\nfile = \"web.py\"\nready = \"uptime:5\"\n"
                 "ready_timeout = 2\n", 3, "can never be reached"),
    # TOML has no 022: a umask written 22 is twenty-two (0o026), never what was meant
    "decimal-umask": ("[programs.web]\nfile = \"web.py\"\numask = 22\n", 3,
                      "22 is a decimal integer (TOML has no leading zeros: it reads 22, "
                      "umask 0o026): write 0o022, or \"022\""),
    "decimal-umask-in-env": ("[programs.web]\nfile = \"web.py\"\n[env.production]\n"
                             "programs.web = { umask = 7 }\n", 4, "write 0o007, or \"007\""),
}


def test_a_umask_is_octal_however_it_is_written(tmp_path):
    """0o022 and "022" in the file, 022 and 22 on the command line: one umask, 0o022."""
    path = project(tmp_path, '''\
        [programs.web]
        file = "web.py"
        umask = 0o022
        [programs.worker]
        file = "worker.py"
        umask = "022"
        ''')
    loaded = load(path)
    assert [p.kwargs["umask"] for p in loaded.programs.values()] == [0o22, 0o22]
    for text in ("022", "22", "0o022"):
        value = configfile.parse_value(text, "programs.web.umask")
        loaded = load(path, overrides=[("programs.web.umask", value)])
        assert loaded.programs["web"].kwargs["umask"] == 0o22, text


@pytest.mark.parametrize("text, line, fragment", list(BAD.values()), ids=list(BAD))
def test_each_bad_file_is_reported_at_its_line(tmp_path, text, line, fragment):
    found = problems(project(tmp_path, text))
    assert len(found) == 1, found
    assert found[0].source.line == line, found
    assert fragment in found[0].message, found


def test_every_problem_is_reported_at_once(tmp_path):
    path = project(tmp_path, '''\
        stratgy = "daemon"
        [programs.web]
        file = "web.py"
        workers = 0
        [programs.web.policy]
        max_restarts = "5"
        [programs.api]
        file = "nope.py"
        channel = "yes"
        ''')
    found = problems(path, env_name="prod", overrides=[("programs.web.wrkers", 1)],
                     environ={"IMMORTAL_READY": "bogus"})
    where = sorted((str(p.source), p.key) for p in found)
    assert where == sorted([
        ("file:1", "stratgy"), ("file:4", "programs.web.workers"),
        ("file:6", "programs.web.policy.max_restarts"), ("file:8", "programs.api.file"),
        ("file:9", "programs.api.channel"), ("command line", "env"),
        ("command line", "programs.web.wrkers"),
        ("$IMMORTAL_READY", "programs.web.ready"), ("$IMMORTAL_READY", "programs.api.ready"),
    ])
    text = str(ConfigError(str(path), found))
    assert f"{path}:4: programs.web.workers: " in text


def test_every_problem_of_a_program_and_none_that_follows_from_another(tmp_path):
    """Each check that weighs several values is made, each reported; a value refused for
    its type is not weighed with others (its default would be, wrongly): unless a stronger
    layer gives it, as the environment does here."""
    path = project(tmp_path, '''\
        [programs.web]
        file = "web.py"
        channel = true
        workers = 2
        ready = "uptime:5"
        ready_timeout = 2
        memory_window = 5
        [programs.worker]
        file = "worker.py"
        watch = "*.py"
        watch_delay = 1
        memory_limit = true
        memory_window = 3
        [env.production]
        programs.worker.watch = []
        ''')
    every = [(3, "programs.web.channel"), (5, "programs.web.ready"),
             (7, "programs.web.memory_window"), (10, "programs.worker.watch"),
             (12, "programs.worker.memory_limit")]
    assert [(p.source.line, p.key) for p in problems(path)] == every
    assert [(p.source.line, p.key) for p in problems(path, env_name="production")] == [
        *every[:4], (11, "programs.worker.watch_delay"), every[4]]


def test_a_directory_name_that_is_no_group_name_asks_for_name(tmp_path):
    found = problems(project(tmp_path, "[programs.web]\nfile = \"web.py\"\n", "my shop"))
    assert [p.key for p in found] == ["name"]
    assert "set name =" in found[0].message


def test_no_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no immortal.toml in"):
        config.load(cwd=str(tmp_path), environ=ENVIRON)


# --- a loaded file starts a real group -------------------------------------------------------

def test_a_loaded_program_starts_as_start_would(tmp_path, started, home):
    path = project(tmp_path, '''\
        name = "fromfile"
        [programs.web]
        file = "web.py"
        args = ["--env", "GREETING", "--cwd"]
        ready = "spawn"
        stop_timeout = 5
        [programs.web.env]
        GREETING = "hello"
        [programs.web.policy]
        final_exit_codes = [3]
        ''')
    loaded = load(path)
    group = started(**loaded.start_kwargs("web"))
    assert group.name == "fromfile"
    output = home / "fromfile" / "output.log"
    wait_for(lambda: output.read_text() if output.exists() else "",
             lambda text: "env GREETING=hello" in text and f"cwd {path.parent}" in text,
             what="the target's environment and directory")
    written = json.loads((home / "fromfile" / "spec.json").read_text())
    assert written["policy"]["final_exit_codes"] == [3]
    assert written["cwd"] == str(path.parent)


def test_a_loaded_file_starts_its_programs_as_one_group(tmp_path, home):
    path = project(tmp_path, '''\
        name = "fromgroup"
        [programs.web]
        file = "web.py"
        ready = "spawn"
        comment = "front"
        [programs.worker]
        file = "worker.py"
        instances = 2
        ready = "spawn"
        ''')
    loaded = load(path)
    group = immortal.start_group(loaded.name.value, loaded.programs_kwargs(),
                                 **loaded.group_kwargs())
    try:
        status = wait_for(group.status, lambda s: s.running and len(
            [e for e in s.instances if e.pid]) == 3, LONG, what="three instances")
        assert group.programs == ["web", "worker"]
        assert [(e.program, e.instance) for e in status.instances] == [
            ("web", 0), ("worker", 0), ("worker", 1)]
        assert status.comment == "web: front"
    finally:
        group.stop(timeout=LONG)


def test_the_documented_example_is_valid(tmp_path):
    """docs/config.md's complete example loads, as written (its log directory moved here)."""
    import re

    docs = Path(__file__).resolve().parent.parent / "docs" / "config.md"
    example = re.search(r"```toml\n(.*?)```", docs.read_text(), re.S)
    assert example is not None
    logs = tmp_path / "log"
    logs.mkdir()
    path = project(tmp_path, example.group(1).replace("/var/log/shop", str(logs)),
                   _env="SECRET=x\n", cron_sh="#!/bin/sh\nexit 0\n")
    (path.parent / "cron.sh").chmod(0o755)
    (path.parent / "templates").mkdir()  # a watched directory must exist
    (path.parent / ".venv" / "bin").mkdir(parents=True)
    (path.parent / ".venv" / "bin" / "python").symlink_to(sys.executable)
    loaded = load(path, "production")
    assert list(loaded.programs) == ["web", "worker", "cron"]
    # What start_group() takes: each program checked as it would check it.
    from immortal.programs import build_programs

    made = build_programs(loaded.name.value, loaded.programs_kwargs(),
                          spec.Strategy(loaded.strategy.value), str(tmp_path / "shop.d"))
    assert [p.name for p in made] == ["web", "worker", "cron"]
    assert [p.workers for p in made] == [8, 2, 1]
    assert loaded.programs["web"].kwargs["workers"] == 8
    assert loaded.programs["web"].variables["LOG_LEVEL"] == "warning"
