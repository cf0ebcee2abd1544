"""What the command line says when it refuses: each message names what is wrong in the
user's words and the way on that fits the command given (not another command's)."""

from __future__ import annotations

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
