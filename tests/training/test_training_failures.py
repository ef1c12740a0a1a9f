"""Tests of how training fails (equiglass.training): validations without a finite score,
a run directory's old files kept until the new run replaces them, divergence, and targets
beyond float32.

Every run uses the suite's synthetic dataset (factories.write_dataset; the module-scoped
``dataset`` fixture of conftest.py), a tiny model and one thread.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from factories import N_PARTICLES, write_dataset

import equiglass.training.loop
import equiglass.training.progress
from equiglass.cli import main
from equiglass.data.format import configuration_filename
from equiglass.errors import DataError, EquiglassError
from equiglass.training.checkpoint import BEST_CHECKPOINT, LAST_CHECKPOINT, read_checkpoint
from equiglass.training.config import load_config, to_toml
from equiglass.training.loop import train
from equiglass.training.rundir import METRICS_CSV

N_CONFIGURATIONS = 8
#: A tiny equivariant model (scalars only: the fastest).
MODEL = {"kind": "equivariant", "l_max": 0, "channels": 4, "n_layers": 2, "num_basis": 4,
         "radial_hidden": [8], "decoder_hidden": [16]}
#: Files of a run directory that a failed run must leave as they were.
RUN_FILES = (BEST_CHECKPOINT, LAST_CHECKPOINT, METRICS_CSV)

Configuration = dict[str, np.ndarray]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_config(path: Path, dataset: Path, **train: Any) -> Path:
    """A run config at ``path``: :data:`MODEL` on ``dataset``, 6 training and 2 validation configurations,
    the loss on A, 1 epoch, one thread, with the ``[train]`` entries of ``train`` added or replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_toml({
        "data": {"dataset": os.path.relpath(dataset, path.parent), "split": [6, 2, 0], "particle_types": [0]},
        "model": MODEL,
        "train": {"epochs": 1, "lr": 0.01, "threads": 1, **train},
    }))
    return path


def validation_indices(dataset: Path, tmp_path: Path) -> list[int]:
    """The configurations that validate in a run of :func:`write_config` on ``dataset``."""
    return load_config(write_config(tmp_path / "probe.toml", dataset)).split_of(N_CONFIGURATIONS)["validation"].tolist()


def file_bytes(run_dir: Path) -> dict[str, bytes]:
    """The content of the run directory's :data:`RUN_FILES`."""
    return {name: (run_dir / name).read_bytes() for name in RUN_FILES}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, dataset) -> Path:
    """A finished one-epoch run directory (a template: tests copy it before changing it)."""
    directory = tmp_path_factory.mktemp("finished")
    train(write_config(directory / "run.toml", dataset), directory / "run", progress=False)
    return directory / "run"


def copy_run(run_dir: Path, destination: Path) -> Path:
    """A copy of the run directory's :data:`RUN_FILES` in ``destination``."""
    destination.mkdir(parents=True)
    for name in RUN_FILES:
        (destination / name).write_bytes((run_dir / name).read_bytes())
    return destination


# ------------------------------------------------------------------ validation without a finite score


def test_unvalidated_epochs_are_never_best(tmp_path, dataset):
    """eval_every = 2: epochs 1 and 3 have no score (NaN); best.pt is a validated epoch."""
    result = train(write_config(tmp_path / "run.toml", dataset, epochs=4, eval_every=2), tmp_path / "run",
                   progress=False)
    scores = {int(row["epoch"]): row["val_pearson_mean"] for row in result.history}
    assert np.isnan(scores[1]) and np.isnan(scores[3]) and np.isfinite(scores[2]) and np.isfinite(scores[4])
    assert result.best_epoch == max((2, 4), key=scores.get) and result.best_score == scores[result.best_epoch]
    assert read_checkpoint(tmp_path / "run" / BEST_CHECKPOINT)["epoch"] == result.best_epoch


def test_run_without_a_finite_validation_score_fails(tmp_path, finished_run):
    """Validation configurations whose targets are constant score NaN (an undefined Pearson) at
    every epoch: the run fails naming the run directory, keeps last.pt, and leaves no best.pt
    (not even the one of the run it replaced)."""
    probe = write_dataset(tmp_path / "probe")
    unscorable = set(validation_indices(probe, tmp_path))

    def constant_targets(index: int, fields: Configuration) -> Configuration:
        return {**fields, "propensity": np.ones_like(fields["propensity"])} if index in unscorable else fields

    dataset = write_dataset(tmp_path / "dataset", change=constant_targets)
    run_dir = copy_run(finished_run, tmp_path / "run")
    with pytest.raises(EquiglassError, match="never gave a finite score") as error:
        train(write_config(tmp_path / "run.toml", dataset, epochs=2), run_dir, resume=False, progress=False)
    assert error.value.path == run_dir
    assert not (run_dir / BEST_CHECKPOINT).exists()
    assert read_checkpoint(run_dir / LAST_CHECKPOINT)["epoch"] == 2


def test_resumed_run_with_a_nan_best_score_finds_a_finite_best(tmp_path, finished_run, dataset):
    """A last.pt written before NaN was never best (best: epoch 1, NaN) resumes with no best yet."""
    run_dir = copy_run(finished_run, tmp_path / "run")
    content = torch.load(run_dir / LAST_CHECKPOINT, weights_only=True)
    torch.save({**content, "best_score": float("nan")}, run_dir / LAST_CHECKPOINT)
    result = train(write_config(tmp_path / "run.toml", dataset), run_dir, epochs=2, progress=False)
    assert result.resumed_from == 1 and result.best_epoch == 2 and np.isfinite(result.best_score)
    assert read_checkpoint(run_dir / BEST_CHECKPOINT)["epoch"] == 2


# ------------------------------------------------------------------ old files kept until replaced


def test_no_resume_with_a_bad_dataset_keeps_the_old_run(tmp_path, finished_run, dataset):
    run_dir = copy_run(finished_run, tmp_path / "run")
    before = file_bytes(run_dir)
    config = write_config(tmp_path / "run.toml", tmp_path / "missing-dataset")
    assert main(["train", str(config), "--run-dir", str(run_dir), "--no-resume"]) == 2
    assert file_bytes(run_dir) == before


def test_best_without_last_survives_a_failed_start(tmp_path, finished_run):
    run_dir = copy_run(finished_run, tmp_path / "run")
    (run_dir / LAST_CHECKPOINT).unlink()
    best = (run_dir / BEST_CHECKPOINT).read_bytes()
    with pytest.raises(DataError):
        train(write_config(tmp_path / "run.toml", tmp_path / "missing-dataset"), run_dir, progress=False)
    assert (run_dir / BEST_CHECKPOINT).read_bytes() == best


# ------------------------------------------------------------------ divergence


def test_divergence_fails_with_exit_2(tmp_path, dataset, capsys):
    """lr = 1e6 diverges: an error naming the run directory and the epoch, not a finished run."""
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "run.toml", dataset, epochs=3, lr=1e6, schedule="none")
    assert main(["train", str(config), "--run-dir", str(run_dir)]) == 2
    assert f"error: {run_dir}: training diverged at epoch" in capsys.readouterr().err


@pytest.mark.parametrize("corrupted_step", [1, 6], ids=["loss", "parameters"])
def test_divergence_keeps_the_previous_epochs_last_checkpoint(tmp_path, dataset, monkeypatch, corrupted_step):
    """A parameter made infinite at step ``corrupted_step`` of epoch 2 (6 steps an epoch): the loss of the
    next step (or the parameter check at the end of the epoch) stops the run; last.pt of epoch 1 stays."""
    real_step = equiglass.training.loop.take_step
    real_save = equiglass.training.progress.save_checkpoint
    steps, saved = [], {}

    def step_then_corrupt(forward, batch, objective, optimiser, scaler, **options):
        loss = real_step(forward, batch, objective, optimiser, scaler, **options)
        steps.append(loss)
        if len(steps) == 6 + corrupted_step:
            with torch.no_grad():
                optimiser.param_groups[0]["params"][0].fill_(torch.inf)
        return loss

    def save_and_keep(path, **kwargs):
        written = real_save(path, **kwargs)
        saved[kwargs["extra"]["epoch"], Path(path).name] = Path(path).read_bytes()
        return written

    monkeypatch.setattr(equiglass.training.loop, "take_step", step_then_corrupt)
    monkeypatch.setattr(equiglass.training.progress, "save_checkpoint", save_and_keep)
    run_dir = tmp_path / "run"
    where = "epoch 2, step 8 of 18: the loss is nan" if corrupted_step == 1 else "epoch 2, after its last step"
    with pytest.raises(EquiglassError, match=f"training diverged at {where}"):
        train(write_config(tmp_path / "run.toml", dataset, epochs=3), run_dir, progress=False)
    assert (run_dir / LAST_CHECKPOINT).read_bytes() == saved[1, LAST_CHECKPOINT]
    assert {epoch for epoch, _ in saved} == {1}


# ------------------------------------------------------------------ targets beyond float32


def test_targets_beyond_float32_are_refused(tmp_path):
    """A propensity above float32's range in a validation configuration would silently become inf."""
    probe = write_dataset(tmp_path / "probe")
    huge = validation_indices(probe, tmp_path)[0]

    def overflow(index: int, fields: Configuration) -> Configuration:
        if index != huge:
            return fields
        propensity = fields["propensity"].copy()
        propensity[0, 0] = 1e39
        return {**fields, "propensity": propensity}

    dataset = write_dataset(tmp_path / "dataset", change=overflow)
    with pytest.raises(DataError, match="float32") as error:
        train(write_config(tmp_path / "run.toml", dataset), tmp_path / "run", progress=False)
    assert error.value.path == dataset / configuration_filename(huge)
    assert not (tmp_path / "run" / LAST_CHECKPOINT).exists()


# ------------------------------------------------------------------ configurations without loss particles


def only_type_b(indices: set[int]) -> Callable[[int, Configuration], Configuration]:
    """A :func:`write_dataset` change making configurations ``indices`` all type B."""
    def change(index: int, fields: Configuration) -> Configuration:
        return {**fields, "types": np.ones(N_PARTICLES, dtype=np.int64)} if index in indices else fields
    return change


def test_a_configuration_without_loss_particles_is_left_out_and_named(tmp_path, caplog):
    """A training configuration with no particle of the loss types (A) would contribute nothing
    to the loss: it is left out of the split (run.json says so) and a warning names its file."""
    probe = write_dataset(tmp_path / "probe")
    config = load_config(write_config(tmp_path / "probe.toml", probe))
    lonely = int(config.split_of(N_CONFIGURATIONS)["train"][0])
    dataset = write_dataset(tmp_path / "dataset", change=only_type_b({lonely}))
    with caplog.at_level("WARNING", logger="equiglass.training.split"):
        result = train(write_config(tmp_path / "run.toml", dataset), tmp_path / "run", progress=False)
    assert configuration_filename(lonely) in caplog.text and "left out of the train" in caplog.text
    assert np.isfinite(result.history[-1]["train_loss"])
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert lonely not in record["split"]["train"] and len(record["split"]["train"]) == 5


def test_validation_without_any_loss_particle_is_refused(tmp_path):
    probe = write_dataset(tmp_path / "probe")
    dataset = write_dataset(tmp_path / "dataset", change=only_type_b(set(validation_indices(probe, tmp_path))))
    with pytest.raises(DataError, match="no validation configuration has a particle of the loss types") as error:
        train(write_config(tmp_path / "run.toml", dataset), tmp_path / "run", progress=False)
    assert error.value.path == dataset
