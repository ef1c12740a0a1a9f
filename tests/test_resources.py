"""The demo dataset and configs ship inside the package (found without an editable install)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import equiglass
from equiglass.data.format import load_dataset
from equiglass.demo import ALL_DEMO_MODELS
from equiglass.resources import DEMO_CONFIGS, DEMO_DATASET
from equiglass.training.config import load_config

REPOSITORY = Path(__file__).resolve().parents[1]


def test_every_resource_file_is_package_data():
    """A file under equiglass/resources that pyproject's package-data globs miss would be absent
    from a wheel, and the demo would then work only from a clone."""
    package = Path(equiglass.__file__).parent
    globs = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = globs["equiglass.resources"]
    shipped = [
        path.relative_to(package / "resources").as_posix()
        for path in (package / "resources").rglob("*")
        if path.is_file() and path.suffix != ".pyc" and path.name != "__init__.py"
    ]
    assert shipped
    missing = [name for name in shipped if not any(fnmatch.fnmatch(name, pattern) for pattern in patterns)]
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"


def test_demo_configs_point_to_the_shipped_dataset():
    assert DEMO_DATASET.parent == DEMO_CONFIGS.parent == Path(equiglass.__file__).resolve().parent / "resources"
    configs = sorted(DEMO_CONFIGS.glob("demo_*.toml"))
    assert sorted(path.stem.removeprefix("demo_") for path in configs) == sorted(ALL_DEMO_MODELS)
    for path in configs:
        assert load_config(path).data.dataset == DEMO_DATASET
    assert len(load_dataset(DEMO_DATASET)) == 24
