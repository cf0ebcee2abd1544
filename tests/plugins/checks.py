"""Monitors whose check() returns what cannot be stored in spec.json (see test_monitoring)."""

from pathlib import Path

import immortal


class PathOptions(immortal.Monitor):
    """Returns a Path where the docs ask for absolute paths: not JSON."""

    @classmethod
    def check(cls, options):
        return {"output": Path("/var/log/app.log")}


class ListOptions(immortal.Monitor):
    """Returns a list: not a mapping."""

    @classmethod
    def check(cls, options):
        return ["output"]
