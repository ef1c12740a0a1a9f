"""The ``scaling`` experiment kind: nested training sets, a fixed step budget, the same test
configurations at every size, and curves that are the runs' tables averaged over seeds."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from factories import MODELS, write_dataset

from equiglass.errors import ConfigError
from equiglass.experiments.kinds.scaling import budget, curves
from equiglass.experiments.runner import run_experiment
from equiglass.training.checkpoint import read_resume_checkpoint

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


def test_all_seeds_from_keeps_the_other_seeds_to_the_larger_sizes(datasets, tmp_path):
    pool, validation, test = datasets
    spec = write_spec(tmp_path, pool, validation, test, "seeds = [0, 1]\nsteps = 8\nall_seeds_from = 4")
    results = run_experiment(spec, "cpu", out=tmp_path / "out", progress=False)
    assert set(results["runs"]) == {"network/n002-seed0", "network/n004-seed0", "network/n004-seed1",
                                    "ridge/n002-seed0", "ridge/n004-seed0"}
    assert [(p["n"], p["seeds"]) for p in results["curves"]["runs"]["network"]["A"]] == [(2, 1), (4, 2)]
    report = (tmp_path / "out" / "results.md").read_text()
    assert "seeds [0, 1] (below 4 configurations, the first only)" in report


def test_scaling_needs_a_test_dataset_and_a_good_table(datasets, tmp_path):
    pool, validation, test = datasets
    for scaling, message in (("steps = 0", "steps must be a positive integer"),
                             ("sizes = [2]", r"unknown key\(s\) \['sizes'\]"),
                             ("seeds = [-1]", "seeds must list integers >= 0"),
                             ("all_seeds_from = -1", "all_seeds_from must be an integer >= 0")):
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


def test_jobs_train_runs_side_by_side_with_the_numbers_of_one_at_a_time(datasets, tmp_path):
    pool, validation, test = datasets
    spec = write_spec(tmp_path, pool, validation, test)
    one = run_experiment(spec, "cpu", out=tmp_path / "one", progress=False)
    two = run_experiment(spec, "cpu", out=tmp_path / "two", progress=False, jobs=2)
    assert two["tables"] == one["tables"] and two["curves"] == one["curves"]
    assert list(two["runs"]) == list(one["runs"])  # in the spec's order, whatever finished first
    for label, run in one["runs"].items():
        assert two["runs"][label]["best_val_pearson_mean"] == run["best_val_pearson_mean"]
        assert _metrics(tmp_path / "two" / "runs" / label) == _metrics(tmp_path / "one" / "runs" / label)
    with pytest.raises(ValueError, match="jobs must be a positive integer"):
        run_experiment(spec, "cpu", out=tmp_path / "three", progress=False, jobs=0)


def test_sigterm_stops_every_job_cleanly_and_a_rerun_resumes(datasets, tmp_path):
    """SIGTERM in the middle of two runs: exit 130, no process left, no temporary file, every
    run's last epoch kept; the same command resumes them."""
    pool, validation, test = datasets
    spec = write_spec(tmp_path, pool, validation, test, "seeds = [0]\nsteps = 100000")
    out = tmp_path / "out"
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "w") as err:
        process = subprocess.Popen([sys.executable, "-m", "equiglass", "experiment", str(spec), "--out", str(out),
                                    "--jobs", "2", "--threads", "1", "--no-progress"],
                                   stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    running = [out / "runs" / "network" / f"n00{n}-seed0" / "last.pt" for n in (2, 4)]
    try:
        deadline = time.monotonic() + 120
        while not all(path.is_file() for path in running) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(path.is_file() for path in running), stderr.read_text()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 130
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert "interrupted: rerun the same command to resume" in stderr.read_text()
    deadline = time.monotonic() + 15
    while _group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _group_alive(process.pid)
    assert sorted(path.name for path in out.rglob("*") if path.name.endswith(".tmp")) == []

    done = {path.parent.name: read_resume_checkpoint(path)["epoch"] for path in running}
    epochs = max(done.values()) + 1
    results = run_experiment(spec, "cpu", out=out, progress=False, jobs=2, epochs=epochs)
    for name in done:
        rows = list(csv.DictReader((out / "runs" / "network" / name / "metrics.csv").read_text().splitlines()))
        assert [int(row["epoch"]) for row in rows] == list(range(1, epochs + 1))  # resumed, not restarted
        assert results["runs"][f"network/{name}"]["epochs"] == epochs


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    """The rows of a run's ``metrics.csv`` but their wall times ([] for ridge, which keeps none)."""
    path = run_dir / "metrics.csv"
    rows = csv.DictReader(path.read_text().splitlines()) if path.is_file() else []
    return [{key: value for key, value in row.items() if key != "wall_s"} for row in rows]


def _group_alive(group: int) -> bool:
    """Whether any live (not zombie) process belongs to process group ``group``."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) == group and fields[0] != "Z":
                return True
    return False
