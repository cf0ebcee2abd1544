"""immortal's built-in monitors, registered through the ``immortal.monitors`` entry point
group like any third-party monitor. They import only immortal's public names."""
from __future__ import annotations

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any


class PerInstance:
    """A monitor's attribute kept apart for each instance of the group's program
    (``Monitor.instance``: None in a group of one, so one value as before)."""

    def __init__(self, default: Any = None) -> None:
        self.default = default
        self.key = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = f"_{name}_by_instance"

    def __get__(self, monitor: Any, owner: type | None = None) -> Any:
        if monitor is None:
            return self
        return monitor.__dict__.get(self.key, {}).get(monitor.instance, self.default)

    def __set__(self, monitor: Any, value: Any) -> None:
        monitor.__dict__.setdefault(self.key, {})[monitor.instance] = value
