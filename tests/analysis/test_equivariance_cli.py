"""Tests of equiglass.analysis.equivariance and ``equiglass check-equivariance``.

Tiny models, trained one epoch (or untrained from a config or a bare kind), checked on a
configuration of the synthetic ``dataset`` fixture of conftest.py (300 particles at density 1.2,
about 40 neighbours each). The check must pass on correct models and fail on deliberately
broken ones, which proves it can fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from factories import write_config
from torch import nn
from torch_geometric.data import Data

import equiglass.analysis.equivariance
from equiglass.analysis.equivariance import (
    TRANSFORMATIONS,
    Configuration,
    ModelSource,
    check_equivariance,
    check_source,
    default_dtype,
)
from equiglass.cli import main
from equiglass.data.format import load_dataset
from equiglass.nn.registry import build_model

#: l_max = 2 and a middle layer: tensor products of l > 0 features (1x1->2, 2x2->2, ...), whose
#: Clebsch-Gordan coefficients e3nn's TensorProduct stores as persistent buffers in the
#: checkpoint and uses in its forward: the plain e3nn path (the fused path computes its own
#: float64 tables and ignores them; its equivariance is tested in nn/test_nn_equivariant.py).
DEEP = {"l_max": 2, "n_layers": 3, "tensor_product": "e3nn"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, dataset) -> dict[str, Path]:
    """Model name -> run directory trained for one epoch."""
    from equiglass.training.loop import train

    directory = tmp_path_factory.mktemp("runs")
    options = {"equivariant": DEEP}
    return {
        model: train(write_config(directory / "configs", dataset, model, model_options=options.get(model)),
                     directory / model, progress=False).run_dir
        for model in ("equivariant", "bapst", "ridge")
    }


@pytest.fixture(scope="module")
def configuration(dataset) -> Configuration:
    return Configuration.from_fields(load_dataset(dataset).read(0))


class AddsACoordinate(nn.Module):
    """Broken: adds the raw x coordinate of each particle to the outputs (not translation,
    rotation or periodic-image invariant)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, data: Data) -> torch.Tensor:
        return self.model(data) + data.pos[:, :1]


class IgnoresLatticeShifts(nn.Module):
    """Broken: uses un-wrapped absolute position differences, dropping the periodic lattice shifts
    (rotation and permutation invariant, but not translation or periodic-image invariant)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, data: Data) -> torch.Tensor:
        unwrapped = data.clone()
        unwrapped.edge_shift = torch.zeros_like(data.edge_shift)
        return self.model(unwrapped)


def test_trained_equivariant_model_passes_in_float64_with_every_feature_checked(runs, capsys):
    report = check_source(runs["equivariant"], trials=2)
    assert report.passed and report.dtype == torch.float64 and report.tolerance == 1e-9
    for name in TRANSFORMATIONS:
        for quantity in ("output", "features l=0", "features l>0"):
            row = report.deviation(name, quantity)
            assert row.max_abs < 1e-12 and row.scale > 1e-3, (name, quantity)  # non-vacuous, exact to round-off

    # the float32 checkpoint holds the Clebsch-Gordan coefficients rounded to float32: loaded as they
    # are, they break rotation equivariance far above round-off; the check rebuilds them exactly
    source = ModelSource.read(runs["equivariant"])
    stored = [name for name, value in source.state.items() if "_w3j_" in name and value.dtype == torch.float32]
    assert stored
    with default_dtype(torch.float64):
        naive = build_model(source.model_section, 3)
    naive.load_state_dict(source.state)
    configuration = source.configuration(load_dataset(source.dataset).read(0))
    assert check_equivariance(naive, configuration, 2.0, trials=2).deviation("rotation", "features l>0").max_abs > 1e-11

    assert main(["check-equivariance", str(runs["equivariant"]), "--trials", "1"]) == 0
    printed = capsys.readouterr().out
    assert "float64" in printed and "features l>0" in printed and printed.rstrip().endswith("PASSED")
    assert main(["check-equivariance", str(runs["equivariant"] / "best.pt"), "--dtype", "float32", "--trials", "1"]) == 0
    assert "float32" in capsys.readouterr().out


def test_untrained_l0_model_from_a_config_passes(tmp_path, dataset, capsys):
    config = write_config(tmp_path, dataset, "equivariant_l0")
    assert main(["check-equivariance", str(config), "--trials", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"untrained equivariant model of {config}" in printed and str(dataset) in printed  # the config's dataset
    assert "features l=0" in printed and "features l>0" not in printed  # l_max = 0: no l > 0 features exist


def test_bapst_reports_its_rotation_deviation_but_passes(runs, dataset, capsys):
    report = check_source(runs["bapst"], trials=2)
    assert report.deviation("rotation").max_abs > 1e-6 and not report.deviation("rotation").enforced
    assert report.deviation("translation").max_abs < 1e-12 and report.passed
    # a bare kind: untrained, default hyper-parameters
    assert main(["check-equivariance", "bapst", "--dataset", str(dataset), "--trials", "1"]) == 0
    printed = capsys.readouterr().out
    assert "reported only" in printed and "not rotation invariant by design" in printed and "PASSED" in printed


def test_ridge_rotation_is_skipped_and_the_rest_passes(runs):
    report = check_source(runs["ridge"], trials=1)
    assert report.passed and report.deviation("rotation").skipped is not None
    assert report.deviation("periodic image").max_abs < 1e-12 and report.deviation("periodic image").scale > 0
    assert any("rotated lattice" in note for note in report.notes)


@pytest.mark.parametrize(
    ("broken", "failing"),
    [
        (AddsACoordinate, {"rotation", "translation", "periodic image"}),
        (IgnoresLatticeShifts, {"translation", "periodic image"}),
    ],
    ids=["adds-coordinate", "ignores-lattice-shifts"],
)
def test_broken_models_fail(runs, configuration, broken, failing):
    model = broken(ModelSource.read(runs["equivariant"]).build(torch.float64, 3))
    report = check_equivariance(model, configuration, 2.0, trials=2)
    assert not report.passed
    failed = {row.transformation for row in report.deviations if not row.passed(report.tolerance)}
    assert failed == failing
    assert report.deviation("permutation").max_abs < 1e-12


def test_cli_exits_non_zero_on_a_broken_model(runs, monkeypatch, capsys):
    build = ModelSource.build
    monkeypatch.setattr(equiglass.analysis.equivariance.ModelSource, "build",
                        lambda self, dtype, n: IgnoresLatticeShifts(build(self, dtype, n)))
    assert main(["check-equivariance", str(runs["equivariant"]), "--trials", "1"]) == 1
    printed = capsys.readouterr().out
    assert "FAIL" in printed and printed.rstrip().endswith("FAILED: deviations above tolerance")


def test_bad_sources_are_usage_errors(dataset, capsys):
    assert main(["check-equivariance", "no-such-kind", "--dataset", str(dataset)]) == 2
    assert "model kind must be one of" in capsys.readouterr().err
    assert main(["check-equivariance", "ridge", "--dataset", str(dataset)]) == 2  # an unfitted ridge cannot predict
    assert "fitted" in capsys.readouterr().err
