"""Transfer learning (equiglass.training.transfer): backbone from another run, decoder retrained alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from factories import write_config

from equiglass.errors import CheckpointError, ConfigError
from equiglass.training.checkpoint import read_checkpoint
from equiglass.training.config import load_config
from equiglass.training.loop import train
from equiglass.training.transfer import is_decoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, dataset) -> Path:
    directory = tmp_path_factory.mktemp("source")
    return train(write_config(directory, dataset, "equivariant", train={"epochs": 2}), directory / "run",
                 progress=False).run_dir


@pytest.mark.parametrize("kind", ["equivariant", "bapst"])
def test_frozen_backbone_is_kept_and_only_the_decoder_trains(tmp_path, dataset, source_run, kind):
    if kind == "bapst":
        source_run = train(write_config(tmp_path / "source", dataset, "bapst"), tmp_path / "bapst_source",
                           progress=False).run_dir
    config = write_config(tmp_path, dataset, kind, train={"epochs": 2, "init_from": str(source_run),
                                                          "freeze_backbone": True})
    result = train(config, tmp_path / "transfer", progress=False)
    source = read_checkpoint(source_run / "best.pt")["model_state"]
    transferred = read_checkpoint(result.last)["model_state"]
    backbone = [name for name in source if not is_decoder(name)]
    decoder = [name for name in source if is_decoder(name) and source[name].is_floating_point()]
    assert backbone and decoder
    for name in backbone:  # parameters and normalisation statistics untouched
        assert torch.equal(source[name], transferred[name]), name
    assert any(not torch.equal(source[name], transferred[name]) for name in decoder)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_fine_tuning_without_freezing_moves_the_backbone(tmp_path, dataset, source_run):
    config = write_config(tmp_path, dataset, "equivariant", train={"epochs": 1, "init_from": str(source_run)})
    result = train(config, tmp_path / "fine_tune", progress=False)
    source = read_checkpoint(source_run / "best.pt")["model_state"]
    tuned = read_checkpoint(result.last)["model_state"]
    assert any(not torch.equal(source[name], tuned[name]) for name in source if not is_decoder(name))


def test_transfer_config_errors(tmp_path, dataset, source_run):
    with pytest.raises(ConfigError, match="freeze_backbone needs init_from"):
        load_config(write_config(tmp_path / "a", dataset, "equivariant", train={"freeze_backbone": True}))
    with pytest.raises(ConfigError, match="ridge"):
        load_config(write_config(tmp_path / "b", dataset, "ridge", train={"init_from": str(source_run)}))
    other = write_config(tmp_path / "c", dataset, "equivariant", model_options={"channels": 6},
                         train={"init_from": str(source_run)})
    with pytest.raises(CheckpointError, match="differs"):
        train(other, tmp_path / "other", progress=False)
    with pytest.raises(CheckpointError, match="best.pt|does not exist|no such"):
        train(write_config(tmp_path / "d", dataset, "equivariant", train={"init_from": str(tmp_path / "none")}),
              tmp_path / "missing", progress=False)
