"""The fault model of the instance directory: one group per name, never two targets,
nothing hidden. A start that loses cleans up nothing of the winner's; reads never destroy
what a later start needs; orphans are found by the token in their environment."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import immortal
from immortal import launcher, state
from conftest import LONG, SHORT, TALKER, cmdline, descendants, wait_for


def test_a_start_that_loses_the_lock_race_keeps_the_winners_directory(home, monkeypatch):
    directory = home / "race"
    held: list[int] = []
    real = launcher.ensure_dir

    def ensure_then_lose(path: Path) -> list[Path]:
        created = real(path)  # this start creates the directory...
        fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # ...and another start takes the lock first
        held.append(fd)
        return created

    monkeypatch.setattr(launcher, "ensure_dir", ensure_then_lose)
    try:
        with pytest.raises(immortal.AlreadyRunning):
            immortal.start(TALKER, name="race")
        # The winner's lock file is still the one its directory holds: a third start
        # finds it locked instead of creating a fresh one.
        assert os.path.samestat(os.stat(directory / "lock"), os.fstat(held[0]))
        assert state.try_lock(directory / "lock") is None
    finally:
        for fd in held:
            os.close(fd)


def test_a_failed_start_keeps_the_home_it_created_and_the_lock_file(home, monkeypatch):
    base = home / "new-home"
    monkeypatch.setenv("IMMORTAL_HOME", str(base))
    with pytest.raises(immortal.StartError, match="cannot open the log sink"):
        immortal.start(TALKER, name="fails", monitor="plugins.sample:FailingSetup")
    # Another group may have been created in the new home meanwhile: it stays, and so does
    # the lock file another start may have opened.
    assert os.listdir(base) == ["fails"]
    assert set(os.listdir(base / "fails")) <= {"lock", "target.lock"}
