"""``equiglass predict``'s output directory: never inside a dataset, predictions tied to their checkpoint and dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import write_config

from equiglass.analysis.predict import PROVENANCE_NAME, configuration_prediction, predict
from equiglass.cli import main
from equiglass.data.format import load_dataset
from equiglass.errors import DataError
from equiglass.training.checkpoint import load_checkpoint
from equiglass.training.loop import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory, dataset) -> Path:
    """A one-epoch ridge run on the synthetic dataset."""
    directory = tmp_path_factory.mktemp("run")
    config = write_config(directory / "configs", dataset, "ridge")
    return train(config, directory / "ridge", progress=False).run_dir


@pytest.fixture(scope="module")
def other_checkpoint(tmp_path_factory, run) -> Path:
    """Another checkpoint: the run's best.pt with its normalisation mean shifted by 1."""
    content = torch.load(run / "best.pt", weights_only=True)
    content["normalisation"]["mean"] = [value + 1.0 for value in content["normalisation"]["mean"]]
    path = tmp_path_factory.mktemp("other") / "other.pt"
    torch.save(content, path)
    return path


def snapshot(directory: Path) -> dict[str, bytes]:
    """File name -> content of every file of ``directory``."""
    return {path.name: path.read_bytes() for path in directory.iterdir() if path.is_file()}


def test_predictions_are_the_models_and_record_their_provenance(tmp_path, run, dataset):
    out = tmp_path / "predictions"
    report = predict(run, dataset, out)
    trained = load_checkpoint(run)
    opened = load_dataset(dataset)
    for index, path in enumerate(opened.files):
        with np.load(out / path.name) as archive:
            expected = configuration_prediction(trained, opened.read(index))
            np.testing.assert_array_equal(archive["prediction"], expected["prediction"])
    assert len(report.written) == len(opened)
    record = json.loads((out / PROVENANCE_NAME).read_text())
    assert record["checkpoint"] == str((run / "best.pt").resolve())
    assert record["dataset"] == str(dataset.resolve()) and len(record["dataset_sha256"]) == 64


@pytest.mark.parametrize("overwrite", [False, True])
def test_the_dataset_directory_is_refused(run, dataset, overwrite):
    before = snapshot(dataset)
    with pytest.raises(DataError, match="holds a dataset"):
        predict(run, dataset, dataset, overwrite=overwrite)
    assert snapshot(dataset) == before


def test_a_directory_inside_the_dataset_is_refused(run, dataset):
    with pytest.raises(DataError, match="inside the dataset"):
        predict(run, dataset, dataset / "predictions")
    assert not (dataset / "predictions").exists()


def test_the_directory_of_one_configuration_file_is_refused(run, dataset, tmp_path):
    source = tmp_path / "one.npz"
    shutil.copy(dataset / "configuration_00000.npz", source)
    with pytest.raises(DataError, match="would replace it"):
        predict(run, source, tmp_path)
    assert source.read_bytes() == (dataset / "configuration_00000.npz").read_bytes()


def test_predictions_of_another_checkpoint_are_refused_then_overwritten(tmp_path, run, other_checkpoint, dataset):
    out = tmp_path / "predictions"
    predict(other_checkpoint, dataset, out)
    stale = snapshot(out)
    with pytest.raises(DataError, match="holds predictions of checkpoint .*other.pt"):
        predict(run, dataset, out)
    assert snapshot(out) == stale

    report = predict(run, dataset, out, overwrite=True)
    assert len(report.written) == len(load_dataset(dataset)) and report.skipped == []
    fresh = tmp_path / "fresh"
    predict(run, dataset, fresh)
    assert snapshot(out) == snapshot(fresh)


def test_predictions_of_unknown_origin_are_refused(tmp_path, run, dataset):
    out = tmp_path / "predictions"
    out.mkdir()
    (out / "configuration_00000.npz").write_bytes(b"not ours")
    with pytest.raises(DataError, match="unknown origin"):
        predict(run, dataset, out)
    assert predict(run, dataset, out, overwrite=True).skipped == []


def test_cli_refuses_the_dataset_directory(run, dataset, capsys):
    before = snapshot(dataset)
    assert main(["predict", str(run), str(dataset), "--out", str(dataset), "--overwrite"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {dataset}: holds a dataset") and error.count("\n") == 1
    assert snapshot(dataset) == before
