"""The floor plan: every import inside the package goes to a lower layer, as the table in
``immortal/__init__.py``'s docstring declares, and every module is in that table."""

from __future__ import annotations

import ast
from pathlib import Path

import immortal

PACKAGE = Path(immortal.__file__).parent


def declared() -> dict[str, int]:
    """The table: after "Layers ...:", chunks "N name, name" separated by "·"."""
    text = (immortal.__doc__ or "").split("Layers", 1)[1].split(":", 1)[1]
    layers: dict[str, int] = {}
    for chunk in text.split("·"):
        number, _, names = " ".join(chunk.split()).partition(" ")
        for name in names.split(","):
            layers[name.strip()] = int(number)
    return layers


def imports(path: Path) -> set[str]:
    """The package's modules ``path`` imports, at its top or in a function, not counting
    the names imported only for type checkers."""
    tree = ast.parse(path.read_text())
    hidden = {id(sub) for node in ast.walk(tree) if isinstance(node, ast.If)
              and getattr(node.test, "id", None) == "TYPE_CHECKING" for sub in ast.walk(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in hidden or not isinstance(node, ast.ImportFrom):
            continue
        parts = (node.module or "").split(".")
        if node.level == 1:
            found.update([parts[0]] if node.module else [a.name for a in node.names])
        elif parts[0] == "immortal":
            found.update(parts[1:2] or [a.name for a in node.names])
    return found - {path.stem}


def test_every_module_is_in_the_table():
    layers = declared()
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    assert modules - set(layers) == set(), "modules the table leaves out"
    assert set(layers) - modules == set(), "names in the table that are no module"


def test_every_import_goes_down():
    layers = declared()
    wrong = [f"{path.stem} ({layers[path.stem]}) imports {other} ({layers[other]})"
             for path in sorted(PACKAGE.glob("*.py")) for other in sorted(imports(path))
             if other in layers and layers[other] >= layers[path.stem]]
    assert wrong == []
