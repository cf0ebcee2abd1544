"""The floor plan: every import inside the package goes to a lower layer, as the table in
``immortal/__init__.py``'s docstring declares, and every module is in that table. A
subpackage (the platform seam, ``immortal/_linux``) is one module of that table, and its
own docstring holds the table of its parts, checked the same way."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import immortal

PACKAGE = Path(immortal.__file__).parent
# Each package with a table: immortal, and every subpackage of it.
PACKAGES = ["immortal", *(f"immortal.{path.parent.name}"
                          for path in sorted(PACKAGE.glob("*/__init__.py")))]


def declared(package: str) -> dict[str, int]:
    """The table: after "Layers ...:", chunks "N name, name" separated by "·"."""
    text = (importlib.import_module(package).__doc__ or "").split("Layers", 1)[1]
    layers: dict[str, int] = {}
    for chunk in text.split(":", 1)[1].split("·"):
        number, _, names = " ".join(chunk.split()).partition(" ")
        for name in names.split(","):
            layers[name.strip()] = int(number)
    return layers


def modules(package: str) -> dict[str, list[Path]]:
    """The modules of ``package`` by name, each with its files (a subpackage: all of its)."""
    directory = PACKAGE.joinpath(*package.split(".")[1:])
    found = {path.stem: [path] for path in directory.glob("*.py")}
    for init in directory.glob("*/__init__.py"):
        found[init.parent.name] = sorted(init.parent.rglob("*.py"))
    return found


def targets(path: Path) -> set[str]:
    """What ``path`` imports from, dotted in full ("immortal._linux.procfs.is_alive"), at
    its top or in a function, not counting the names imported only for type checkers."""
    here = ".".join(("immortal", *path.relative_to(PACKAGE).with_suffix("").parts))
    tree = ast.parse(path.read_text())
    hidden = {id(sub) for node in ast.walk(tree) if isinstance(node, ast.If)
              and getattr(node.test, "id", None) == "TYPE_CHECKING" for sub in ast.walk(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in hidden or not isinstance(node, ast.ImportFrom):
            continue
        base = ".".join(here.split(".")[:-node.level]) if node.level else ""
        module = ".".join(filter(None, (base, node.module)))
        found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def imports(path: Path, package: str) -> set[str]:
    """The modules of ``package`` that ``path`` imports, its own module left out."""
    found = {target[len(package) + 1:].split(".")[0] for target in targets(path)
             if target.startswith(f"{package}.")}
    own = path.relative_to(PACKAGE.joinpath(*package.split(".")[1:])).parts[0]
    return found - {own.removesuffix(".py")}


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_is_in_the_table(package):
    layers = declared(package)
    names = set(modules(package))
    assert names - set(layers) == set(), "modules the table leaves out"
    assert set(layers) - names == set(), "names in the table that are no module"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_import_goes_down(package):
    layers = declared(package)
    wrong = [f"{name} ({layers[name]}) imports {other} ({layers[other]})"
             for name, paths in sorted(modules(package).items()) for path in paths
             for other in sorted(imports(path, package))
             if other in layers and layers[other] >= layers[name]]
    assert wrong == []


@pytest.mark.parametrize("package", PACKAGES[1:])
def test_a_subpackage_is_entered_by_its_front_door(package):
    """The rest of the package imports a subpackage's names from the subpackage itself,
    never from one of its parts: the parts can move without a caller noticing."""
    inside = PACKAGE / package.rsplit(".", 1)[1]
    around = [f"{path.relative_to(PACKAGE)} imports {target}"
              for path in sorted(PACKAGE.rglob("*.py")) if inside not in path.parents
              for target in sorted(targets(path)) if target.startswith(f"{package}.")
              and target.split(".")[2] in modules(package)]
    assert around == []
