"""Tests of the compiled CPU kernel of the convolution's message sum (equiglass.nn.message_sum).

The kernel is compared with a direct PyTorch sum over edges (float64, every gradient,
edges in any order, nodes with no edge, several threads) and, through the whole model, with
the plain e3nn tensor product in tests/nn/test_nn_equivariant.py. Here: its own contract,
and what happens where it cannot be compiled.
"""

from __future__ import annotations

import pytest
import torch
from factories import SMALL, graph, random_configuration

from equiglass.nn import EquivariantConfig, EquivariantPropensityModel
from equiglass.nn import message_sum as kernel
from equiglass.nn.convolution import FusedConvolution, SharedEdges, SphericalCouplings

pytestmark = [
    pytest.mark.usefixtures("float64_default"),
    pytest.mark.skipif(not kernel.kernel_available(), reason="no C compiler: the kernel cannot be built"),
]


def direct_sum(x, weights, couplings, table, edge_index):
    """The message sum written edge by edge with PyTorch (channels-last layouts; one output block per path)."""
    source, target = edge_index
    blocks = {}
    for row, path_weight in zip(table.paths.tolist(), table.path_weights.tolist()):
        in_offset, d_in, coupling, out_offset, d_out, weight_offset, mul = row
        features = x[source, in_offset : in_offset + d_in * mul].reshape(-1, d_in, mul)
        w = weights[:, weight_offset : weight_offset + mul]
        messages = path_weight * torch.einsum("eu,eiu,eik->eku", w, features, couplings[coupling])
        blocks[out_offset] = x.new_zeros(x.shape[0], d_out * mul).index_add(0, target, messages.reshape(-1, d_out * mul))
    return torch.cat([blocks[offset] for offset in sorted(blocks)], dim=1)


@pytest.fixture
def layer_inputs():
    """A middle layer of a small O(3) model (l_max = 2, 4 channels: 11 paths) on 30 particles,
    with two extra nodes that no edge touches, and every input requiring gradients."""
    torch.manual_seed(3)
    data = graph(*random_configuration(30, 4.5, seed=7))
    model = EquivariantPropensityModel(EquivariantConfig(**{**SMALL, "l_max": 2}))
    convolution = model.blocks[1].convolution
    assert isinstance(convolution, FusedConvolution) and len(convolution.paths) == 11
    vectors = torch.randn(data.edge_index.shape[1], 3)
    couplings = SphericalCouplings(convolution.irreps_sh, convolution.triples)(model.spherical_harmonics(vectors))
    n_nodes = 32
    x = torch.randn(n_nodes, convolution.path_table.in_dim, requires_grad=True)
    weights = torch.randn(data.edge_index.shape[1], convolution.path_table.weight_dim, requires_grad=True)
    coupling_list = [couplings[triple].detach().requires_grad_() for triple in convolution.triples]
    return x, weights, coupling_list, convolution.path_table, data.edge_index, n_nodes


def test_kernel_equals_the_direct_sum_and_its_gradients(layer_inputs):
    x, weights, couplings, table, edge_index, n_nodes = layer_inputs
    neighbourhoods = kernel.Neighbourhoods.of(edge_index, n_nodes)
    assert neighbourhoods.order is None  # neighbour_list sorts the edges by centre
    got = kernel.message_sum(x, weights, couplings, table, neighbourhoods)
    want = direct_sum(x, weights, couplings, table, edge_index)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert got[30:].abs().max() == 0  # nodes without edges sum nothing
    grad = torch.randn_like(got)
    inputs = [x, weights, *couplings]
    got_grads = torch.autograd.grad(got, inputs, grad)
    want_grads = torch.autograd.grad(want, inputs, grad)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-12)


def test_kernel_takes_edges_in_any_order_and_any_output_gradient(layer_inputs):
    """Edges shuffled (no longer sorted by centre: the kernel visits them through ``order``), and
    a non-contiguous output gradient (``out.sum()``'s is a broadcast scalar)."""
    x, weights, couplings, table, edge_index, n_nodes = layer_inputs
    permutation = torch.randperm(edge_index.shape[1], generator=torch.Generator().manual_seed(0))
    edge_index = edge_index[:, permutation]
    weights = weights.detach()[permutation].requires_grad_()
    couplings = [coupling.detach()[permutation].requires_grad_() for coupling in couplings]
    neighbourhoods = kernel.Neighbourhoods.of(edge_index, n_nodes)
    assert neighbourhoods.order is not None
    got = kernel.message_sum(x, weights, couplings, table, neighbourhoods)
    want = direct_sum(x, weights, couplings, table, edge_index)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    inputs = [x, weights, *couplings]
    for g, w in zip(torch.autograd.grad(got.sum(), inputs), torch.autograd.grad(want.sum(), inputs)):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-12)


@pytest.mark.parametrize("threads", [1, 3, 64])
def test_kernel_result_does_not_depend_on_the_thread_count(layer_inputs, threads: int):
    """More threads than centres included; the sums at the sources differ by rounding at most."""
    x, weights, couplings, table, edge_index, n_nodes = layer_inputs
    neighbourhoods = kernel.Neighbourhoods.of(edge_index, n_nodes)
    previous = torch.get_num_threads()
    results = []
    try:
        for count in (1, threads):
            torch.set_num_threads(count)
            out = kernel.message_sum(x, weights, couplings, table, neighbourhoods)
            results.append((out, *torch.autograd.grad(out.sum(), [x, weights])))
    finally:
        torch.set_num_threads(previous)
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_model_on_the_kernel_equals_the_model_on_pytorch_operators(monkeypatch):
    """The whole default-layout model (float32, training mode) on both message sums of the fused
    tensor product: same outputs and parameter gradients to float32 rounding."""
    torch.set_default_dtype(torch.float32)
    data = graph(*random_configuration(60, 4.5, seed=2))
    data.pos, data.box = data.pos.float(), data.box.float()
    torch.manual_seed(0)
    model = EquivariantPropensityModel(EquivariantConfig(**{**SMALL, "l_max": 2})).train()
    results = []
    for enabled in ("1", "0"):
        monkeypatch.setenv("EQUIGLASS_COMPILED_KERNELS", enabled)
        model.zero_grad()
        out = model(data)
        (out**2).sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    (kernel_out, kernel_grads), (torch_out, torch_grads) = results
    torch.testing.assert_close(kernel_out, torch_out, rtol=1e-5, atol=1e-5)
    for got, want in zip(kernel_grads, torch_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_without_a_compiler_the_convolution_warns_once_and_uses_pytorch(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("EQUIGLASS_CACHE_DIR", str(tmp_path / "cache"))
    kernel._library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="could not compile message_sum.c"):
            assert not kernel.kernel_available()
        model = EquivariantPropensityModel(EquivariantConfig(**SMALL))
        edges = SharedEdges.of(model.spherical_couplings, torch.randn(10, 9), torch.zeros(2, 10, dtype=torch.long), 4)
        assert edges.neighbourhoods is None
        assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # no partial file left
    finally:
        kernel._library.cache_clear()


def test_the_kernel_is_compiled_once_into_the_cache(monkeypatch, tmp_path):
    """A fresh cache gets one library (no partial files left); a second load reuses it."""
    monkeypatch.setenv("EQUIGLASS_CACHE_DIR", str(tmp_path))
    kernel._library.cache_clear()
    try:
        assert kernel.kernel_available()
        built = sorted(tmp_path.iterdir())
        assert len(built) == 1 and built[0].suffix == ".so"
        stamp = built[0].stat().st_mtime_ns
        kernel._library.cache_clear()
        assert kernel.kernel_available()
        assert sorted(tmp_path.iterdir()) == built and built[0].stat().st_mtime_ns == stamp
    finally:
        kernel._library.cache_clear()
