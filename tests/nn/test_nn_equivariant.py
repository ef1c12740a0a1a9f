"""Tests of equiglass.nn: radial encodings, the interaction block and the PCL22 equivariant model.

Everything runs in float64 with small models and graphs of a few dozen particles. e3nn
computes its Clebsch-Gordan buffers in the default dtype when a module is built, so
``.double()`` on a module built in float32 keeps float32-accurate coefficients (errors
~1e-7); the fixture ``float64_default`` of conftest.py, requested for every test of the module,
sets the default dtype for the duration of each test only (never at import).
"""

from __future__ import annotations

import math

import pytest
import torch
from e3nn import o3
from e3nn.util.test import assert_equivariant
from factories import CUTOFF, SMALL, Configuration, graph, random_configuration
from torch_geometric.data import Batch, Data

from equiglass.data.graphs import box_matrix
from equiglass.nn import (
    BesselBasis,
    EquivariantConfig,
    EquivariantPropensityModel,
    InteractionBlock,
    PolynomialCutoff,
    RadialEmbedding,
)
from equiglass.nn.cuequivariance import cuda_kernels_available, cuequivariance_available
from equiglass.testing import assert_symmetries

#: (parity, l_max, use_potential_energy) variants checked for symmetry.
VARIANTS = [(True, 2, False), (True, 2, True), (False, 2, False), (True, 0, False)]
VARIANT_IDS = ["O3-l2", "O3-l2-energy", "SO3-l2", "l0"]
TOLERANCE = 1e-9

pytestmark = pytest.mark.usefixtures("float64_default")


def make_model(seed: int = 0, **overrides) -> EquivariantPropensityModel:
    """A small float64 model in eval mode with non-trivial BatchNorm running statistics."""
    torch.manual_seed(seed)
    model = EquivariantPropensityModel(EquivariantConfig(**{**SMALL, **overrides})).double()
    model.embedding.set_energy_statistics(-6.0, 1.0)
    model.train()
    with torch.no_grad():
        for k in range(3):
            data = graph(*random_configuration(60, 4.5, seed=100 + k))
            model(_displaced(data, k) if model.config.use_is_displacement else data)
    return model.eval()


def _displaced(data: Data, seed: int = 0) -> Data:
    """``data`` with a random displacement from the inherent state of every particle (``is_displacement``)."""
    displaced = data.clone()
    generator = torch.Generator().manual_seed(seed)
    displaced.is_displacement = 0.1 * torch.randn(data.num_nodes, 3, generator=generator, dtype=torch.float64)
    return displaced


@pytest.fixture(scope="module")
def configuration() -> Configuration:
    """40 particles in a 4.5³ box: about 12 neighbours each, pairs across the faces."""
    return random_configuration(40, 4.5, seed=1)


def variant_model(parity: bool, l_max: int, energy: bool) -> EquivariantPropensityModel:
    return make_model(parity=parity, l_max=l_max, use_potential_energy=energy)


# --------------------------------------------------------------------------- radial encodings


def test_polynomial_cutoff_is_one_at_zero_and_vanishes_smoothly_at_the_cutoff():
    envelope = PolynomialCutoff(CUTOFF, p=6)
    r = torch.tensor([0.0, CUTOFF, CUTOFF + 0.3], dtype=torch.float64, requires_grad=True)
    values = envelope(r)
    (gradient,) = torch.autograd.grad(values.sum(), r)
    assert values.tolist() == [1.0, 0.0, 0.0]
    assert gradient[1:].abs().max() < 1e-12
    # value and slope go to zero as (r_c - r)^3 and (r_c - r)^2 from below
    below = torch.tensor([CUTOFF - 1e-3], dtype=torch.float64, requires_grad=True)
    value = envelope(below)
    (slope,) = torch.autograd.grad(value.sum(), below)
    assert 0 < value.item() < 1e-6 and abs(slope.item()) < 1e-3
    inside = envelope(torch.linspace(0, CUTOFF, 201, dtype=torch.float64))
    assert torch.all(inside >= 0) and torch.all(inside <= 1) and torch.all(inside.diff() <= 1e-15)


def test_bessel_basis_is_finite_and_smooth_at_small_r():
    basis = BesselBasis(CUTOFF, num_basis=8)
    r = torch.tensor([0.0, 1e-9, 1e-4, 1.0], dtype=torch.float64, requires_grad=True)
    values = basis(r)
    (gradient,) = torch.autograd.grad(values.sum(), r)
    assert values.shape == (4, 8)
    assert torch.isfinite(values).all() and torch.isfinite(gradient).all()
    limit = 2 * math.pi * torch.arange(1, 9, dtype=torch.float64) / CUTOFF**2
    torch.testing.assert_close(values[0], limit)
    torch.testing.assert_close(values[1], limit)
    r_one = 1.0  # at r = 1 the definition 2/r_c sin(n pi r / r_c) / r applies directly
    direct = 2 / CUTOFF * torch.sin(torch.arange(1, 9, dtype=torch.float64) * math.pi * r_one / CUTOFF) / r_one
    torch.testing.assert_close(values[3], direct)


def test_radial_embedding_is_the_basis_times_the_envelope_and_zero_beyond_the_cutoff():
    embedding = RadialEmbedding(CUTOFF, num_basis=6)
    r = torch.tensor([0.5, 1.9, CUTOFF, 2.5], dtype=torch.float64)
    expected = BesselBasis(CUTOFF, 6)(r) * PolynomialCutoff(CUTOFF)(r)[:, None]
    torch.testing.assert_close(embedding(r), expected)
    assert torch.all(embedding(r)[2:] == 0)


# --------------------------------------------------------------------------- equivariance


@pytest.mark.parametrize("parity", [True, False], ids=["O3", "SO3"])
def test_interaction_block_is_equivariant(parity: bool):
    """The block alone (training-mode BatchNorm included), on random l <= 2 features and edges."""
    config = EquivariantConfig(**SMALL, parity=parity)
    torch.manual_seed(0)
    irreps = config.hidden_irreps
    block = InteractionBlock(irreps, irreps, config.irreps_sh, config.num_basis, (8,), 5.0).double()
    harmonics = o3.SphericalHarmonics(config.irreps_sh, True, "component", irreps_in="1o" if parity else "1e")
    radial = RadialEmbedding(CUTOFF, config.num_basis)
    n, generator = 12, torch.Generator().manual_seed(3)
    edge_index = torch.randint(0, n, (2, 60), generator=generator)
    edge_index = edge_index[:, edge_index[0] != edge_index[1]]

    def convolve(x: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        return block(x, edge_index, harmonics(vectors), radial(vectors.norm(dim=-1)))

    x = irreps.randn(n, -1, dtype=torch.float64)
    vectors = torch.randn(edge_index.shape[1], 3, dtype=torch.float64)
    assert block.residual
    assert_equivariant(
        convolve, [x, vectors], [irreps, "1x1o"], [irreps], do_parity=parity, tolerance=TOLERANCE
    )


@pytest.mark.parametrize(("parity", "l_max", "energy"), VARIANTS, ids=VARIANT_IDS)
def test_model_is_equivariant_e3nn(configuration, parity: bool, l_max: int, energy: bool):
    """Outputs invariant, layer features equivariant, under rotations (and reflections with
    parity) of positions and lattice together, and translations."""
    model = variant_model(parity, l_max, energy)
    base = graph(*configuration)
    irreps_features = model.config.layer_irreps

    def run(pos: torch.Tensor, lattice: torch.Tensor) -> list[torch.Tensor]:
        data = base.clone()
        data.pos, data.box = pos, lattice.reshape(1, 3, 3)
        return [model(data), *model.node_features(data)]

    lattice = box_matrix(base.box).reshape(1, 9)
    outputs = [f"{model.config.n_timescales}x0e", *irreps_features]
    assert_equivariant(
        run, [base.pos, lattice], ["cartesian_points", "3x1o"], outputs, do_parity=parity, tolerance=TOLERANCE
    )


@pytest.mark.parametrize(("parity", "l_max", "energy"), VARIANTS, ids=VARIANT_IDS)
def test_rotations_of_positions_and_lattice(configuration, parity: bool, l_max: int, energy: bool):
    """Several random rotations: outputs unchanged, every layer's features rotate with D(R)."""
    model = variant_model(parity, l_max, energy)
    data = graph(*configuration)
    with torch.no_grad():
        reference = model(data)
        features = model.node_features(data)
        torch.manual_seed(7)
        for _ in range(4):
            rotation = o3.rand_matrix(dtype=torch.float64)
            rotated = data.clone()
            rotated.pos = data.pos @ rotation.T
            rotated.box = box_matrix(data.box) @ rotation.T
            torch.testing.assert_close(model(rotated), reference, rtol=0, atol=TOLERANCE)
            for irreps, x, x_rotated in zip(model.config.layer_irreps, features, model.node_features(rotated)):
                wigner = irreps.D_from_matrix(rotation)
                torch.testing.assert_close(x_rotated, x @ wigner.T, rtol=0, atol=TOLERANCE)
    if l_max > 0:  # the check above is not vacuous: the inner layers carry l > 0 features
        inner = features[0][:, model.config.hidden_irreps.count("0e") :]
        assert inner.abs().max() > 1e-3


@pytest.mark.parametrize(("parity", "l_max", "energy"), VARIANTS, ids=VARIANT_IDS)
def test_translation_permutation_and_periodic_images(configuration, parity: bool, l_max: int, energy: bool):
    model = variant_model(parity, l_max, energy)
    pos, box, types, potential = configuration
    with torch.no_grad():
        reference = model(graph(pos, box, types, potential))
        # translation, re-wrapped into the box, graph rebuilt
        shift = torch.tensor([1.7, -3.1, 0.4], dtype=torch.float64)
        translated = torch.remainder(pos + shift, box)
        out = model(graph(translated, box, types, potential))
        torch.testing.assert_close(out, reference, rtol=0, atol=TOLERANCE)
        # permutation of the particles, graph rebuilt
        order = torch.randperm(pos.shape[0], generator=torch.Generator().manual_seed(5))
        out = model(graph(pos[order], box, types[order], potential[order]))
        torch.testing.assert_close(out, reference[order], rtol=0, atol=TOLERANCE)
        # moving particles by lattice vectors (out of the box), graph rebuilt
        moved = pos.clone()
        moved[0] += box * torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
        moved[5] -= box * torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64)
        out = model(graph(moved, box, types, potential))
        torch.testing.assert_close(out, reference, rtol=0, atol=TOLERANCE)
        # inversion through the origin, re-wrapped: a symmetry only of the parity (O(3)) model
        mirrored = model(graph(torch.remainder(-pos, box), box, types, potential))
        if parity:
            torch.testing.assert_close(mirrored, reference, rtol=0, atol=TOLERANCE)
        elif l_max > 0:
            assert (mirrored - reference).abs().max() > 1e-6


# --------------------------------------------------------------------------- angular information


def _shell(directions: list[list[float]]) -> Data:
    """A centre at (5, 5, 5) in a 10³ box with neighbours at distance 1.5 in the given directions.

    The neighbours are more than the cutoff apart, so every particle's neighbour-distance
    multiset is the same whatever the directions: only angles differ between two shells.
    """
    unit = torch.nn.functional.normalize(torch.tensor(directions, dtype=torch.float64), dim=-1)
    pos = torch.cat([torch.zeros(1, 3, dtype=torch.float64), 1.5 * unit]) + 5.0
    n = pos.shape[0]
    types = torch.tensor([0] + [1] * (n - 1))
    data = graph(pos, torch.full((3,), 10.0, dtype=torch.float64), types, torch.zeros(n, dtype=torch.float64))
    assert data.edge_index.shape[1] == 2 * (n - 1), "neighbours must only see the centre"
    return data


TETRAHEDRON = [[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]
SQUARE = [[1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0]]


@pytest.mark.parametrize(
    ("first", "second"),
    [([[1, 0, 0], [0, 1, 0]], [[1, 0, 0], [-1, 0, 0]]), (TETRAHEDRON, SQUARE)],
    ids=["bent-vs-straight", "tetrahedron-vs-square"],
)
def test_model_uses_angles_and_the_invariant_ablation_does_not(first, second):
    """Same neighbour distances, different angles: l_max = 2 tells them apart, l_max = 0 cannot.

    (The tetrahedron and the square both have vanishing l = 1 moments; they differ at l = 2.)
    Angles reach the invariant outputs only through two hops (l > 0 features, then their
    contraction with the edge harmonics), so at random initialisation the differences are
    small (~1e-4, with a normaliser suited to 1-4 neighbours), but ten orders of magnitude
    above float64 round-off, which is all the l_max = 0 model shows.
    """
    one, two = _shell(first), _shell(second)
    with torch.no_grad():
        angular = make_model(l_max=2, avg_num_neighbours=2.0)
        assert (angular(one) - angular(two)).abs().max() > 1e-5
        invariant = make_model(l_max=0, avg_num_neighbours=2.0)
        torch.testing.assert_close(invariant(one), invariant(two), rtol=0, atol=1e-12)


def test_readout_norms_see_a_particles_own_bond_angles_at_one_layer():
    """One layer: the convolution's scalars depend on the centre's neighbour distances only, so a
    bent and a straight pair of bonds look the same; the norm of its l = 1 channels, a
    radially weighted |Σ_j Y_1(r̂_ij)| (the form of a pair-force sum), tells them apart at
    once, as a bond-orientational q_l does. Outputs stay invariant under rotations and mirrors."""
    bent, straight = _shell([[1, 0, 0], [0, 1, 0]]), _shell([[1, 0, 0], [-1, 0, 0]])
    with torch.no_grad():
        scalars = make_model(n_layers=1, avg_num_neighbours=2.0, readout_norms=False)
        torch.testing.assert_close(scalars(bent)[0], scalars(straight)[0], rtol=0, atol=1e-12)
        norms = make_model(n_layers=1, avg_num_neighbours=2.0, readout_norms=True)
        assert norms.config.layer_irreps == [norms.config.hidden_irreps]
        assert norms.decoder[0].in_features == norms.config.hidden_irreps.num_irreps
        assert (norms(bent)[0] - norms(straight)[0]).abs().max() > 1e-3

        model = make_model(readout_norms=True, readout_all_layers=True)
        data = graph(*random_configuration(90, 5.6, seed=3))
        reference = model(data)
        rotation = -o3.rand_matrix(dtype=torch.float64)  # a rotation times the inversion
        turned = data.clone()
        turned.pos, turned.box = data.pos @ rotation.T, box_matrix(data.box) @ rotation.T
        torch.testing.assert_close(model(turned), reference, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize(("parity", "l_max"), [(True, 2), (False, 2), (True, 0)], ids=["O3-l2", "SO3-l2", "l0"])
def test_the_displacement_from_the_inherent_state_is_a_vector_input(parity: bool, l_max: int):
    """``use_is_displacement``: the model sees ``|d|`` and, with l > 0 features, the direction of
    ``d`` relative to the bonds; every symmetry holds with ``d`` rotated (and permuted) with the
    particles; the fused tensor product still equals e3nn's with the first layer's vector inputs."""
    model = make_model(parity=parity, l_max=l_max, use_is_displacement=True)
    model.embedding.set_displacement_scale(0.1)
    data = _displaced(graph(*random_configuration(60, 4.5, seed=4)))
    assert_symmetries(model, data, cutoff=CUTOFF)
    with torch.no_grad():
        reference = model(data)
        turned = data.clone()  # d alone turned, the structure kept: another particle for an angular model
        turned.is_displacement = data.is_displacement @ o3.rand_matrix(dtype=torch.float64).T
        longer = data.clone()
        longer.is_displacement = 2 * data.is_displacement
        assert (model(longer) - reference).abs().max() > 1e-4
        difference = (model(turned) - reference).abs().max()
        if l_max > 0:
            assert difference > 1e-4
        else:
            assert difference < 1e-12
    assert model.embedding.irreps_out == o3.Irreps("4x0e" if l_max == 0 else f"4x0e+4x1{'o' if parity else 'e'}")
    with pytest.raises(ValueError, match="has no is_displacement"):
        model(graph(*random_configuration(60, 4.5, seed=4)))


@pytest.mark.parametrize("backend", ["fused", "fused-pytorch"])
def test_fast_tensor_product_takes_the_displacement_vectors(monkeypatch, backend: str):
    """The first layer's inputs are then ``C x 0e + C x 1o``, not scalars only."""
    data = _displaced(graph(*random_configuration(40, 4.5, seed=1)))
    assert_fast_tensor_product_equals_e3nn(monkeypatch, backend, data, use_is_displacement=True)


# --------------------------------------------------------------------------- smoothness, batching, size


def test_output_is_continuous_as_a_neighbour_crosses_the_cutoff():
    """A particle moves away from a small cluster through the cutoff: no jump, vanishing slope."""
    model = make_model()
    cluster = torch.tensor([[5.0, 5.0, 5.0], [6.2, 5.0, 5.0], [5.0, 6.1, 5.3]], dtype=torch.float64)
    box, types = torch.full((3,), 10.0, dtype=torch.float64), torch.tensor([0, 1, 0, 1])
    direction = torch.nn.functional.normalize(torch.tensor([-1.0, -0.3, -0.2], dtype=torch.float64), dim=0)

    def outputs(r: float) -> tuple[torch.Tensor, torch.Tensor]:
        pos = torch.cat([cluster, (cluster[0] + r * direction)[None]]).requires_grad_(True)
        out = model(graph(pos, box, types, torch.zeros(4, dtype=torch.float64)))
        (gradient,) = torch.autograd.grad(out.sum(), pos)
        return out.detach(), gradient

    inside, slope_inside = outputs(CUTOFF - 1e-4)
    outside, slope_outside = outputs(CUTOFF + 1e-4)
    far, _ = outputs(CUTOFF + 0.5)
    near, _ = outputs(CUTOFF - 0.3)
    assert (near - far).abs().max() > 1e-4, "the moving particle must matter inside the cutoff"
    assert (inside - outside).abs().max() < 1e-9
    torch.testing.assert_close(outside, far, rtol=0, atol=1e-12)
    assert (slope_inside[3] - slope_outside[3]).abs().max() < 1e-5


def test_edges_beyond_the_model_cutoff_contribute_nothing():
    """A graph built with a larger cutoff gives the same outputs: the envelope is exactly 0 there."""
    pos, box, types, energy = random_configuration(90, 5.6, seed=2)
    model = make_model()
    with torch.no_grad():
        exact = model(graph(pos, box, types, energy, cutoff=CUTOFF))
        wider = graph(pos, box, types, energy, cutoff=2.7)
        assert wider.edge_index.shape[1] > graph(pos, box, types, energy).edge_index.shape[1]
        torch.testing.assert_close(model(wider), exact, rtol=0, atol=1e-12)


def test_a_batch_of_two_graphs_equals_the_two_graphs_alone():
    model = make_model(use_potential_energy=True, readout_all_layers=True)
    first = graph(*random_configuration(40, 4.5, seed=11))
    second = graph(*random_configuration(55, 5.0, seed=12))
    with torch.no_grad():
        batched = model(Batch.from_data_list([first, second]))
        torch.testing.assert_close(batched, torch.cat([model(first), model(second)]), rtol=0, atol=1e-12)


def test_potential_energy_is_standardised_and_required_when_used(configuration):
    model = make_model(use_potential_energy=True)
    data = graph(*configuration)
    with torch.no_grad():
        reference = model(data)
        shifted = data.clone()
        shifted.potential_energy = data.potential_energy + 2.0
        assert (model(shifted) - reference).abs().max() > 1e-6
        model.embedding.set_energy_statistics(-4.0, 1.0)
        torch.testing.assert_close(model(shifted), reference, rtol=0, atol=1e-12)
        del data.potential_energy
        with pytest.raises(ValueError, match="potential_energy"):
            model(data)


def test_default_model_size_and_output_shape():
    """PCL22 report about 50k parameters: their architecture gives 51,018. The defaults add the
    recipe's readout of the last layer's l > 0 norms: 61,866 (its l > 0 outputs and a wider
    decoder input)."""
    published = EquivariantPropensityModel(EquivariantConfig(readout_norms=False))
    assert published.num_parameters() == 51_018
    assert [str(irreps) for irreps in published.config.layer_irreps] == ["16x0e+16x1o+16x2e"] * 4 + ["16x0e"]
    model = EquivariantPropensityModel().float()
    assert model.num_parameters() == 61_866
    assert [str(irreps) for irreps in model.config.layer_irreps] == ["16x0e+16x1o+16x2e"] * 5
    pos, box, types, energy = random_configuration(70, 4.5, seed=4)
    data = graph(pos, box, types, energy)
    data.pos, data.box = data.pos.float(), data.box.float()
    out = model(data)
    assert out.shape == (70, 10) and out.dtype == torch.float32
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())



def test_type_heads_give_each_particle_the_head_of_its_type(configuration):
    """With ``type_heads`` the decoder's last layer holds one block of outputs per type: changing
    the B block changes the B particles' predictions only, and the A block the A particles'."""
    model = make_model(type_heads=True)
    data = graph(*configuration)
    types = data.types
    assert 0 < int((types == 1).sum()) < types.numel()
    last = model.decoder[-1]
    assert last.out_features == 2 * SMALL["n_timescales"]
    before = model(data)
    for head in (0, 1):
        with torch.no_grad():
            last.bias[head * SMALL["n_timescales"] : (head + 1) * SMALL["n_timescales"]] += 1.0
        after = model(data)
        changed = types == head
        torch.testing.assert_close(after[changed], before[changed] + 1.0, rtol=0, atol=1e-12)
        torch.testing.assert_close(after[~changed], before[~changed], rtol=0, atol=0)
        before = after


# --------------------------------------------------------------------------- fast paths


needs_cuequivariance = pytest.mark.skipif(not cuequivariance_available(), reason="cuequivariance-torch not installed")


@pytest.mark.parametrize(
    "backend", ["fused", "fused-pytorch", pytest.param("cuequivariance", marks=needs_cuequivariance)]
)
@pytest.mark.parametrize(("parity", "l_max", "energy"), [*VARIANTS, (True, 3, False)], ids=[*VARIANT_IDS, "O3-l3"])
def test_fast_tensor_product_equals_e3nn(configuration, monkeypatch, backend: str, parity: bool, l_max: int, energy: bool):
    """The fused (default) and cuEquivariance tensor products give the plain e3nn module's outputs
    and parameter gradients (training mode, every layer read out), with the same state dict.
    The fused one on both of its message sums: the compiled CPU kernel (where a compiler
    works) and PyTorch operators ("fused-pytorch", what GPUs run). On CPU cuEquivariance runs
    its pure-PyTorch method; its CUDA kernels are checked below."""
    options = dict(parity=parity, l_max=l_max, use_potential_energy=energy, readout_all_layers=True)
    assert_fast_tensor_product_equals_e3nn(monkeypatch, backend, graph(*configuration), **options)


def assert_fast_tensor_product_equals_e3nn(monkeypatch, backend: str, data: Data, **options) -> None:
    """Outputs and parameter gradients of the ``backend`` model equal the e3nn model's on ``data``."""
    if backend == "fused-pytorch":
        monkeypatch.setenv("EQUIGLASS_COMPILED_KERNELS", "0")
    plain = make_model(tensor_product="e3nn", **options).train()
    fast = make_model(tensor_product=backend.removesuffix("-pytorch"), **options).train()
    fast.load_state_dict(plain.state_dict())
    assert plain.state_dict().keys() == fast.state_dict().keys()
    outputs = []
    for model in (plain, fast):
        out = model(data)
        (out**2).sum().backward()
        outputs.append((out, [p.grad for p in model.parameters()]))
    (expected, expected_grads), (actual, actual_grads) = outputs
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-12)
    for got, want in zip(actual_grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_kernels_available(), reason="needs a CUDA GPU and cuequivariance-ops-torch")
def test_cuequivariance_kernels_equal_e3nn_on_gpu(configuration):
    """On a GPU the cuEquivariance backend runs NVIDIA's uniform_1d kernel, in float32; its outputs
    and parameter gradients equal the plain e3nn path's on the same GPU to float32 tolerance."""
    torch.set_default_dtype(torch.float32)
    options = dict(readout_all_layers=True, l_max=3)
    plain = EquivariantPropensityModel(EquivariantConfig(**{**SMALL, **options, "tensor_product": "e3nn"})).cuda()
    fast = EquivariantPropensityModel(EquivariantConfig(**{**SMALL, **options, "tensor_product": "cuequivariance"})).cuda()
    assert fast.blocks[0].convolution.cuequivariance.method == "uniform_1d"
    fast.load_state_dict(plain.state_dict())
    data = graph(*configuration).to("cuda")
    data.pos, data.box, data.potential_energy = data.pos.float(), data.box.float(), data.potential_energy.float()
    outputs = []
    for model in (plain, fast):
        out = model.train()(data)
        (out**2).sum().backward()
        outputs.append((out, [p.grad for p in model.parameters()]))
    (expected, expected_grads), (actual, actual_grads) = outputs
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
    for got, want in zip(actual_grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4)


def test_cuequivariance_backend_without_the_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr("equiglass.nn.cuequivariance.cuequivariance_available", lambda: False)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[cuequivariance\]'"):
        EquivariantPropensityModel(EquivariantConfig(**{**SMALL, "tensor_product": "cuequivariance"}))


def test_tensor_product_registry_builds_only_the_chosen_backend():
    """``[model] tensor_product`` names a class of TENSOR_PRODUCTS; only the fused one holds (and
    only a fused model computes) the spherical couplings; unknown names are refused."""
    from typing import get_args

    from equiglass.nn.convolution import TENSOR_PRODUCTS, TensorProductKind

    assert list(TENSOR_PRODUCTS) == list(get_args(TensorProductKind))
    for name in ("fused", "e3nn"):
        model = EquivariantPropensityModel(EquivariantConfig(**{**SMALL, "tensor_product": name}))
        assert all(type(block.convolution) is TENSOR_PRODUCTS[name] for block in model.blocks)
        fused = name == "fused"
        assert (model.spherical_couplings is not None) == fused
        assert all(hasattr(block.convolution, "spherical_couplings") == fused for block in model.blocks)
    with pytest.raises(ValueError, match="tensor_product must be one of"):
        InteractionBlock("4x0e", "4x0e", "1x0e", 4, (8,), 10.0, tensor_product="sparse")
