"""Tests of equiglass.testing: the symmetry and compile helpers pass on the equivariant model and
fail on models broken on purpose.

Models are built in float64 (the fixture ``float64_default`` of conftest.py, requested for every
test of the module), so the symmetry tolerance is 1e-9.
"""

from __future__ import annotations

import pytest
import torch
from factories import CUTOFF, graph, random_configuration
from torch import nn
from torch_geometric.data import Data

from equiglass.nn import EquivariantConfig, EquivariantPropensityModel
from equiglass.testing import TRANSFORMATIONS, assert_no_graph_breaks, assert_symmetries, configuration_of

pytestmark = pytest.mark.usefixtures("float64_default")


class AddToOutput(nn.Module):
    """``model(data) + extra(data)``: a model made to break a symmetry on purpose."""

    def __init__(self, model: nn.Module, extra) -> None:
        super().__init__()
        self.model, self.extra = model, extra

    def forward(self, data: Data) -> torch.Tensor:
        return self.model(data) + self.extra(data)


@pytest.fixture(scope="module")
def data() -> Data:
    """40 particles in a 4.5³ box (about 12 neighbours each), float64."""
    return graph(*random_configuration(40, 4.5, seed=1))


def default_model() -> EquivariantPropensityModel:
    """The default equivariant model (5 layers, l <= 2, fused tensor product) in eval mode."""
    torch.manual_seed(0)
    return EquivariantPropensityModel(EquivariantConfig()).eval()


def test_symmetry_helpers_pass_on_the_default_equivariant_model(data):
    report = assert_symmetries(default_model(), data, cutoff=CUTOFF)
    assert report.passed and report.tolerance == 1e-9
    assert {row.transformation for row in report.deviations} == set(TRANSFORMATIONS)


#: Breaks rotation, translation (positions re-wrapped) and periodic images, not permutation.
ABSOLUTE_X = lambda data: 0.01 * data.pos[:, :1]  # noqa: E731
#: Breaks permutation only: depends on the particles' order.
ORDER = lambda data: 1e-3 * torch.arange(data.num_nodes, dtype=data.pos.dtype)[:, None]  # noqa: E731


@pytest.mark.parametrize(
    ("extra", "broken"),
    [(ABSOLUTE_X, ["rotation", "translation", "periodic image"]), (ORDER, ["permutation"])],
    ids=["absolute-x", "particle-order"],
)
def test_symmetry_helpers_fail_on_a_broken_model(data, extra, broken: list[str]):
    model = AddToOutput(default_model(), extra)
    for symmetry in TRANSFORMATIONS:
        if symmetry in broken:
            with pytest.raises(AssertionError, match=f"symmetries broken or not applied: {symmetry} \\(output\\)"):
                assert_symmetries(model, data, cutoff=CUTOFF, symmetries=(symmetry,), trials=1)
        else:
            assert_symmetries(model, data, cutoff=CUTOFF, symmetries=(symmetry,), trials=1)


def test_symmetry_helpers_reject_unknown_symmetries_batches_and_cells(data):
    with pytest.raises(ValueError, match="unknown symmetries"):
        assert_symmetries(default_model(), data, symmetries=("reflection",))
    for box in (data.box.repeat(2, 1), torch.diag(data.box[0])[None]):
        with pytest.raises(ValueError, match="3 orthorhombic box sides"):
            configuration_of(Data(pos=data.pos, types=data.types, box=box))


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_default_equivariant_model_compiles_without_graph_breaks(data, mode: str):
    """As MACE checks its models: TorchDynamo captures the whole forward (eval, and training
    mode with BatchNorm batch statistics) in one graph, float32 as in training."""
    model = default_model().float().train(mode == "train")
    data = data.clone()
    data.pos, data.box, data.potential_energy = data.pos.float(), data.box.float(), data.potential_energy.float()
    assert_no_graph_breaks(model, data)


class GraphBreak(nn.Module):
    """``2 pos + 1``, with a graph break in the middle."""

    def forward(self, data: Data) -> torch.Tensor:
        doubled = 2 * data.pos
        torch._dynamo.graph_break()
        return doubled + 1


def test_assert_no_graph_breaks_fails_on_a_graph_break(data):
    with pytest.raises(AssertionError, match=r"2 graphs, 1 graph break\(s\) in GraphBreak:\n.*graph_break\(\)"):
        assert_no_graph_breaks(GraphBreak(), data)
