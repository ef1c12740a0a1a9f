"""The ``scaling`` experiment kind: nested training sets, a fixed step budget, the same test
configurations at every size, and curves that are the runs' tables averaged over seeds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from factories import MODELS, write_dataset

from equiglass.errors import ConfigError
from equiglass.experiments.kinds.scaling import budget, curves
from equiglass.experiments.runner import run_experiment

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_spec(directory: Path, pool: Path, validation: Path, test: Path, scaling: str = "seeds = [0, 1]\nsteps = 8") -> Path:
    """A scaling spec on the synthetic datasets: the tiny l_max = 0 network and ridge."""
    relative = lambda target: os.path.relpath(target, directory)  # noqa: E731
    network = ", ".join(f"{key} = {json.dumps(value)}" for key, value in MODELS["equivariant_l0"].items())
    path = directory / "scaling.toml"
    path.write_text(f"""
[experiment]
title = "scaling test"
kind = "scaling"

[scaling]
train_configurations = [4, 2, 16]
validations = 2
{scaling}

[base]
data = {{ split = [1, 0, 0], validation_dataset = "{relative(validation)}", test_dataset = "{relative(test)}" }}
train = {{ lr = 0.01, threads = 1 }}

[scale.cpu]
datasets = ["{relative(pool)}"]

[[run]]
name = "network"
model = {{ {network} }}

[[run]]
name = "ridge"
model = {{ kind = "ridge", radial_centres = [1.0, 1.2], angular_orders = [], coarse_lengths = [0.0] }}
""")
    return path


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Training pool (8 configurations), validation (2) and test (3) datasets, all synthetic."""
    root = tmp_path_factory.mktemp("scaling")
    return write_dataset(root / "pool"), write_dataset(root / "validation", 2), write_dataset(root / "test", 3)


def test_budget_gives_the_same_steps_at_every_size():
    assert budget(1920, 30, 8, 1) == {"epochs": 240, "eval_every": 8}
    assert budget(1920, 30, 128, 1) == {"epochs": 15, "eval_every": 1}
    assert budget(1920, 30, 100, 1)["epochs"] * 100 >= 1920  # never fewer steps than asked
    assert budget(100, 30, 10, 4) == {"epochs": 34, "eval_every": 1}  # 3 batches per epoch


def test_scaling_trains_nested_sets_and_tests_every_size_on_the_same_configurations(datasets, tmp_path):
    pool, validation, test = datasets
    spec = write_spec(tmp_path, pool, validation, test)
    results = run_experiment(spec, "cpu", out=tmp_path / "out", progress=False)

    # sizes beyond the pool are skipped, named; ridge is fitted once per size
    assert set(results["skipped"]) == {"network/n016", "ridge/n016"}
    assert "holds 8 configurations" in results["skipped"]["network/n016"]
    assert set(results["runs"]) == {"network/n002-seed0", "network/n004-seed0", "network/n002-seed1",
                                    "network/n004-seed1", "ridge/n002-seed0", "ridge/n004-seed0"}
    records = {label: json.loads((Path(run["run_dir"]) / "run.json").read_text())
               for label, run in results["runs"].items()}
    train_sets = {label: set(record["split"]["train"]) for label, record in records.items()}
    assert len(train_sets["network/n002-seed0"]) == 2
    assert train_sets["network/n002-seed0"] < train_sets["network/n004-seed0"]  # nested
    assert train_sets["network/n002-seed0"] == train_sets["network/n002-seed1"] == train_sets["ridge/n002-seed0"]
    # the same number of optimiser steps at every size: 8 = 4 epochs of 2 = 2 epochs of 4
    assert results["runs"]["network/n002-seed0"]["epochs"] == 4 and results["runs"]["network/n004-seed0"]["epochs"] == 2
    assert all(record["test_dataset"] == str(test) for record in records.values())

    table = results["tables"]["network"]["pearson"]
    assert {row["configurations"] for row in table["rows"]} == {3}  # every configuration of the test dataset
    rows = {(row["model"], row["type"]): row for row in table["rows"]}
    point = results["curves"]["runs"]["network"]["A"][0]
    seeds = [rows["n002-seed0", "A"]["mean"], rows["n002-seed1", "A"]["mean"]]
    assert point["n"] == 2 and point["seeds"] == 2
    np.testing.assert_allclose(point["mean"], np.mean(seeds, axis=0))
    np.testing.assert_allclose(point["seed_std"], np.std(seeds, axis=0, ddof=1))
    assert not np.allclose(seeds[0], seeds[1])  # the seeds are different trainings
    ridge = results["curves"]["runs"]["ridge"]["A"]
    assert [p["n"] for p in ridge] == [2, 4] and all(p["seeds"] == 1 and p["seed_std"] == [0, 0, 0] for p in ridge)
    assert results["curves"]["ceiling"]["A"] == rows["n002-seed0", "A"]["ceiling"]

    report = (tmp_path / "out" / "results.md").read_text()
    assert f"| 2 | network | {np.mean(point['mean']):.3f} ± {np.mean(point['seed_std']):.3f} |" in report
    assert (tmp_path / "out" / "scaling.png").is_file()


def test_scaling_needs_a_test_dataset_and_a_good_table(datasets, tmp_path):
    pool, validation, test = datasets
    for scaling, message in (("steps = 0", "steps must be a positive integer"),
                             ("sizes = [2]", r"unknown key\(s\) \['sizes'\]"),
                             ("seeds = [-1]", "seeds must list integers >= 0")):
        with pytest.raises(ConfigError, match=message):
            run_experiment(write_spec(tmp_path, pool, validation, test, scaling), "cpu", out=tmp_path / "a", progress=False)
    spec = write_spec(tmp_path, pool, validation, test)
    spec.write_text(spec.read_text().replace(f', test_dataset = "{os.path.relpath(test, tmp_path)}"', ""))
    with pytest.raises(ConfigError, match="test_dataset"):
        run_experiment(spec, "cpu", out=tmp_path / "c", progress=False)
    assert not (tmp_path / "c" / "runs").exists()


def test_curves_ignore_rows_of_published_models():
    row = {"type": "A", "mean": [0.5], "std": [0.1], "ceiling": [0.9]}
    table = {"times": [1.0], "rows": [{**row, "model": "n008-seed0"}, {**row, "model": "SE3 (published)", "mean": [0.8]}]}
    result = curves({"network": table})
    assert result["runs"]["network"]["A"] == [{"n": 8, "seeds": 1, "mean": [0.5], "seed_std": [0.0],
                                               "configuration_std": [0.1]}]
