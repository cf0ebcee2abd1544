"""What ``immortal config`` prints: the effective configuration, each value with its source,
as text (``key = value  # source``, values in JSON) or as JSON."""

from __future__ import annotations

import json

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from .config import Config
    from .configcheck import Setting

WIDEST = 60  #: a longer "key = value" pushes its comment further alone


def config_view(config: Config, as_json: bool = False) -> str:
    """The configuration, with where each value came from."""
    if as_json:
        return json.dumps(config.to_json(), indent=2, sort_keys=False)
    environment = config.environment
    chosen = (f"environment {environment.value!r} ({environment.source})"
              if environment.value else "no environment")
    rows: list[tuple[str, str] | str] = [f"# {config.path}, {chosen}"]
    rows += [_row(key, setting) for key, setting in (
        ("name", config.name), ("strategy", config.strategy),
        ("start_timeout", config.start_timeout))]
    for name, program in config.programs.items():
        rows += ["", f"[programs.{name}]"]
        rows += [_row(key, setting) for key, setting in program.settings.items()]
        rows.append("# env: the caller's environment" + (
            ", with the env.* above on top" if program.variables else ", as it is"))
    width = min(WIDEST, max(len(row[0]) for row in rows if isinstance(row, tuple)))
    return "\n".join(row if isinstance(row, str) else f"{row[0]:<{width}}  # {row[1]}"
                     for row in rows)


def _row(key: str, setting: Setting) -> tuple[str, str]:
    source = str(setting.source)
    if key == "name" and setting.source.kind == "default":
        source += " (the file's directory)"
    elif key == "cwd" and setting.source.kind == "default":
        source += " (the file's directory)"
    if key == "umask" and isinstance(setting.value, int):
        return f"{key} = 0o{setting.value:03o}", source  # as TOML writes it
    return f"{key} = {json.dumps(setting.value, ensure_ascii=False)}", source
