"""The package's layers: a module never imports from a layer above its own.

    physics < data < simulate < nn < training < analysis < experiments < (cli, demo, testing)

``equiglass`` itself (``__version__``), ``equiglass.errors``, ``equiglass.metrics`` and
``equiglass.resources`` are leaves: they import
nothing of equiglass, so every layer may use them. Imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import equiglass

PACKAGE = Path(equiglass.__file__).parent
LAYERS = ("physics", "data", "simulate", "nn", "training", "analysis", "experiments")
TOP = ("cli", "demo", "testing", "__main__")
LEAVES = ("errors", "metrics", "resources")


def layer(module: str) -> int:
    """Rank of ``equiglass.<first>...``: -1 for leaves, then the layers in order, then the top."""
    parts = module.split(".")
    if len(parts) == 1:
        return -1  # the package itself: its __init__ holds __version__ and imports nothing
    first = parts[1]
    if first in LEAVES:
        return -1
    if first in LAYERS:
        return LAYERS.index(first)
    assert first in TOP, f"{module}: not in a known layer; add it to tests/test_layering.py"
    return len(LAYERS)


def imported_modules(path: Path) -> set[str]:
    """Every ``equiglass...`` module that the file imports, at any depth of the code."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.split(".")[0] == "equiglass"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "equiglass":
            names.add(node.module)
            if node.module == "equiglass":  # from equiglass import x: x is a module or __version__
                names |= {f"equiglass.{alias.name}" for alias in node.names if alias.name != "__version__"}
    return names


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_module_imports_a_layer_above_its_own():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        for imported in imported_modules(path):
            if layer(importer) == -1 and imported != importer:
                violations.append(f"{importer} (a leaf) imports {imported}")
            elif layer(imported) > layer(importer):
                violations.append(f"{importer} imports {imported}, a layer above")
    assert not violations, "\n".join(violations)


def test_the_check_sees_a_violation(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("def f():\n    from equiglass.training.loop import train\n")
    assert imported_modules(path) == {"equiglass.training.loop"}
    assert layer("equiglass.training.loop") > layer("equiglass.nn.registry")
