"""The configurations of a run: ``[data] split``, and ``validation_dataset`` / ``test_dataset``
(GlassBench's convention: train on one set of files, test on another)."""

from __future__ import annotations

import json
import os

import pytest
from factories import synthetic_configuration, write_config, write_dataset

from equiglass.analysis.evaluate import evaluate
from equiglass.data.format import load_dataset
from equiglass.errors import ConfigError, DataError
from equiglass.training.config import load_config
from equiglass.training.loop import train
from equiglass.training.split import split_graphs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def other_dataset(directory, n_configurations: int):
    """A dataset of other configurations (not those of the ``dataset`` fixture), same times."""
    return write_dataset(directory, n_configurations, change=lambda k, fields: synthetic_configuration(20 + k))


def test_validation_and_test_datasets(tmp_path, dataset):
    validation, test = other_dataset(tmp_path / "validation", 3), other_dataset(tmp_path / "test", 2)
    configs = tmp_path / "configs"
    config_path = write_config(configs, dataset, "equivariant", data={
        "split": [8, 0, 0],
        "validation_dataset": os.path.relpath(validation, configs),
        "test_dataset": os.path.relpath(test, configs),
    })
    config = load_config(config_path)
    assert config.data.validation_dataset == validation.resolve() and config.data.test_dataset == test.resolve()

    split = split_graphs(config, load_dataset(dataset))
    assert split.validation.dataset.directory.resolve() == validation.resolve() and len(split.validation) == 3
    assert split.train.dataset.directory.resolve() == dataset.resolve() and len(split.train) == 8

    run = train(config, tmp_path / "run", progress=False).run_dir
    record = json.loads((run / "run.json").read_text())
    assert record["split"] == {"train": list(range(8)), "validation": [0, 1, 2], "test": []}
    assert (record["validation_dataset"], record["test_dataset"]) == (str(validation.resolve()), str(test.resolve()))
    assert {row.n_configurations for row in evaluate(run, test).rows} == {2}
    with pytest.raises(ValueError, match=f"test_dataset {test.resolve()}"):
        evaluate(run, dataset)


@pytest.mark.parametrize(("data", "message"), [
    ({"split": [6, 2, 0], "validation_dataset": "VALIDATION"}, "validation configurations .* make its validation size 0"),
    ({"split": [6, 1, 1], "test_dataset": "VALIDATION"}, "test configurations .* make its test size 0"),
    ({"split": [8, 0, 0]}, r"split needs validation configurations \(or a validation_dataset\)"),
])
def test_split_contradicting_a_dataset_is_refused(tmp_path, dataset, data, message):
    validation = other_dataset(tmp_path / "validation", 2)
    data = {key: os.path.relpath(validation, tmp_path / "configs") if value == "VALIDATION" else value
            for key, value in data.items()}
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path / "configs", dataset, data=data))


def test_validation_dataset_with_other_times_is_named(tmp_path, dataset):
    validation = other_dataset(tmp_path / "validation", 2)
    manifest = json.loads((validation / "manifest.json").read_text())
    manifest["times"] = [2 * t for t in manifest["times"]]
    (validation / "manifest.json").write_text(json.dumps(manifest))
    config = load_config(write_config(tmp_path / "configs", dataset, data={
        "split": [8, 0, 0], "validation_dataset": os.path.relpath(validation, tmp_path / "configs")}))
    with pytest.raises(DataError, match=r"validation/manifest.json: stores times .* the training dataset"):
        split_graphs(config, load_dataset(dataset))
