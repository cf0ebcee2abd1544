"""The quick entry-point reader agrees with importlib.metadata, and start() does without it."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from immortal import entrypoints
from immortal.hookimpls import ENTRY_POINT_GROUP
from conftest import imported_after

pytestmark = pytest.mark.timeout(60)


def _distribution(where: Path, name: str, text: str) -> None:
    info = where / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(text)


def test_reads_the_named_entry_point_of_the_group(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _distribution(tmp_path, "one", "# a comment\n[console_scripts]\nwatch = one.cli:main\n\n"
                                   "[immortal.monitors]\nwatch = one.mon:Watch [fast]\n"
                                   "plain=one.mon\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert entrypoints.find("immortal.monitors", "watch") == "one.mon:Watch"
    assert entrypoints.find("immortal.monitors", "plain") == "one.mon"
    assert entrypoints.find("console_scripts", "watch") == "one.cli:main"
    assert entrypoints.find("immortal.monitors", "nothing") is None
    # The same answers as importlib.metadata (extras aside).
    found = {ep.name: ep.value for ep in metadata.entry_points(group="immortal.monitors")}
    assert found["plain"] == "one.mon"
    assert found["watch"].startswith("one.mon:Watch")


def test_the_first_distribution_on_the_path_wins(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _distribution(tmp_path / "a", "same", "[immortal.monitors]\nm = first:M\n")
    _distribution(tmp_path / "b", "same", "[immortal.monitors]\nm = second:M\n")
    monkeypatch.syspath_prepend(str(tmp_path / "b"))
    monkeypatch.syspath_prepend(str(tmp_path / "a"))
    assert entrypoints.find("immortal.monitors", "m") == "first:M"


def test_an_unreadable_or_missing_entry_is_skipped(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken-1.0.dist-info").mkdir()  # no entry_points.txt
    (tmp_path / "zipped.zip").write_bytes(b"not a directory")
    monkeypatch.syspath_prepend(str(tmp_path / "zipped.zip"))
    monkeypatch.syspath_prepend(str(tmp_path / "does-not-exist"))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert entrypoints.find("immortal.monitors", "m") is None
    # The built-in monitors are found past them, through their own entry points.
    assert entrypoints.find(ENTRY_POINT_GROUP, "file") == "immortal_monitors.file:FileMonitor"


def test_resolving_a_built_in_monitor_does_not_import_importlib_metadata() -> None:
    code = "import immortal.monitorload as m; m.check(m.resolve('file'), {})"
    assert imported_after(code, {"importlib.metadata", "immortal_monitors.file"}) == {
        "immortal_monitors.file"}


def test_a_name_found_is_remembered_for_the_same_path(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # What lets a pump forked from the daemon skip reading the files again.
    _distribution(tmp_path, "kept", "[immortal.monitors]\nkept = kept.mon:Kept\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert entrypoints.find("immortal.monitors", "kept") == "kept.mon:Kept"
    (tmp_path / "kept-1.0.dist-info" / "entry_points.txt").unlink()
    assert entrypoints.find("immortal.monitors", "kept") == "kept.mon:Kept"
    monkeypatch.syspath_prepend(str(tmp_path / "elsewhere"))  # another path: read again
    assert entrypoints.find("immortal.monitors", "kept") is None
