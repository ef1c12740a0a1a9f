"""The package's layers: a module never imports from a layer above its own.

    physics < data < simulate < nn < training < analysis < experiments < (cli, demo, testing)

``equiglass`` itself (``__version__``), ``equiglass.errors``, ``equiglass.metrics``,
``equiglass.process_pool`` and ``equiglass.resources`` are leaves: they import
nothing of equiglass, so every layer may use them. Imports inside functions count too, with one
exception: the package root re-exports the top layer's notebook API (``equiglass.api``) from its
module ``__getattr__``, which runs only when a user asks for one of those names.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import equiglass

PACKAGE = Path(equiglass.__file__).parent
LAYERS = ("physics", "data", "simulate", "nn", "training", "analysis", "experiments")
TOP = ("cli", "demo", "testing", "api", "__main__")
LEAVES = ("errors", "metrics", "process_pool", "resources")
#: Module -> the modules it may import lazily, inside its module-level ``__getattr__`` only.
LAZY_REEXPORTS = {"equiglass": {"equiglass.api"}}


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


def imported_modules(path: Path, *, except_in: str | None = None) -> set[str]:
    """Every ``equiglass...`` module that the file imports, at any depth of the code (but, with
    ``except_in``, not inside the module-level functions of that name)."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = {id(node) for function in tree.body if isinstance(function, ast.FunctionDef) and function.name == except_in
               for node in ast.walk(function)}
    names = set()
    for node in (node for node in ast.walk(tree) if id(node) not in skipped):
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
        lazy = LAZY_REEXPORTS.get(importer, set())
        eager = imported_modules(path, except_in="__getattr__" if lazy else None)
        for imported in eager | (imported_modules(path) - lazy):
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


def test_a_lazy_reexport_counts_only_inside_getattr(tmp_path):
    path = tmp_path / "root.py"
    path.write_text("from equiglass import api\n\ndef __getattr__(name):\n    from equiglass import cli\n")
    assert imported_modules(path, except_in="__getattr__") == {"equiglass", "equiglass.api"}
    assert imported_modules(path) == {"equiglass", "equiglass.api", "equiglass.cli"}


def test_importing_the_package_imports_no_torch():
    code = "import sys, equiglass; assert 'torch' not in sys.modules; equiglass.load_dataset; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
