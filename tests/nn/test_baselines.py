"""Tests of the invariant baselines: Bapst et al.'s GNN, structural descriptors, descriptor ridge regression."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from e3nn import o3
from torch import nn
from torch_geometric.data import Batch, Data

from equiglass.data.descriptors import GAUSSIAN_TRUNCATION, DescriptorConfig, graph_descriptors, structural_descriptors
from equiglass.data.geometry import particles_of_types, wrap
from equiglass.data.graphs import DEFAULT_CUTOFF, box_matrix, configuration_graph, edge_vectors, neighbour_list
from equiglass.metrics import pearson_per_timescale
from equiglass.nn.bapst_gnn import (
    NORMALIZATIONS,
    BapstConfig,
    BapstGNN,
    GraphNetworkBlock,
    cube_symmetries,
    cube_symmetry_augmentation,
)
from equiglass.nn.ridge import DescriptorRidge
from equiglass.physics.kob_andersen import potential_energy_and_forces

DENSITY = 1.2
N_TIMES = 3
#: Small descriptors (neighbour cutoff 2.5) for tests that do not need the defaults.
SMALL = DescriptorConfig(
    radial_centres=(0.9, 1.1, 1.4, 1.8),
    angular_centres=(1.1, 1.6),
    angular_orders=(2, 4, 6),
    coarse_lengths=(0.0, 1.0),
    coarse_cutoff=2.5,
)


def ka_fields(side: int, seed: int) -> dict[str, np.ndarray]:
    """A KA-like configuration: jittered simple-cubic lattice of side³ particles at density 1.2, 80:20 A:B."""
    rng = np.random.default_rng(seed)
    n = side**3
    length = (n / DENSITY) ** (1 / 3)
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    types = np.zeros(n, dtype=np.int64)
    types[rng.permutation(n)[: n // 5]] = 1
    return {
        "positions": wrap((grid + 0.5) * length / side + rng.normal(0, 0.12, (n, 3)), np.full(3, length)),
        "types": types,
        "box": np.full(3, length),
        "times": np.logspace(-1, 1, N_TIMES),
        "propensity": rng.uniform(0.1, 2.0, (N_TIMES, n)),
        "potential_energy": rng.normal(-6.5, 0.5, n),
    }


def float64_graph(positions: np.ndarray, types: np.ndarray, box: np.ndarray, cutoff: float = DEFAULT_CUTOFF) -> Data:
    """A graph with float64 positions (for exact transformation tests), edges from :func:`neighbour_list`."""
    edge_index, edge_shift = neighbour_list(positions, box, cutoff)
    return Data(
        pos=torch.as_tensor(positions, dtype=torch.float64),
        types=torch.as_tensor(types),
        box=torch.as_tensor(box, dtype=torch.float64)[None],
        edge_index=edge_index,
        edge_shift=edge_shift,
        num_nodes=len(types),
    )


@pytest.fixture(scope="module")
def fields() -> dict[str, np.ndarray]:
    return ka_fields(7, seed=1)  # N = 343, box 6.59


@pytest.fixture(scope="module")
def graph(fields) -> Data:
    return configuration_graph(fields, with_potential_energy=True)


@pytest.fixture(scope="module", params=NORMALIZATIONS)
def model(request) -> BapstGNN:
    """A reduced Bapst GNN in float64 for the exact symmetry tests (the symmetries do not depend on
    the size), as the original and with per-configuration normalisation."""
    torch.manual_seed(0)
    config = BapstConfig(n_timescales=N_TIMES, mlp_hidden=(32, 32), n_steps=3, normalization=request.param)
    model = BapstGNN(config).double()
    for parameter in model.parameters():  # non-trivial affine parameters of the normalisations
        parameter.data += 0.1 * torch.randn_like(parameter)
    return model


# --------------------------------------------------------------------------------------------
# Bapst et al.'s GNN


def test_bapst_parameter_counts_and_output_shapes(graph):
    assert BapstGNN(BapstConfig(n_timescales=1)).num_parameters() == 62_465
    assert BapstGNN(BapstConfig()).num_parameters() == 63_050  # 10 timescales, one multi-head network
    assert BapstGNN(BapstConfig(n_timescales=4, per_timescale_models=True)).num_parameters() == 4 * 62_465
    # a learnable scale and shift of width 64 for 4 normalised MLPs (2 encoders, edge and node update)
    assert BapstGNN(BapstConfig(normalization="instance")).num_parameters() == 63_050 + 4 * 2 * 64
    with pytest.raises(ValueError, match="normalization"):
        BapstConfig(normalization="batch")
    small = {"mlp_hidden": (16, 16), "n_steps": 2}
    for config in (
        BapstConfig(n_timescales=N_TIMES, **small),
        BapstConfig(n_timescales=2, per_timescale_models=True, **small),
    ):
        out = BapstGNN(config)(graph)
        assert out.shape == (graph.num_nodes, config.n_timescales) and out.dtype == torch.float32
        assert torch.isfinite(out).all()


def test_bapst_batch_of_two_equals_the_two_alone(model, fields):
    other = ka_fields(6, seed=2)
    graphs = [configuration_graph(f) for f in (fields, other)]
    batched = model(Batch.from_data_list(graphs))
    alone = torch.cat([model(g) for g in graphs])
    torch.testing.assert_close(batched, alone, rtol=1e-10, atol=1e-10)


def test_bapst_permutation_equivariance(model, fields):
    positions, types, box = fields["positions"], fields["types"], fields["box"]
    permutation = np.random.default_rng(3).permutation(len(types))
    out = model(float64_graph(positions, types, box))
    permuted = model(float64_graph(positions[permutation], types[permutation], box))
    torch.testing.assert_close(permuted, out[permutation], rtol=1e-10, atol=1e-10)


def test_bapst_translation_invariance_with_rewrapping(model, fields):
    positions, types, box = fields["positions"], fields["types"], fields["box"]
    out = model(float64_graph(positions, types, box))
    for shift in np.random.default_rng(4).uniform(-20, 20, (2, 3)):
        moved = model(float64_graph(wrap(positions + shift, box), types, box))
        torch.testing.assert_close(moved, out, rtol=1e-9, atol=1e-9)


def test_bapst_ignores_edges_beyond_its_cutoff(model, fields):
    positions, types, box = fields["positions"], fields["types"], fields["box"]
    wide = float64_graph(positions, types, box, cutoff=2.6)
    assert wide.edge_index.shape[1] > float64_graph(positions, types, box).edge_index.shape[1]
    torch.testing.assert_close(model(wide), model(float64_graph(positions, types, box)), rtol=1e-12, atol=1e-12)


def test_cube_group_has_48_distinct_orthogonal_signed_permutation_matrices():
    group = cube_symmetries()
    assert group.shape == (48, 3, 3)
    assert set(group.unique().tolist()) == {-1.0, 0.0, 1.0}
    torch.testing.assert_close(group @ group.transpose(1, 2), torch.eye(3).expand(48, 3, 3))
    keys = {tuple(g.flatten().tolist()) for g in group}
    assert len(keys) == 48
    products = {tuple((a @ b).flatten().tolist()) for a in group for b in group}
    assert products == keys  # closed under composition
    determinants = torch.linalg.det(group).round()
    assert (determinants == 1).sum() == 24 and (determinants == -1).sum() == 24
    torch.testing.assert_close(group[0], torch.eye(3))


def test_cube_augmentation_maps_edge_vectors_by_a_group_element(graph, fields):
    group = cube_symmetries().double()
    other = configuration_graph(ka_fields(6, seed=5), with_potential_energy=True)
    batch = Batch.from_data_list([graph, other])
    pos_before = batch.pos.clone()
    vectors = edge_vectors(batch.pos.double(), batch.edge_index, batch.edge_shift, batch.box, batch.batch)

    augmented = cube_symmetry_augmentation(batch, torch.Generator().manual_seed(7))
    again = cube_symmetry_augmentation(batch, torch.Generator().manual_seed(7))
    assert torch.equal(augmented.pos, again.pos) and torch.equal(augmented.box, again.box)  # deterministic
    assert torch.equal(batch.pos, pos_before) and batch.box.shape == (2, 3)  # input untouched
    assert augmented.box.shape == (2, 3, 3)

    rotated = edge_vectors(augmented.pos.double(), batch.edge_index, batch.edge_shift, augmented.box, batch.batch)
    edge_graph = batch.batch[batch.edge_index[1]]
    for g in range(2):
        edges = edge_graph == g
        # the R of this graph: the group element that maps the graph's vectors onto the rotated ones
        errors = ((vectors[edges] @ group.transpose(1, 2) - rotated[edges]).abs().amax(dim=(1, 2)))
        assert errors.min() < 1e-12

    # a tensor of vectors: one group element for all
    edge_vec = torch.randn(50, 3, dtype=torch.float64)
    moved = cube_symmetry_augmentation(edge_vec, torch.Generator().manual_seed(1))
    assert ((edge_vec @ group.transpose(1, 2) - moved).abs().amax(dim=(1, 2)) < 1e-12).any()


def test_bapst_is_not_rotation_invariant_but_the_augmented_input_is_consistent(model, graph):
    """Cartesian edge features: a cube symmetry changes the predictions, and the model sees
    exactly the rotated edge vectors (no re-wrapping inconsistency)."""
    generator = torch.Generator().manual_seed(11)
    outputs = [model(cube_symmetry_augmentation(graph, generator)) for _ in range(2)]
    assert max((o - model(graph)).abs().max() for o in outputs) > 1e-4


def test_graph_network_block_equals_an_mlp_on_the_concatenation(graph):
    torch.manual_seed(0)
    block = GraphNetworkBlock(8, 6, (16, 16))
    x, e = torch.randn(graph.num_nodes, 8), torch.randn(graph.edge_index.shape[1], 6)
    nodes, edges = block(x, e, graph.edge_index)
    sender, receiver = graph.edge_index
    expected_edges = block.edge_mlp(torch.cat([e, x[sender], x[receiver]], dim=1))
    incoming = torch.stack([expected_edges[receiver == i].sum(0) for i in range(graph.num_nodes)])
    torch.testing.assert_close(edges, expected_edges, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(nodes, block.node_mlp(torch.cat([x, incoming], dim=1)), rtol=1e-5, atol=1e-5)


def test_instance_normalisation_lets_the_initial_bapst_network_tell_particles_apart(fields):
    """Summed over ~40 neighbours, encoded edges give every particle almost the same features, so
    the original network starts as a near-constant predictor; per-configuration normalisation
    restores the spread of its outputs over the particles (measured: ~50x on KA configurations)."""
    graph = configuration_graph(fields)
    spread = {}
    for normalization in NORMALIZATIONS:
        torch.manual_seed(0)
        spread[normalization] = BapstGNN(BapstConfig(n_timescales=N_TIMES, normalization=normalization))(graph).std(0)
    assert (spread["instance"] > 10 * spread["none"]).all(), spread


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_bapst_overfits_one_configuration(normalization):
    """A one-step model learns a structural target (standardised A and B neighbour counts, type)."""
    data = configuration_graph(ka_fields(4, seed=7), cutoff=1.5)  # N = 64, about 10 neighbours each
    sender, receiver = data.edge_index
    neighbour_type = nn.functional.one_hot(data.types[sender], 2).float()
    counts = torch.zeros(data.num_nodes, 2).index_add_(0, receiver, neighbour_type)
    target = torch.cat([counts, data.types[:, None].float()], dim=1)
    target = (target - target.mean(0)) / target.std(0)
    torch.manual_seed(0)
    net = BapstGNN(BapstConfig(n_timescales=N_TIMES, n_steps=1, normalization=normalization))
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(250):
        loss = (net(data) - target).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert min(losses[-50:]) < losses[0] / 20


# --------------------------------------------------------------------------------------------
# Structural descriptors


def _neighbourhood(directions: list, types: list | None = None, radius: float = 1.0) -> tuple[np.ndarray, ...]:
    """A centre particle at the middle of a big box and neighbours at ``radius`` along ``directions``."""
    directions = np.asarray(directions, dtype=np.float64)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    box = np.full(3, 30.0)
    positions = np.concatenate([[[0.0, 0.0, 0.0]], radius * directions]) + box / 2
    types = np.zeros(len(positions), dtype=np.int64) if types is None else np.asarray([0, *types])
    return positions, types, box


def _shell(order: int) -> list[tuple[int, ...]]:
    """Integer vectors with ``order`` non-zero entries of ±1: sc (1, 6 vectors), fcc (2, 12), bcc (3, 8)."""
    return [v for v in itertools.product((-1, 0, 1), repeat=3) if np.count_nonzero(v) == order]


@pytest.mark.parametrize(
    ("lattice", "q4", "q6"),
    [("sc", 0.76376, 0.35355), ("fcc", 0.19094, 0.57452), ("bcc", 0.50918, 0.62854)],
)
def test_steinhardt_order_parameters_of_perfect_neighbourhoods(lattice, q4, q6):
    directions = _shell({"sc": 1, "fcc": 2, "bcc": 3}[lattice])
    for shell_centre in (1.0, 1.1):  # equal weights cancel: any shell centre near the neighbours
        config = DescriptorConfig(
            radial_centres=(), angular_centres=(shell_centre,), angular_orders=(4, 6), coarse_lengths=(0.0,)
        )
        q = structural_descriptors(*_neighbourhood(directions), config=config)[0]
        assert config.feature_names == [f"q_4(r={shell_centre:g})|L=0", f"q_6(r={shell_centre:g})|L=0"]
        np.testing.assert_allclose(q.numpy(), [q4, q6], atol=5e-6)


def test_radial_densities_equal_a_direct_count():
    rng = np.random.default_rng(8)
    directions = rng.normal(size=(15, 3))
    neighbour_types = rng.integers(0, 2, 15)
    radii = rng.uniform(0.8, 2.0, 15)
    positions, types, box = _neighbourhood(directions, neighbour_types)
    positions[1:] = box / 2 + (positions[1:] - box / 2) * radii[:, None]
    config = DescriptorConfig(
        radial_centres=(0.9, 1.2, 1.5, 2.0), radial_width=0.15, angular_orders=(), coarse_lengths=(0.0,)
    )
    got = structural_descriptors(positions, types, box, config=config)[0].numpy()
    expected = [
        sum(
            np.exp(-((r - centre) ** 2) / (2 * 0.15**2))
            for r, s in zip(radii, neighbour_types)
            if s == species and abs(r - centre) < GAUSSIAN_TRUNCATION * 0.15
        )
        for species in (0, 1)
        for centre in config.radial_centres
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert config.feature_names[:2] == ["rho_A(r=0.9)|L=0", "rho_A(r=1.2)|L=0"]
    assert config.feature_names[4] == "rho_B(r=0.9)|L=0"


def test_default_descriptor_layout_and_coarse_graining_equals_a_direct_average(fields):
    config = DescriptorConfig()
    assert config.n_features == len(config.feature_names) == 222 and config.neighbour_cutoff == 3.0
    positions, types, box = fields["positions"], fields["types"], fields["box"]
    x = structural_descriptors(positions, types, box, config=config)
    assert x.shape == (len(types), 222) and x.dtype == torch.float64 and torch.isfinite(x).all()

    local = x[:, :74].numpy()
    difference = positions[None] - positions[:, None]
    r = np.linalg.norm(difference - box * np.round(difference / box), axis=-1)  # minimum image, r_ii = 0
    for block, length in enumerate(config.coarse_lengths[1:], start=1):
        weights = np.where(r < config.coarse_cutoff, np.exp(-r / length), 0.0)
        expected = weights @ local / weights.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(x[:, 74 * block : 74 * (block + 1)].numpy(), expected, rtol=1e-10, atol=1e-12)


def test_descriptors_are_invariant_under_cube_symmetries_of_a_periodic_cubic_box(fields):
    positions, types, box = fields["positions"], fields["types"], fields["box"]
    reference = structural_descriptors(positions, types, box, config=SMALL)
    group = cube_symmetries().double().numpy()
    for index in np.random.default_rng(9).choice(48, 4, replace=False):
        moved = wrap(positions @ group[index].T, box)
        np.testing.assert_allclose(structural_descriptors(moved, types, box, config=SMALL), reference, atol=1e-10)


def test_descriptors_are_invariant_under_random_rotations_of_a_cluster():
    rng = np.random.default_rng(10)
    points = rng.normal(size=(150, 3))
    points = 3.0 * points / np.linalg.norm(points, axis=1, keepdims=True) * rng.uniform(0, 1, (150, 1)) ** (1 / 3)
    box = np.full(3, 40.0)
    types = (rng.random(150) < 0.2).astype(np.int64)
    reference = structural_descriptors(points + box / 2, types, box, config=SMALL)
    for rotation in o3.rand_matrix(3, dtype=torch.float64).numpy():
        rotated = structural_descriptors(points @ rotation.T + box / 2, types, box, config=SMALL)
        np.testing.assert_allclose(rotated, reference, atol=1e-10)


def test_descriptors_are_permutation_equivariant_and_batch_consistent(fields, graph):
    positions, types, box = fields["positions"], fields["types"], fields["box"]
    permutation = np.random.default_rng(12).permutation(len(types))
    reference = structural_descriptors(positions, types, box, config=SMALL)
    permuted = structural_descriptors(positions[permutation], types[permutation], box, config=SMALL)
    np.testing.assert_allclose(permuted, reference[permutation], atol=1e-10)

    other = configuration_graph(ka_fields(6, seed=13), with_potential_energy=True)
    batched = graph_descriptors(Batch.from_data_list([graph, other]), SMALL)
    torch.testing.assert_close(batched, torch.cat([graph_descriptors(graph, SMALL), graph_descriptors(other, SMALL)]))


def test_potential_energy_feature_and_errors(fields, graph):
    config = DescriptorConfig(
        radial_centres=(1.0,), angular_orders=(), coarse_lengths=(0.0, 1.0), use_potential_energy=True
    )
    assert config.feature_names == ["rho_A(r=1)|L=0", "rho_B(r=1)|L=0", "energy|L=0"] + [
        "rho_A(r=1)|L=1",
        "rho_B(r=1)|L=1",
        "energy|L=1",
    ]
    x = graph_descriptors(graph, config)
    torch.testing.assert_close(x[:, 2], graph.potential_energy.double())
    with pytest.raises(ValueError, match="potential_energy"):
        structural_descriptors(fields["positions"], fields["types"], fields["box"], config=config)
    with pytest.raises(ValueError, match="half the smallest box side"):
        structural_descriptors(fields["positions"], fields["types"], fields["box"] * 0.7)
    with pytest.raises(ValueError, match="types"):
        structural_descriptors(fields["positions"], fields["types"] + 1, fields["box"], config=SMALL)


def test_force_feature_equals_the_reference_ka_forces_in_any_periodic_image(fields, graph):
    """The force baseline: |F_i| from the descriptor's neighbour list equals the plain-numpy O(N²)
    reference of the KA potential (per-pair cutoffs 2.0-2.5), also with particles moved by box vectors."""
    config = DescriptorConfig(radial_centres=(), angular_orders=(), coarse_lengths=(0.0,), use_force=True)
    assert config.feature_names == ["force|L=0"] and config.neighbour_cutoff == 2.5
    _, forces = potential_energy_and_forces(fields["positions"], fields["types"], fields["box"])
    expected = torch.as_tensor(np.linalg.norm(forces, axis=1))
    assert expected.std() > 1.0  # a test that a constant would fail
    torch.testing.assert_close(
        structural_descriptors(fields["positions"], fields["types"], fields["box"], config=config)[:, 0], expected,
        rtol=1e-10, atol=1e-10,
    )
    torch.testing.assert_close(graph_descriptors(graph, config)[:, 0], expected, rtol=1e-4, atol=0)  # float32 graph positions
    shifted = fields["positions"] + np.random.default_rng(0).integers(-2, 3, size=(len(expected), 3)) * fields["box"]
    torch.testing.assert_close(
        structural_descriptors(shifted, fields["types"], fields["box"], config=config)[:, 0], expected, rtol=1e-10, atol=1e-10
    )
    both = DescriptorConfig(radial_centres=(1.0,), angular_orders=(), coarse_lengths=(0.0,), use_potential_energy=True,
                            use_force=True)
    assert both.feature_names == ["rho_A(r=1)|L=0", "rho_B(r=1)|L=0", "energy|L=0", "force|L=0"]
    torch.testing.assert_close(graph_descriptors(graph, both)[:, 3], expected, rtol=1e-4, atol=0)


def test_displacement_feature_is_the_distance_from_the_inherent_state_and_turns_with_the_cube(fields):
    """``use_is_displacement``: the descriptor is ``|r - r_IS|`` in the minimum image (coarse-grained
    like the others); the Bapst model's node encoder reads ``d``, which its cube augmentation
    turns with the positions."""
    rng = np.random.default_rng(4)
    vibration = rng.normal(0, 0.1, fields["positions"].shape)
    vibrating = {**fields, "is_positions": wrap(fields["positions"] - vibration, fields["box"])}
    config = DescriptorConfig(radial_centres=(), angular_orders=(), coarse_lengths=(0.0, 1.0), use_is_displacement=True)
    assert config.feature_names == ["is_displacement|L=0", "is_displacement|L=1"]
    graph = configuration_graph(vibrating, with_is_displacement=True)
    features = graph_descriptors(graph, config)
    torch.testing.assert_close(features[:, 0], torch.as_tensor(np.linalg.norm(vibration, axis=1)), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(features[:, 1], features[:, 0])  # the second block averages over neighbours
    alone = DescriptorConfig(radial_centres=(), angular_orders=(), coarse_lengths=(0.0,), use_is_displacement=True)
    assert alone.neighbour_cutoff == 0  # |d| not coarse-grained needs no neighbours
    torch.testing.assert_close(graph_descriptors(graph, alone), features[:, :1])
    with pytest.raises(ValueError, match="no is_displacement was given"):
        structural_descriptors(fields["positions"], fields["types"], fields["box"], config=config)

    bapst = BapstGNN(BapstConfig(n_timescales=N_TIMES, mlp_hidden=(16, 16), n_steps=2, use_is_displacement=True))
    with torch.no_grad():
        moved = graph.clone()
        moved.is_displacement = -graph.is_displacement
        assert (bapst(moved) - bapst(graph)).abs().max() > 1e-4  # the node encoder reads d
    with pytest.raises(ValueError, match="has no is_displacement"):
        bapst(configuration_graph(vibrating))

    augmented = cube_symmetry_augmentation(graph, torch.Generator().manual_seed(3))
    rotation = augmented.box[0] @ torch.linalg.inv(box_matrix(graph.box)[0])  # the R of box -> box @ R.T, transposed
    torch.testing.assert_close(augmented.is_displacement, graph.is_displacement @ rotation, rtol=0, atol=1e-6)
    torch.testing.assert_close(augmented.pos, graph.pos @ rotation, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Descriptor ridge regression


def _synthetic(n_graphs: int, n: int, d: int, seed: int) -> tuple[list[Data], np.ndarray, np.ndarray]:
    """Graphs carrying cached descriptors and an exact linear target on A particles (B: garbage)."""
    rng = np.random.default_rng(seed)
    weight, bias = rng.normal(size=(d, N_TIMES)), rng.normal(size=N_TIMES)
    graphs = []
    for _ in range(n_graphs):
        x = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, d) + rng.uniform(-5, 5, d)
        types = (rng.random(n) < 0.2).astype(np.int64)
        y = x @ weight + bias
        y[types == 1] = 1e6
        graphs.append(
            Data(
                pos=torch.zeros(n, 3),
                types=torch.as_tensor(types),
                descriptors=torch.as_tensor(x),
                y=torch.as_tensor(y, dtype=torch.float64),
                target_mask=torch.ones(n, N_TIMES, dtype=torch.bool),
                num_nodes=n,
            )
        )
    return graphs, weight, bias


def test_ridge_recovers_exact_weights_of_a_noise_free_linear_target():
    graphs, weight, bias = _synthetic(3, 200, SMALL.n_features, seed=14)
    ridge = DescriptorRidge(N_TIMES, SMALL).fit(graphs, alpha=0.0)
    fitted_weight, fitted_bias = ridge.coefficients()
    np.testing.assert_allclose(fitted_weight.numpy(), weight, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(fitted_bias.numpy(), bias, rtol=1e-8, atol=1e-8)
    a = graphs[0].types == 0
    torch.testing.assert_close(ridge(graphs[0])[a].double(), graphs[0].y[a])


def test_ridge_equals_the_closed_form_and_least_squares():
    graphs, _, _ = _synthetic(4, 150, SMALL.n_features, seed=15)
    noise = np.random.default_rng(16)
    for g in graphs:
        g.y = g.y + torch.as_tensor(noise.normal(size=g.y.shape))
    alpha = 30.0
    ridge = DescriptorRidge(N_TIMES, SMALL).fit(graphs, alpha=alpha)

    x = np.concatenate([g.descriptors[g.types == 0].numpy() for g in graphs])
    y = np.concatenate([g.y[g.types == 0].numpy() for g in graphs])
    mean, std = x.mean(0), x.std(0)
    standard = (x - mean) / std
    centred = y - y.mean(0)
    closed = np.linalg.solve(standard.T @ standard + alpha * np.eye(x.shape[1]), standard.T @ centred)
    augmented = np.concatenate([standard, np.sqrt(alpha) * np.eye(x.shape[1])])
    lstsq = np.linalg.lstsq(augmented, np.concatenate([centred, np.zeros((x.shape[1], N_TIMES))]), rcond=None)[0]
    np.testing.assert_allclose(closed, lstsq, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ridge.weight.numpy(), closed, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ridge.mean.numpy(), mean, rtol=1e-12)
    np.testing.assert_allclose(ridge.std.numpy(), std, rtol=1e-10)
    np.testing.assert_allclose(ridge.bias.numpy(), y.mean(0), rtol=1e-12)
    assert float(ridge.alpha) == alpha


def test_ridge_on_real_descriptors_state_dict_round_trip_and_alpha_selection(graph):
    ridge = DescriptorRidge(N_TIMES, SMALL)
    with pytest.raises(RuntimeError, match="fit"):
        ridge(graph)
    other = configuration_graph(ka_fields(6, seed=17))
    alpha, scores = ridge.select_alpha([graph], [other], alphas=(0.1, 10.0, 1e4))
    assert set(scores) == {0.1, 10.0, 1e4} and scores[alpha] == max(scores.values())
    assert float(ridge.alpha) == alpha

    out = ridge(graph)
    assert out.shape == (graph.num_nodes, N_TIMES) and out.dtype == torch.float32
    cached = graph.clone()
    cached.descriptors = graph_descriptors(graph, SMALL)
    torch.testing.assert_close(ridge(cached), out)

    restored = DescriptorRidge(N_TIMES, SMALL)
    restored.load_state_dict(ridge.state_dict())
    torch.testing.assert_close(restored(graph), out, rtol=0, atol=0)
    score = pearson_per_timescale(ridge(graph), graph.y, particles_of_types(graph.types, (0,)))
    assert score.shape == (N_TIMES,) and torch.isfinite(score).all()


def test_ridge_rejects_missing_targets(graph):
    masked = graph.clone()
    masked.target_mask = masked.target_mask.clone()
    masked.target_mask[0, 0] = False
    with pytest.raises(ValueError, match="target_mask"):
        DescriptorRidge(N_TIMES, SMALL).fit([masked], alpha=1.0, particle_types=(0, 1))
