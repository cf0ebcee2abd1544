"""What the command line says when it refuses: each message names what is wrong in the
user's words and the way on that fits the command given (not another command's)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from immortal.cli import main
from conftest import TALKER

pytestmark = pytest.mark.timeout(60)


def refused(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """The exit code and the one error line of ``immortal ARGS``."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    assert err.startswith("immortal: error: ") and err.count("\n") == 1, err
    return code, err


@pytest.mark.parametrize("argv", [["list", "--bogus"], ["status", "x", "--bogus"],
                                  ["run", TALKER, "--bogus"], ["list", "--usr"]])
def test_an_unknown_option_suggests_no_unrelated_one(capsys, argv):
    """'--bogus' shares only its dashes with '--user'; and 'list' takes no '--user'."""
    code, err = refused(capsys, *argv)
    assert code == 2
    assert argv[-1] in err and "did you mean" not in err, err


@pytest.mark.parametrize("argv, meant", [(["list", "--jsn"], "--json"),
                                         (["stop", "x", "--timout", "3"], "--timeout"),
                                         (["run", TALKER, "--nmae", "x"], "--name")])
def test_an_unknown_option_suggests_a_close_spelling_of_the_commands_own(capsys, argv, meant):
    code, err = refused(capsys, *argv)
    assert code == 2 and f"did you mean {meant!r}" in err, err


@pytest.mark.parametrize("argv, meant", [(["stauts", "x"], "status"),
                                         (["restat", "x"], "restart")])
def test_an_unknown_command_suggests_the_closest(capsys, argv, meant):
    code, err = refused(capsys, *argv)
    assert code == 2 and f"unknown command {argv[0]!r} (did you mean {meant!r}?)" in err, err


def test_a_misspelt_group_name_suggests_the_running_one(started, capsys):
    started(TALKER, name="ticker", ready="spawn")
    code, err = refused(capsys, "stop", "tikcer")
    assert code == 3 and "no group named 'tikcer'" in err and \
        "(did you mean 'ticker'?)" in err, err


def test_a_script_named_without_its_py_is_suggested(capsys, tmp_path, monkeypatch):
    (tmp_path / "worker.py").write_text("print('x')\n")
    monkeypatch.chdir(tmp_path)
    code, err = refused(capsys, "run", "worker")
    assert code == 2 and "(did you mean 'worker.py'?)" in err, err


def test_a_programs_arguments_before_the_separator_are_shown_their_place(capsys):
    code, err = refused(capsys, "run", TALKER, "--queue", "jobs")
    assert code == 2 and "--queue jobs" in err and "after '--'" in err, err


@pytest.mark.parametrize("command", ["start", "start-recorded"])
def test_start_of_a_running_group_says_there_is_nothing_to_start(started, capsys, command):
    """Not 'run's words (stop it first, or choose another name): the group is the one
    meant, and it runs."""
    group = started(TALKER, name="shop", ready="spawn")
    code, err = refused(capsys, command, "shop")
    assert code == 4
    assert "'shop' is running already" in err and "nothing to start" in err, err
    assert "immortal restart shop" in err, err
    assert "another name" not in err and "stop it first" not in err, err
    assert group.status().running


@pytest.mark.parametrize("command, address, fragments", [
    ("metrics", "shop/web", ["program 'web' of 'shop'", "'immortal metrics shop'",
                             "labelled by program and instance"]),
    ("metrics", "shop:1", ["instance 1 of 'shop'", "'immortal metrics shop'"]),
    ("reopen", "site/web", ["program 'web' of 'site'", "'immortal reopen site'"]),
    ("reopen", "site/web:2", ["instance 2 of program 'web' of 'site'",
                              "'immortal reopen site'"]),
])
def test_a_group_command_given_a_programs_address_names_the_group_to_give(
        capsys, command, address, fragments):
    """Not the name rule ('pick another name'): the address is right, for another
    command."""
    code, err = refused(capsys, command, address)
    assert code == 2
    assert f"'immortal {command}' takes a group's NAME (got {address!r}" in err, err
    for fragment in fragments:
        assert fragment in err, err
    assert "pick another name" not in err, err


def test_reopen_of_a_stopped_group_says_there_is_nothing_to_reopen(started, capsys):
    """Not 'start it with immortal run': a stopped group has no file open."""
    started(TALKER, name="quiet", ready="spawn").stop()
    code, err = refused(capsys, "reopen", "quiet")
    assert code == 3
    assert "'quiet' is not running (state stopped)" in err and "nothing to reopen" in err, err
    assert "immortal run" not in err, err


def test_a_control_socket_that_serves_nobody_is_told_in_the_users_words(started, capsys):
    """No raw path and errno ("nobody answers on '/.../control.sock' ... (No such file or
    directory)"), and not 'the group is not running' for a group that runs: what is wrong
    with its socket, and what to do."""
    group = started(TALKER, name="deaf", ready="spawn")
    sock = Path(group.directory) / "control.sock"
    aside = Path(group.directory) / "moved-away.sock"
    # The daemon puts back a socket removed or moved away: held stopped meanwhile (where
    # putting it back failed, or off Linux, the socket stays gone).
    daemon = group.pids["daemon"]
    os.kill(daemon, signal.SIGSTOP)
    sock.rename(aside)
    try:
        code, err = refused(capsys, "reopen", "deaf")
        assert code == 1, err
        assert "'deaf' runs (daemon " in err and "takes no command" in err, err
        assert "control socket (control.sock, in " in err and ") is gone" in err, err
        assert "'immortal stop deaf' stops it by signals" in err, err
        assert "No such file" not in err and "not running" not in err, err

        sock.write_text("")  # not a socket
        code, err = refused(capsys, "reopen", "deaf")
        assert code == 2, err
        assert "control socket (control.sock, in " in err and ") is not a socket" in err, err
        assert f"remove it ('rm {sock}')" in err, err
    finally:
        aside.replace(sock)
        os.kill(daemon, signal.SIGCONT)
    assert group.status().running


def test_a_restart_whose_new_target_is_gone_says_so_rather_than_none():
    """A slot whose new target died at once (in backoff), or a job that finished: not
    'target pids web:0 None'."""
    from immortal.cli import _target
    from immortal.events import ExitStatus
    from immortal.state import InstanceStatus

    died = InstanceStatus(instance=0, state="backoff", last_exit=ExitStatus(signal=9))
    assert _target(died) == "(none: backoff: its new target killed by SIGKILL)"
    assert _target(InstanceStatus(instance=1, state="running", pid=42)) == "42"


@pytest.mark.parametrize("argv, words", [
    (["run", "--group", "nogroup", TALKER], "--group needs --user (got --group 'nogroup'"),
    (["run", "-w", "2", "--channel", TALKER], "--channel works with one instance only (got "
                                              "--workers 2)")])
def test_the_apis_keywords_are_the_command_lines_words(capsys, argv, words):
    code, err = refused(capsys, *argv)
    assert code == 2 and words in err and "=" not in err, err
