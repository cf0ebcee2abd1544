"""The roles' optimized bytecode (``immortal/bytecode.py``): a cache of our own, filled once by
a role that then re-executes itself; targets untouched; plain interpreters without a cache.

Real groups, real interpreters: the cache is a temporary ``XDG_CACHE_HOME`` per test.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

import immortal
from immortal import bytecode
from conftest import wait_for

pytestmark = pytest.mark.timeout(120)

FLAGS = ("import sys, time\n"
         "print('flags', sys.flags.optimize, sys.pycache_prefix, flush=True)\n"
         "time.sleep(300)\n")


def _cached(cache: Path, module: str) -> Path:
    """Where a role's -OO bytecode of ``module`` lies in ``cache`` (``pycache_prefix``
    mirrors the source's absolute directory, without ``__pycache__``)."""
    source = Path(importlib.util.find_spec(module).origin).resolve()
    name = f"{source.stem}.{sys.implementation.cache_tag}.opt-2.pyc"
    return cache / "immortal" / "bytecode" / source.parent.relative_to("/") / name


def _flags_line(group: immortal.Group) -> str:
    log = group.directory / "output.log"
    return wait_for(lambda: log.read_text() if log.exists() else "",
                    lambda text: "flags" in text, what="the target's flags line")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_roles_fill_a_cold_cache_once_and_targets_keep_their_flags(started, cache, tmp_path,
                                                                   monkeypatch):
    # The user's environment asks for no bytecode: the roles write theirs anyway, into
    # the cache only (without it they would compile the start-up's modules every time).
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    program = tmp_path / "flags.py"
    program.write_text(FLAGS)
    group = started(str(program), name="one")
    assert "flags 0 None" in _flags_line(group)  # no -OO, no prefix for the target
    stamps = list((cache / "immortal" / "bytecode").glob("filled-*"))
    assert len(stamps) == 1
    for module in ("immortal.pump", "immortal.daemon", "encodings", "pluggy"):
        assert _cached(cache, module).exists(), module
    filled = stamps[0].stat().st_mtime_ns
    assert not list(tmp_path.rglob("__pycache__"))  # nothing beside the target's source

    second = started(str(program), name="two")
    assert "flags 0 None" in _flags_line(second)
    assert stamps[0].stat().st_mtime_ns == filled  # warm: not filled again
    assert second.status().running and group.status().running


def test_without_a_cache_it_can_write_roles_are_plain_interpreters(started, tmp_path,
                                                                   monkeypatch):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert bytecode.interpreter() == [sys.executable]
    program = tmp_path / "flags.py"
    program.write_text(FLAGS)
    group = started(str(program), name="plain")
    assert "flags 0 None" in _flags_line(group)
    assert group.status().running


def test_the_role_interpreter_is_optimized_with_a_cache_of_its_own(cache):
    command = bytecode.interpreter()
    assert command == [sys.executable, "-OO", "-X",
                       f"pycache_prefix={cache / 'immortal' / 'bytecode'}"]
    assert (cache / "immortal" / "bytecode").is_dir()


def test_a_cache_that_takes_no_stamp_leaves_the_roles_plain(started, cache, tmp_path):
    # As on a full disk: the fill cannot record itself. The role then re-executes as a
    # plain interpreter (compiling every module at every start would cost more), says so
    # in its log, and the group runs.
    prefix = cache / "immortal" / "bytecode"
    prefix.mkdir(parents=True)
    Path(bytecode.stamp_path(str(prefix))).mkdir()  # a file cannot replace it
    program = tmp_path / "flags.py"
    program.write_text(FLAGS)
    group = started(str(program), name="full")
    assert "flags 0 None" in _flags_line(group)
    assert group.status().running
    log = (group.directory / "daemon.log").read_text()
    assert "cannot be written: this role runs as a plain interpreter" in log
    assert not list(prefix.glob("filled-*.*"))  # no scratch file left


def test_plain_takes_the_interpreters_options_off():
    assert bytecode.plain(["-OO", "-X", "pycache_prefix=/c", "-m", "immortal._role", "{}"]) \
        == ["-m", "immortal._role", "{}"]
    assert bytecode.plain(["-m", "immortal._role", "{}"]) == ["-m", "immortal._role", "{}"]
