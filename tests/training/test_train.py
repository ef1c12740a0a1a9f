"""Tests of training (equiglass.training.loop), run configs (equiglass.training.config), checkpoints and the model registry.

Every run uses a tiny synthetic dataset whose propensity is a smooth function of each
particle's neighbour count (learnable from distances alone; the ``dataset`` fixture of
conftest.py) and tiny models (``factories.MODELS``).
"""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import MODELS, N_PARTICLES, TIMES, read_metrics, write_config
from torch_geometric.data import Batch

import equiglass
import equiglass.training.progress
from equiglass.analysis.evaluate import evaluate
from equiglass.cli import main
from equiglass.data.format import load_dataset
from equiglass.data.graphs import is_displacement
from equiglass.errors import CheckpointError, ConfigError
from equiglass.nn.registry import build_model, resolve_model_section
from equiglass.training.checkpoint import LAST_CHECKPOINT, load_checkpoint, read_checkpoint
from equiglass.training.config import load_config
from equiglass.training.loop import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------ training


def test_the_validation_score_is_the_per_type_pearson_of_the_best_checkpoint(tmp_path, dataset):
    """With A and B in the loss, the validation score of best.pt's epoch is the Pearson within
    each species (as evaluate reports it), averaged over species and configurations: never a
    correlation over A and B together, which would reward their offset."""
    config = write_config(tmp_path, dataset, "equivariant_l0", train={"epochs": 3})
    result = train(config, tmp_path / "run", progress=False)
    trained = load_checkpoint(tmp_path / "run")
    validation = json.loads((tmp_path / "run" / "run.json").read_text())["split"]["validation"]
    per_configuration = []
    for data in trained.graphs(dataset, indices=validation):
        prediction = trained.predict(data)
        per_type = [[np.corrcoef(prediction[data.types == code, t], data.y[data.types == code, t])[0, 1]
                     for t in range(len(TIMES))] for code in (0, 1)]
        per_configuration.append(np.mean(per_type, axis=0))
    assert result.best_score == pytest.approx(float(np.mean(per_configuration)), abs=1e-5)


def test_loss_falls_by_a_large_factor(tmp_path, dataset):
    config = write_config(tmp_path, dataset, "equivariant", train={"epochs": 15, "schedule": "none"})
    result = train(config, tmp_path / "run", progress=False)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < losses[0] / 4
    assert result.best_score > 0.8  # validation Pearson on a learnable target
    assert result.best_epoch == max(result.history, key=lambda row: row["val_pearson_mean"])["epoch"]


COSINE = {"schedule": "cosine"}
PLATEAU = {"schedule": "plateau", "plateau_patience": 0, "lr": 0.1}


@pytest.mark.parametrize(("model", "options"), [("equivariant", COSINE), ("bapst", COSINE), ("equivariant_l0", PLATEAU)],
                         ids=["equivariant-cosine", "bapst-cosine", "equivariant_l0-plateau"])
def test_killed_run_resumes_bit_identical(tmp_path, dataset, monkeypatch, model, options):
    """Stop after epoch 2 of 4 (right after last.pt), resume: same weights and metrics as an uninterrupted run.

    Batches of 2 with a cosine schedule; bapst also draws cube symmetries from the data
    generator. The plateau schedule has state: with patience 0 and this large learning rate
    the validation score (of A: the drops were found for it) drops at epochs 2 and 3, which
    halves the rate each time; the second drop is measured against the best score of epoch 1,
    from before the interruption.
    """
    config = write_config(tmp_path, dataset, model, data={"particle_types": [0]},
                          train={"epochs": 4, "batch_size": 2, **options})
    train(config, tmp_path / "reference", progress=False)

    real_save = equiglass.training.progress.save_checkpoint

    def save_then_die(path, **kwargs):
        written = real_save(path, **kwargs)
        if Path(path).name == LAST_CHECKPOINT and kwargs["extra"]["epoch"] == 2:
            raise KeyboardInterrupt
        return written

    monkeypatch.setattr(equiglass.training.progress, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "killed", progress=False)
    assert read_checkpoint(tmp_path / "killed" / LAST_CHECKPOINT)["epoch"] == 2
    monkeypatch.setattr(equiglass.training.progress, "save_checkpoint", real_save)
    resumed = train(config, tmp_path / "killed", progress=False)

    assert resumed.resumed_from == 2 and resumed.epochs == 4
    for name in ("last.pt", "best.pt"):
        expected = read_checkpoint(tmp_path / "reference" / name)
        actual = read_checkpoint(tmp_path / "killed" / name)
        assert expected["epoch"] == actual["epoch"]
        for key, value in expected["model_state"].items():
            assert torch.equal(value, actual["model_state"][key]), key
    expected, actual = (read_checkpoint(tmp_path / run / "last.pt")["scheduler"] for run in ("reference", "killed"))
    assert actual == expected and bool(actual) == (options == PLATEAU)
    drop_time = [{k: v for k, v in row.items() if k != "wall_s"} for row in read_metrics(tmp_path / "reference")]
    assert drop_time == [{k: v for k, v in row.items() if k != "wall_s"} for row in read_metrics(tmp_path / "killed")]
    assert len(drop_time) == 4
    if options == PLATEAU:
        assert [float(row["lr"]) for row in drop_time] == [0.1, 0.1, 0.05, 0.025]


@pytest.mark.parametrize("schedule", ["none", "cosine"])
def test_warmup_ramps_the_learning_rate_linearly_then_hands_over_to_the_schedule(tmp_path, dataset, schedule):
    """6 training configurations, batch 1: 6 steps per epoch. With 10 warm-up steps the last step
    of epoch 1 (step 5, 0-based) runs at 6/10 of the rate; from step 9 on the schedule alone."""
    config = write_config(tmp_path, dataset, "equivariant_l0",
                          train={"epochs": 3, "lr": 0.01, "warmup_steps": 10, "schedule": schedule})
    train(config, tmp_path / "run", progress=False)
    rates = [float(row["lr"]) for row in read_metrics(tmp_path / "run")]
    decay = [0.5 * (1 + math.cos(math.pi * step / 18)) if schedule == "cosine" else 1.0 for step in (5, 11, 17)]
    assert rates == pytest.approx([0.01 * 0.6 * decay[0], 0.01 * decay[1], 0.01 * decay[2]], rel=1e-12)


def test_finished_run_is_not_retrained_and_no_resume_restarts(tmp_path, dataset):
    config = write_config(tmp_path, dataset, "equivariant_l0", train={"epochs": 2})
    first = train(config, tmp_path / "run", progress=False)
    again = train(config, tmp_path / "run", progress=False)
    assert again.resumed_from == 2 and again.history == first.history
    # a run made before a config key existed resumes: the key takes its default
    content = torch.load(tmp_path / "run" / LAST_CHECKPOINT, weights_only=True)
    del content["config"]["train"]["plateau_patience"]
    torch.save(content, tmp_path / "run" / LAST_CHECKPOINT)
    longer = train(config, tmp_path / "run", epochs=3, progress=False)
    assert longer.resumed_from == 2 and [row["epoch"] for row in longer.history] == [1, 2, 3]
    fresh = train(config, tmp_path / "run", resume=False, progress=False)
    assert fresh.resumed_from == 0 and len(fresh.history) == 2

    # threads are the machine's, not the run's: a finished run is not retrained on another count
    two_threads = write_config(tmp_path / "two", dataset, "equivariant_l0", train={"epochs": 2, "threads": 2})
    assert train(two_threads, tmp_path / "run", progress=False).history == fresh.history

    other = write_config(tmp_path / "other", dataset, "equivariant_l0", train={"epochs": 2, "seed": 5})
    with pytest.raises(ConfigError, match=r"last\.pt.*\[train\] seed"):
        train(other, tmp_path / "run", progress=False)


def test_tensorboard_gets_every_number_when_installed(tmp_path, dataset, monkeypatch):
    """tensorboard is optional (not installed here): a recording stand-in checks what would be logged."""
    writers = []

    class RecordingWriter:
        def __init__(self, log_dir: str, purge_step: int):
            self.log_dir, self.purge_step, self.scalars, self.closed = log_dir, purge_step, {}, False
            writers.append(self)

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            self.scalars[tag, step] = value

        def flush(self) -> None:
            pass

        def close(self) -> None:
            self.closed = True

    module = types.ModuleType("torch.utils.tensorboard")
    module.SummaryWriter = RecordingWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", module)
    config = write_config(tmp_path, dataset, "equivariant_l0")
    train(config, tmp_path / "run", progress=False)
    train(config, tmp_path / "run", epochs=2, progress=False)  # resumes: events after epoch 1 are purged

    assert [(w.log_dir, w.purge_step, w.closed) for w in writers] == [
        (str(tmp_path / "run" / "tensorboard"), 1, True), (str(tmp_path / "run" / "tensorboard"), 2, True)
    ]
    logged = {**writers[0].scalars, **writers[1].scalars}
    expected = {(key, int(row["epoch"])): float(value)
                for row in read_metrics(tmp_path / "run") for key, value in row.items() if key != "epoch" and value}
    assert logged == expected


@pytest.mark.parametrize("model", list(MODELS))
def test_every_kind_trains_one_epoch(tmp_path, request, model):
    inherent = MODELS[model].get("use_is_displacement", False)
    dataset = request.getfixturevalue("inherent_dataset" if inherent else "dataset")
    config = write_config(tmp_path, dataset, model, data={"with_is_displacement": inherent})
    result = train(config, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    for name in ("config.toml", "config.json", "run.json", "metrics.csv", "last.pt", "best.pt"):
        assert (run / name).is_file(), name

    rows = read_metrics(run)
    assert len(rows) == 1 and list(rows[0]) == [
        "epoch", "train_loss", "val_loss", "val_pearson_mean", "val_pearson_t0", "val_pearson_t1", "val_pearson_t2",
        "lr", "wall_s",
    ]
    assert np.isfinite(float(rows[0]["val_pearson_mean"]))
    record = json.loads((run / "run.json").read_text())
    assert record["dataset"] == str(dataset.resolve()) and record["seed"] == 0
    assert record["manifest"] == str((dataset / "manifest.json").resolve())
    assert sorted(record["split"]["train"] + record["split"]["validation"]) == list(range(8))
    assert set(record["versions"]) == {"python", "torch", "e3nn", "torch_geometric", "equiglass"}
    assert len(record["manifest_sha256"]) == 64
    trained = load_checkpoint(run)
    assert record["n_parameters"] == trained.num_parameters()
    assert trained.model_section["kind"] == MODELS[model]["kind"]
    # the resolved config in the run directory is itself a valid config of the same run
    assert load_config(run / "config.toml") == load_config(config)
    if model == "ridge":
        best, last = read_checkpoint(run / "best.pt"), read_checkpoint(run / "last.pt")
        assert all(torch.equal(value, last["model_state"][key]) for key, value in best["model_state"].items())
        assert float(best["model_state"]["alpha"]) == last["alpha"] and str(last["alpha"]) in last["alpha_scores"]
        assert result.epochs == 1 and rows[0]["lr"] == ""
    # and it evaluates
    table = evaluate(run, dataset, record["split"]["validation"])
    assert [(row.model, row.particle_type, row.n_configurations) for row in table.rows] == [
        ("run", "A", 2), ("run", "B", 2)
    ]
    assert all(np.isfinite(row.mean).all() and np.isfinite(row.pooled).all() for row in table.rows)


def test_a_model_of_the_displacement_from_the_inherent_state_trains_and_predicts(tmp_path, inherent_dataset):
    """``use_is_displacement``: the embedding's scale is the training split's root mean square
    ``|d|``, and ``equiglass.predict`` given the inherent state predicts what evaluation does."""
    dataset = inherent_dataset
    config = write_config(tmp_path, dataset, data={"with_is_displacement": True},
                          model_options={"use_is_displacement": True}, train={"epochs": 2})
    train(config, tmp_path / "run", progress=False)
    trained = equiglass.load_model(tmp_path / "run")
    assert trained.data_section["with_is_displacement"] is True
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    vibrations = np.concatenate([is_displacement(load_dataset(dataset).read(k)) for k in record["split"]["train"]])
    scale = float(trained.model.embedding.displacement_scale)
    assert scale == pytest.approx(np.sqrt((vibrations**2).sum(axis=1).mean()), rel=1e-6)

    fields = load_dataset(dataset).read(0)
    predicted = equiglass.predict(trained, fields["positions"], fields["types"], fields["box"],
                                  is_positions=fields["is_positions"])
    with torch.no_grad():
        expected = trained.predict(trained.graphs(dataset, [0])[0])
    np.testing.assert_allclose(predicted, expected.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="pass the thermal positions and is_positions"):
        equiglass.predict(trained, fields["positions"], fields["types"], fields["box"])


def test_checkpoint_contents_and_prediction(tmp_path, dataset):
    config = write_config(tmp_path, dataset, data={"with_potential_energy": True},
                          model_options={"use_potential_energy": True}, train={"epochs": 2})
    train(config, tmp_path / "run", progress=False)

    content = read_checkpoint(tmp_path / "run" / "best.pt")
    assert {"model_state", "model", "data", "normalisation", "times", "equiglass_version", "epoch", "metrics"} <= set(content)
    assert content["data"]["particle_types"] == [0, 1] and content["data"]["with_potential_energy"] is True
    assert content["model"]["readout_norms"] is True  # every hyper-parameter stored, the defaults too
    last = read_checkpoint(tmp_path / "run" / "last.pt")
    assert {"optimiser", "generator", "random_states", "history", "best_score"} <= set(last)

    trained = load_checkpoint(tmp_path / "run")
    assert not trained.model.training
    np.testing.assert_allclose(trained.times, TIMES)
    train_split = json.loads((tmp_path / "run" / "run.json").read_text())["split"]["train"]
    graphs = trained.graphs(dataset, indices=train_split)
    # normalisation and energy statistics are those of the training split (of the loss particles: A and B)
    y = torch.cat([g.y.double() for g in graphs])
    np.testing.assert_allclose(trained.normalisation["mean"], y.mean(dim=0).numpy(), rtol=1e-10)
    np.testing.assert_allclose(trained.normalisation["std"], y.std(dim=0, correction=0).numpy(), rtol=1e-10)
    energy = torch.cat([g.potential_energy.double() for g in graphs])
    assert float(trained.model.embedding.energy_mean) == pytest.approx(float(energy.mean()), rel=1e-6)

    data = graphs[0]
    with torch.no_grad():
        raw = trained.model(data).double()
    expected = raw * torch.tensor(trained.normalisation["std"]) + torch.tensor(trained.normalisation["mean"])
    prediction = trained.predict(data)
    assert prediction.shape == (N_PARTICLES, len(TIMES))
    torch.testing.assert_close(prediction, expected.float())
    batch = Batch.from_data_list([graphs[0], graphs[1]])
    torch.testing.assert_close(trained.predict(batch)[:N_PARTICLES], prediction, rtol=1e-5, atol=1e-5)


def test_bad_checkpoints_raise_data_errors(tmp_path):
    with pytest.raises(CheckpointError, match="missing.pt.*does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        load_checkpoint(tmp_path / "corrupt.pt")
    torch.save({"model_state": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="foreign.pt.*lacks"):
        load_checkpoint(tmp_path / "foreign.pt")
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(CheckpointError, match="best.pt"):
        load_checkpoint(run)


# ------------------------------------------------------------------ configs and registry


@pytest.mark.parametrize(
    ("section", "entry", "message"),
    [
        ("train", {"lr": -1.0}, r"\[train\] lr must be positive"),
        ("train", {"optimizer": "adam"}, r"\[train\] unknown key\(s\) \['optimizer'\]"),
        ("train", {"epochs": "ten"}, r"\[train\] epochs: must be an integer"),
        ("train", {"schedule": "step"}, r"\[train\] schedule: must be one of"),
        ("train", {"plateau_factor": 1.5}, r"\[train\] plateau_factor must be between 0 and 1"),
        ("train", {"warmup_steps": 3, "schedule": "plateau"}, r"\[train\] warmup_steps needs schedule cosine or none"),
        ("train", {"time_weights": [1.0, -1.0, 1.0]}, r"\[train\] time_weights must be >= 0 with a positive sum"),
        ("train", {"time_weights": [0.0, 0.0, 0.0]}, r"\[train\] time_weights must be >= 0 with a positive sum"),
        ("train", {"augment": True}, r"\[train\] augment: .* bapst"),
        ("data", {"positions": "quenched"}, r"\[data\] positions: must be one of"),
        ("data", {"positions": "cage", "with_potential_energy": True}, r"'cage' come with no per-particle potential"),
        ("data", {"particle_types": [2]}, r"\[data\] particle_types"),
        ("data", {"split": [0, 4, 4]}, r"\[data\] split needs training"),
        ("data", {"split": [0.5, "a"]}, r"\[data\] split: must be a list of integers or a list of numbers"),
        ("model", {"chanels": 8}, r"\[model\] unknown equivariant model option\(s\) \['chanels'\]"),
        ("model", {"channels": 4.5}, r"\[model\] channels: must be an integer, got 4.5"),
        ("model", {"radial_hidden": [8, "a"]}, r"\[model\] radial_hidden: must be a list of integers"),
        ("model", {"l_max": -1}, r"\[model\] EquivariantConfig: l_max must be >= 0"),
        ("model", {"use_potential_energy": True}, r"use_potential_energy needs \[data\] with_potential_energy"),
        ("model", {"use_is_displacement": True}, r"use_is_displacement needs \[data\] with_is_displacement"),
        ("model", {"cutoff": 2.5}, r"exceeds the graphs' \[data\] cutoff"),
    ],
)
def test_config_errors_name_the_file_and_key(tmp_path, dataset, section, entry, message):
    options = {"model_options" if section == "model" else section: entry}
    config = write_config(tmp_path, dataset, **options)
    with pytest.raises(ConfigError, match=message) as error:
        load_config(config)
    assert str(error.value).startswith(str(config))


def test_config_defaults_and_relative_dataset(tmp_path, dataset):
    path = tmp_path / "minimal.toml"
    path.write_text(f'[data]\ndataset = "../{dataset.name}"\n[model]\nkind = "bapst"\n')
    config = load_config(path)
    assert config.data.dataset == dataset.resolve()
    assert config.train.augment is True  # cube symmetries by default for the Bapst model
    assert config.model == resolve_model_section({"kind": "bapst"})
    for text, message in [("[data]\n[model]\nkind = 'bapst'\n", "lacks the key 'dataset'"),
                          ("[data]\ndataset = 'x'\n", "lacks the key 'kind'"),
                          ("[data]\ndataset = 'x'\n[model]\nkind = 'bapst'\n[optim]\n", "unknown section"),
                          ("[data\n", "not valid TOML")]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml")


def test_registry_builds_every_kind_and_rejects_unknown_keys():
    assert type(build_model({"kind": "equivariant", "l_max": 0, "channels": 4, "n_layers": 1}, 3)).__name__ \
        == "EquivariantPropensityModel"
    assert build_model({"kind": "bapst", "mlp_hidden": [8, 8]}, 3).config.mlp_hidden == (8, 8)
    assert build_model({"kind": "ridge"}, 3).n_timescales == 3
    with pytest.raises(ValueError, match=r"unknown bapst model option\(s\) \['n_layers'\].*valid options"):
        build_model({"kind": "bapst", "n_layers": 3}, 3)
    with pytest.raises(ValueError, match="model kind must be one of"):
        build_model({"kind": "mace"}, 3)
    with pytest.raises(ValueError, match="n_timescales"):
        build_model({"kind": "equivariant", "n_timescales": 3}, 3)


# ------------------------------------------------------------------ command line


def test_cli_train(tmp_path, dataset, monkeypatch, capsys):
    config = write_config(tmp_path, dataset, "bapst")
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(config), "--epochs", "2"]) == 0
    run = tmp_path / "runs" / "bapst"  # the default run directory: runs/<config stem>
    assert [row["epoch"] for row in read_metrics(run)] == ["1", "2"]
    assert "best.pt" in capsys.readouterr().out
    assert main(["train", str(config), "--run-dir", str(tmp_path / "other"), "--no-resume", "--epochs", "1"]) == 0
    assert (tmp_path / "other" / "best.pt").is_file()

    config = write_config(tmp_path, dataset, "bapst", train={"lr": 0.0})
    assert main(["train", str(config)]) == 2
    assert "lr must be positive" in capsys.readouterr().err
