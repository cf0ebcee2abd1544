"""comment=: a label in the supervisors' process titles and in the targets' environment
(IMMORTAL_COMMENT), the targets' argv untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import immortal
from conftest import LONG, TALKER, cmdline, wait_for

pytestmark = pytest.mark.timeout(120)


def environ(pid: int) -> dict[str, str]:
    data = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in data.decode().split("\0") if "=" in item)


@pytest.mark.parametrize("strategy", ["daemon", "unattached"])
def test_the_comment_labels_the_supervisors_and_reaches_the_target(started, strategy: str):
    group = started(TALKER, ["--out", "1"], comment="billing api, blue", name="labelled",
                    strategy=strategy)
    for role in ("daemon", "pump"):
        if role in group.pids:
            title = f"immortal: {role} {group.directory} [billing api, blue]"
            wait_for(lambda: cmdline(group.pids[role]), lambda line: line.startswith(title),
                     what=f"the {role}'s title")
    target = group.pids["target"]
    assert environ(target)["IMMORTAL_COMMENT"] == "billing api, blue"
    raw = Path(f"/proc/{target}/cmdline").read_bytes().split(b"\0")[:-1]
    assert [part.decode() for part in raw] == [sys.executable, TALKER, "--out", "1"]
    assert "comment  billing api, blue" in subprocess.run(
        [sys.executable, "-m", "immortal", "status", "labelled"], capture_output=True,
        text=True, timeout=60).stdout
    assert group.status().comment == "billing api, blue"


def test_without_a_comment_titles_and_environment_are_as_before(started):
    group = started(TALKER, name="plain")
    title = f"immortal: daemon {group.directory}"
    wait_for(lambda: cmdline(group.pids["daemon"]), lambda line: line.strip() == title,
             what="the daemon's title")
    assert "IMMORTAL_COMMENT" not in environ(group.pids["target"])


def test_the_cli_takes_a_comment(home: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "immortal", "run", "--comment", "from cli",
                             "-n", "clicomment", TALKER], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    try:
        group = immortal.attach("clicomment")
        assert environ(group.pids["target"])["IMMORTAL_COMMENT"] == "from cli"
    finally:
        immortal.attach("clicomment").stop(LONG)


@pytest.mark.parametrize("comment, error", [
    (5, immortal.InvalidType), ("two\nlines", immortal.InvalidSpec),
    ("x" * 201, immortal.InvalidSpec),
])
def test_a_bad_comment_is_refused(home: Path, comment: object, error: type[Exception]):
    with pytest.raises(error, match="'comment' must be"):
        immortal.start(TALKER, comment=comment, name="badcomment")
    assert not (home / "badcomment").exists()


@pytest.mark.parametrize("strategy", ["daemon", "unattached"])
def test_the_titles_follow_the_comments_an_apply_changes(home: Path, strategy: str):
    """A reload that relabels a program, or removes a labelled one, relabels ps too."""
    def program(comment: str) -> dict[str, object]:
        return {"file": TALKER, "ready": "spawn", "stop_timeout": 5.0, "comment": comment}

    group = immortal.start_group("relabelled", {"web": program("blue"),
                                                "worker": program("jobs")},
                                 strategy=strategy)
    try:
        roles = [role for role in ("daemon", "pump") if role in group.pids]

        def titled(text: str) -> None:
            for role in roles:
                wait_for(lambda: cmdline(group.pids[role]),
                         lambda line: line.startswith(
                             f"immortal: {role} {group.directory} [{text}]"),
                         what=f"the {role}'s title [{text}]")

        titled("blue, jobs")
        group.apply({"web": program("green"), "worker": program("jobs")})
        titled("green, jobs")
        group.apply({"web": program("green")})
        titled("green")
    finally:
        group.stop(LONG)


def test_status_of_a_program_shows_its_own_user_and_comment(home: Path, capsys):
    """'status GROUP/PROGRAM' shows what 'status GROUP' shows of that program: who its
    targets run as and its label, not another program's."""
    import pwd

    from immortal.cli import main

    me = pwd.getpwuid(os.getuid()).pw_name
    group = immortal.start_group("labels", {
        "web": {"file": TALKER, "ready": "spawn", "stop_timeout": 5.0, "comment": "blue",
                **({"user": me} if os.getuid() == 0 else {})},
        "worker": {"file": TALKER, "ready": "spawn", "stop_timeout": 5.0,
                   "comment": "jobs"}})
    try:
        capsys.readouterr()
        assert main(["status", "labels/web"]) == 0
        web = capsys.readouterr().out.splitlines()
        assert "  comment  blue" in web and not any("jobs" in line for line in web), web
        if os.getuid() == 0:
            assert f"  user     {me}" in web, web
        assert main(["status", "labels/worker"]) == 0
        worker = capsys.readouterr().out.splitlines()
        assert "  comment  jobs" in worker, worker
        assert not any(line.startswith("  user") or "blue" in line for line in worker), worker
        assert main(["status", "labels/web", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["comment"] == "blue", data
        assert data.get("user") == (me if os.getuid() == 0 else None), data
    finally:
        group.stop(LONG)
