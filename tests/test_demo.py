"""Tests of equiglass.demo and ``equiglass demo``: the shipped configs, and an end-to-end run on tiny configs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from factories import MODELS, write_config

from equiglass.cli import main
from equiglass.demo import ALL_DEMO_MODELS, DEMO_MODELS, demo_config
from equiglass.resources import DEMO_DATASET
from equiglass.training.checkpoint import load_checkpoint
from equiglass.training.config import load_config


def test_shipped_demo_configs_train_on_the_demo_dataset():
    for name in ALL_DEMO_MODELS:
        config = load_config(demo_config(name))
        assert config.data.dataset == DEMO_DATASET.resolve()
        assert config.kind == MODELS[name]["kind"]
    assert load_config(demo_config("equivariant_l0")).model["l_max"] == 0
    assert (DEMO_DATASET / "manifest.json").is_file()


def test_a_missing_demo_config_is_a_clear_error(tmp_path, capsys):
    assert main(["demo", "--configs", str(tmp_path), "--out", str(tmp_path / "runs")]) == 2
    assert "no demo config" in capsys.readouterr().err


def epochs_trained(run: Path) -> int:
    with open(run / "metrics.csv") as stream:
        return len(list(csv.DictReader(stream)))


@pytest.mark.slow
def test_demo_end_to_end_on_tiny_configs_then_resume(tmp_path, inherent_dataset, capsys):
    configs = tmp_path / "configs"
    for name in DEMO_MODELS:  # tiny models on the tiny dataset, named as the demo expects
        path = write_config(configs, inherent_dataset, name, data={"split": [4, 2, 2], "with_is_displacement": True})
        path.rename(configs / f"demo_{name}.toml")
    out = tmp_path / "runs"

    assert main(["demo", "--out", str(out), "--epochs", "1", "--configs", str(configs)]) == 0
    printed = capsys.readouterr().out
    for name in DEMO_MODELS:
        assert load_checkpoint(out / name).model_section["kind"] == MODELS[name]["kind"]
        assert epochs_trained(out / name) == 1
        assert f"| {name} | A | 2 |" in printed and f"| {name} | B | 2 |" in printed
    assert "per-configuration" in printed and "wall time:" in printed
    assert {"pearson.md", "pearson.csv", "pearson.png"} <= {path.name for path in out.iterdir()}
    test_configuration = json.loads((out / DEMO_MODELS[0] / "run.json").read_text())["split"]["test"][0]
    assert (out / f"propensity_configuration_{test_configuration:05d}.png").is_file()  # the first model, held out
    assert len((out / "pearson.md").read_text().splitlines()) == 4 + 2 * len(DEMO_MODELS)

    # rerun with more epochs: the networks continue from their last.pt, the ridge fit is kept
    assert main(["demo", "--out", str(out), "--epochs", "2", "--configs", str(configs)]) == 0
    assert {name: epochs_trained(out / name) for name in DEMO_MODELS} == {
        "equivariant": 2, "bapst": 2, "ridge": 1, "displacement": 1, "force": 1}
