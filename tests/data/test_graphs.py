"""Tests of equiglass.data.graphs: periodic neighbour lists, edge vectors, graphs, the dataset wrapper."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from e3nn import o3
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from equiglass.data.format import configuration_filename, load_dataset, write_configuration, write_manifest
from equiglass.data.graphs import (
    DEFAULT_CUTOFF,
    PropensityDataset,
    box_matrix,
    configuration_graph,
    edge_vectors,
    input_fields,
    neighbour_list,
    split_indices,
)
from equiglass.errors import DataError

DENSITY = 1.2
TIMES = np.array([0.1, 1.0, 10.0, 100.0])


def wrap(positions: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Positions wrapped into [0, box) (np.mod can round a tiny negative up to box)."""
    wrapped = np.mod(positions, box)
    return np.where(wrapped >= box, wrapped - box, wrapped)


def ka_configuration(n: int, seed: int, *, lattice: bool = False, aspect=(1.0, 1.0, 1.0)) -> dict[str, np.ndarray]:
    """A KA-like configuration at density 1.2 with every field of the format.

    Random positions, or a jittered simple-cubic lattice (``lattice``, n must be
    a cube). The first particles sit on box corners and faces, where periodic
    images matter most.
    """
    rng = np.random.default_rng(seed)
    aspect = np.asarray(aspect, dtype=np.float64)
    box = aspect * (n / DENSITY / np.prod(aspect)) ** (1 / 3)
    if lattice:
        side = round(n ** (1 / 3))
        grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
        positions = wrap((grid + 0.5) * box / side + rng.normal(0, 0.08, (n, 3)), box)
    else:
        positions = rng.uniform(0, box, (n, 3))
    almost = np.nextafter(box, 0)
    corners = np.array([np.where(bits, almost, 0.0) for bits in itertools.product((False, True), repeat=3)])
    faces = rng.uniform(0, box, (6, 3))
    for d in range(3):
        faces[2 * d, d], faces[2 * d + 1, d] = 0.0, box[d] - 1e-6
    positions[: len(corners) + len(faces)] = np.concatenate([corners, faces])
    types = (rng.random(n) < 0.2).astype(np.int64)
    propensity = np.sort(rng.uniform(0, 2, (len(TIMES), n)), axis=0)
    return {
        "positions": positions,
        "types": types,
        "box": box,
        "is_positions": wrap(positions + rng.normal(0, 0.05, (n, 3)), box),
        "potential_energy": rng.normal(-6.5, 0.5, n),
        "is_potential_energy": rng.normal(-7.5, 0.3, n),
        "times": TIMES.copy(),
        "propensity": propensity,
        "msd": propensity**2 * 1.3,
        "self_intermediate_scattering": np.exp(-TIMES / 50.0),
    }


def brute_force(positions: np.ndarray, box: np.ndarray, cutoff: float) -> dict[tuple[int, int], tuple[np.ndarray, ...]]:
    """O(N²) minimum-image search: (i, j) -> (integer shift, vector from i to j), distance < cutoff, i != j."""
    difference = positions[None, :, :] - positions[:, None, :]  # [i, j] = x_j - x_i
    shift = -np.round(difference / box)
    vector = difference + shift * box
    within = np.linalg.norm(vector, axis=-1) < cutoff
    np.fill_diagonal(within, False)
    return {(i, j): (shift[i, j].astype(np.int64), vector[i, j]) for i, j in zip(*np.nonzero(within))}


def edge_table(edge_index: torch.Tensor, edge_shift: torch.Tensor) -> set[tuple[int, ...]]:
    """Edges as a set of (i, j, shift_x, shift_y, shift_z)."""
    shifts = edge_shift.numpy().astype(np.int64)
    return {(int(i), int(j), *map(int, s)) for j, i, s in zip(edge_index[0], edge_index[1], shifts)}


def vectors64(positions: np.ndarray, box: np.ndarray, edge_index: torch.Tensor, edge_shift: torch.Tensor) -> np.ndarray:
    """Edge vectors in float64 through edge_vectors."""
    pos = torch.as_tensor(positions, dtype=torch.float64)
    return edge_vectors(pos, edge_index, edge_shift, torch.as_tensor(box, dtype=torch.float64)).numpy()


def graph_vectors(graph) -> torch.Tensor:
    """Edge vectors of a graph or a batch, as models compute them."""
    return edge_vectors(graph.pos, graph.edge_index, graph.edge_shift, graph.box, getattr(graph, "batch", None))


CONFIGURATIONS = {
    "random": lambda: ka_configuration(500, 0),
    "lattice": lambda: ka_configuration(512, 1, lattice=True),
    "orthorhombic": lambda: ka_configuration(500, 2, aspect=(0.8, 1.0, 1.25)),
}


@pytest.fixture(scope="module", params=sorted(CONFIGURATIONS))
def configuration(request) -> dict[str, np.ndarray]:
    return CONFIGURATIONS[request.param]()


@pytest.fixture(scope="module")
def ka500() -> dict[str, np.ndarray]:
    return ka_configuration(500, 0)


# ---------------------------------------------------------------- neighbour lists


@pytest.mark.parametrize("cutoff", [0.9, 1.5, DEFAULT_CUTOFF, 2.9])
def test_neighbour_list_equals_brute_force(configuration, cutoff):
    positions, box = configuration["positions"], configuration["box"]
    edge_index, edge_shift = neighbour_list(positions, box, cutoff)
    assert edge_index.dtype == torch.int64 and edge_index.shape[0] == 2
    assert edge_shift.dtype == torch.float32 and edge_shift.shape == (edge_index.shape[1], 3)
    assert torch.equal(edge_shift, edge_shift.round())
    expected = brute_force(positions, box, cutoff)
    assert edge_table(edge_index, edge_shift) == {(i, j, *s) for (i, j), (s, _) in expected.items()}
    assert edge_index.shape[1] == len(expected)  # no duplicates
    assert not torch.any(edge_index[0] == edge_index[1])
    keys = edge_index[1] * len(positions) + edge_index[0]
    assert torch.all(keys[1:] > keys[:-1]), "edges must be sorted by (i, j)"
    # the corner particles all see each other through the periodic faces
    corner_edges = (edge_index[0] < 8) & (edge_index[1] < 8)
    assert int(corner_edges.sum()) == 8 * 7


def test_edge_vectors_are_minimum_image_vectors(configuration):
    positions, box = configuration["positions"], configuration["box"]
    edge_index, edge_shift = neighbour_list(positions, box, DEFAULT_CUTOFF)
    vectors = vectors64(positions, box, edge_index, edge_shift)
    assert np.all(np.linalg.norm(vectors, axis=1) < DEFAULT_CUTOFF)
    expected = brute_force(positions, box, DEFAULT_CUTOFF)
    reference = np.array([expected[int(i), int(j)][1] for j, i in edge_index.T])
    np.testing.assert_allclose(vectors, reference, rtol=0, atol=1e-12)
    # float32 storage, as models use it, agrees to float32 precision
    graph = configuration_graph(configuration)
    np.testing.assert_allclose(graph_vectors(graph).numpy(), reference, rtol=0, atol=5e-6)


def test_mean_neighbour_count_is_ka_like(ka500):
    edge_index, _ = neighbour_list(ka500["positions"], ka500["box"], DEFAULT_CUTOFF)
    mean = edge_index.shape[1] / len(ka500["positions"])
    expected = DENSITY * 4 / 3 * np.pi * DEFAULT_CUTOFF**3  # uniform random: about 40
    assert abs(mean - expected) < 0.1 * expected


def test_translation_and_wrapping_leave_the_graph_unchanged(configuration):
    positions, box = configuration["positions"], configuration["box"]
    edge_index, edge_shift = neighbour_list(positions, box, DEFAULT_CUTOFF)
    vectors = vectors64(positions, box, edge_index, edge_shift)
    rng = np.random.default_rng(3)
    for translation in [rng.uniform(-3, 3, 3) * box, box / 2, np.array([-1e-9, 0.0, 0.0])]:
        moved = wrap(positions + translation, box)
        moved_index, moved_shift = neighbour_list(moved, box, DEFAULT_CUTOFF)
        assert torch.equal(moved_index, edge_index)
        np.testing.assert_allclose(vectors64(moved, box, moved_index, moved_shift), vectors, rtol=0, atol=1e-9)


def test_shifting_a_particle_by_a_box_vector(ka500):
    positions, box = ka500["positions"], ka500["box"]
    edge_index, edge_shift = neighbour_list(positions, box, DEFAULT_CUTOFF)
    vectors = vectors64(positions, box, edge_index, edge_shift)
    for particle, lattice in [(0, np.array([1, 0, 0])), (37, np.array([-2, 1, 3])), (499, np.array([0, 0, -1]))]:
        moved = positions.copy()
        moved[particle] += lattice * box  # outside the box
        moved_index, moved_shift = neighbour_list(moved, box, DEFAULT_CUTOFF)
        assert torch.equal(moved_index, edge_index)
        np.testing.assert_allclose(vectors64(moved, box, moved_index, moved_shift), vectors, rtol=0, atol=1e-9)
        # shifts refer to the given (unwrapped) positions
        difference = (moved_shift - edge_shift).numpy()
        expected = np.zeros_like(difference)
        expected[(edge_index[0] == particle).numpy()] -= lattice
        expected[(edge_index[1] == particle).numpy()] += lattice
        np.testing.assert_array_equal(difference, expected)
        # wrapped back: the very same graph
        rewrapped = configuration_graph({**ka500, "positions": wrap(moved, box)})
        assert torch.equal(rewrapped.edge_index, edge_index) and torch.equal(rewrapped.edge_shift, edge_shift)


def test_permuting_particles_permutes_the_graph(ka500):
    permutation = np.random.default_rng(4).permutation(len(ka500["types"]))  # new particle a is old permutation[a]
    per_particle = ("positions", "is_positions", "types", "potential_energy", "is_potential_energy")
    permuted_fields = {
        name: value[permutation] if name in per_particle else value[:, permutation] if value.ndim == 2 else value
        for name, value in ka500.items()
    }
    original = configuration_graph(ka500)
    permuted = configuration_graph(permuted_fields)
    back = torch.as_tensor(permutation)
    mapped_back = edge_table(back[permuted.edge_index], permuted.edge_shift)
    assert mapped_back == edge_table(original.edge_index, original.edge_shift)
    for name in ("pos", "types", "y", "target_mask", "msd"):
        assert torch.equal(permuted[name], original[name][back])
    original_vectors = {(int(i), int(j)): v for j, i, v in zip(*original.edge_index, graph_vectors(original))}
    for (j, i), vector in zip(back[permuted.edge_index].T.tolist(), graph_vectors(permuted)):
        assert torch.equal(vector, original_vectors[i, j])


@pytest.mark.parametrize(
    "positions, box, cutoff, message",
    [
        (np.zeros((5, 3)), np.full(3, 4.0), 2.0, "half the smallest box side"),
        (np.zeros((5, 3)), np.array([10.0, 10.0, 3.9]), 2.0, "half the smallest box side"),
        (np.zeros((5, 2)), np.full(3, 10.0), 2.0, r"shape \[N, 3\]"),
        (np.zeros((5, 3)), np.full(2, 10.0), 2.0, "3 side lengths"),
        (np.zeros((5, 3)), np.eye(3) * 10.0, 2.0, "3 side lengths"),
        (np.full((5, 3), np.nan), np.full(3, 10.0), 2.0, "NaN"),
        (np.zeros((5, 3)), np.array([10.0, -10.0, 10.0]), 2.0, "positive"),
        (np.zeros((5, 3)), np.full(3, 10.0), 0.0, "cutoff must be positive"),
        (np.zeros((5, 3)), np.full(3, 10.0), float("inf"), "cutoff must be positive"),
    ],
)
def test_neighbour_list_rejects_bad_input(positions, box, cutoff, message):
    with pytest.raises(ValueError, match=message):
        neighbour_list(positions, box, cutoff)


def test_neighbour_list_accepts_tensors_with_gradients(ka500):
    pos = torch.tensor(ka500["positions"], requires_grad=True)
    box = torch.tensor(ka500["box"])[None]  # [1, 3], as stored on a graph
    edge_index, edge_shift = neighbour_list(pos, box, DEFAULT_CUTOFF)
    reference_index, reference_shift = neighbour_list(ka500["positions"], ka500["box"], DEFAULT_CUTOFF)
    assert torch.equal(edge_index, reference_index) and torch.equal(edge_shift, reference_shift)


def test_empty_neighbour_list():
    edge_index, edge_shift = neighbour_list(np.array([[0.0, 0, 0], [5.0, 5, 5]]), np.full(3, 10.0), 1.0)
    assert edge_index.shape == (2, 0) and edge_shift.shape == (0, 3)


# ---------------------------------------------------------------- edge vectors: autograd and rotations


def small_system(seed: int = 5, n: int = 12, side: float = 4.5) -> tuple[torch.Tensor, ...]:
    """A float64 system small enough for gradcheck: pos [n, 3], box [1, 3], edge_index, edge_shift."""
    rng = np.random.default_rng(seed)
    positions = rng.uniform(0, side, (n, 3))
    box = np.full(3, side)
    edge_index, edge_shift = neighbour_list(positions, box, 2.0)
    assert edge_index.shape[1] > 0 and torch.any(edge_shift != 0)
    return torch.tensor(positions), torch.tensor(box)[None], edge_index, edge_shift


def test_edge_vectors_gradcheck():
    pos, box, edge_index, edge_shift = small_system()
    pos.requires_grad_(True)
    box.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p, b: edge_vectors(p, edge_index, edge_shift, b), (pos, box))
    cell = box_matrix(box.detach()).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p, c: edge_vectors(p, edge_index, edge_shift, c), (pos, cell))
    # a scalar of the edge lengths back-propagates to every particle with a neighbour
    (edge_vectors(pos, edge_index, edge_shift, box).norm(dim=1) ** 2).sum().backward()
    assert torch.all(pos.grad[edge_index.unique()].abs().sum(dim=1) > 0)


def test_edge_vectors_rotate_with_positions_and_lattice():
    pos, box, edge_index, edge_shift = small_system()
    reference = edge_vectors(pos, edge_index, edge_shift, box)
    torch.manual_seed(0)
    proper, improper = o3.rand_matrix(6, dtype=torch.float64), -o3.rand_matrix(2, dtype=torch.float64)
    for rotation in torch.cat([proper, improper]):
        rotated = edge_vectors(pos @ rotation.T, edge_index, edge_shift, box_matrix(box) @ rotation.T)
        torch.testing.assert_close(rotated, reference @ rotation.T, rtol=0, atol=1e-12)
        torch.testing.assert_close(rotated.norm(dim=1), reference.norm(dim=1), rtol=0, atol=1e-12)


def test_edge_vectors_box_shapes():
    pos, box, edge_index, edge_shift = small_system()
    reference = edge_vectors(pos, edge_index, edge_shift, box)
    for same in (box[0], box_matrix(box), box_matrix(box[0])):
        torch.testing.assert_close(edge_vectors(pos, edge_index, edge_shift, same), reference, rtol=0, atol=0)
    with pytest.raises(ValueError, match="one graph"):
        edge_vectors(pos, edge_index, edge_shift, box_matrix(box)[0])  # [3, 3] = sides of three graphs
    with pytest.raises(ValueError, match="box must have shape"):
        edge_vectors(pos, edge_index, edge_shift, torch.ones(1, 4))


# ---------------------------------------------------------------- configuration graphs


def test_configuration_graph_fields(ka500):
    graph = configuration_graph(ka500)
    n, t = len(ka500["types"]), len(TIMES)
    assert graph.num_nodes == n
    assert graph.pos.dtype == torch.float32 and graph.pos.shape == (n, 3)
    assert graph.types.dtype == torch.int64 and torch.equal(graph.types, torch.as_tensor(ka500["types"]))
    assert graph.box.shape == (1, 3) and graph.times.shape == (1, t)
    assert graph.y.shape == (n, t) and graph.y.dtype == torch.float32
    np.testing.assert_allclose(graph.y.numpy(), ka500["propensity"].T.astype(np.float32))
    np.testing.assert_allclose(graph.msd.numpy(), ka500["msd"].T.astype(np.float32))
    assert graph.target_mask.dtype == torch.bool and graph.target_mask.shape == (n, t) and graph.target_mask.all()
    assert "potential_energy" not in graph
    np.testing.assert_allclose(graph.pos.numpy(), ka500["positions"].astype(np.float32))
    without_msd = configuration_graph({k: v for k, v in ka500.items() if k != "msd"})
    assert "msd" not in without_msd


def test_inherent_positions_and_potential_energy(ka500):
    thermal = configuration_graph(ka500, with_potential_energy=True)
    inherent = configuration_graph(ka500, positions="inherent", with_potential_energy=True)
    np.testing.assert_array_equal(inherent.pos.numpy(), ka500["is_positions"].astype(np.float32))
    np.testing.assert_array_equal(thermal.potential_energy.numpy(), ka500["potential_energy"].astype(np.float32))
    np.testing.assert_array_equal(inherent.potential_energy.numpy(), ka500["is_potential_energy"].astype(np.float32))
    expected = neighbour_list(ka500["is_positions"], ka500["box"], DEFAULT_CUTOFF)
    assert torch.equal(inherent.edge_index, expected[0]) and torch.equal(inherent.edge_shift, expected[1])


def test_cage_positions_are_a_third_choice_without_energy(ka500):
    """GlassBench's cage states: the graph is built on them (d still from the inherent state); they
    come with no potential energy."""
    rng = np.random.default_rng(7)
    cage = wrap(ka500["positions"] + rng.normal(0, 0.05, ka500["positions"].shape), ka500["box"])
    fields = {**ka500, "cage_positions": cage}
    graph = configuration_graph(fields, positions="cage", with_is_displacement=True)
    np.testing.assert_array_equal(graph.pos.numpy(), cage.astype(np.float32))
    expected = neighbour_list(cage, ka500["box"], DEFAULT_CUTOFF)
    assert torch.equal(graph.edge_index, expected[0]) and torch.equal(graph.edge_shift, expected[1])
    torch.testing.assert_close(graph.is_displacement, configuration_graph(fields, with_is_displacement=True).is_displacement)
    assert input_fields("cage", with_is_displacement=True) == ["cage_positions", "positions", "is_positions"]
    with pytest.raises(ValueError, match="positions = 'cage' come with no per-particle potential energy"):
        configuration_graph(fields, positions="cage", with_potential_energy=True)
    with pytest.raises(DataError, match="needs the field 'cage_positions'"):
        configuration_graph(ka500, positions="cage")


def test_is_displacement_is_the_minimum_image_vector_from_the_inherent_state(ka500):
    rng = np.random.default_rng(3)
    vibration = rng.normal(0, 0.1, ka500["positions"].shape)
    fields = {**ka500, "is_positions": wrap(ka500["positions"] - vibration, ka500["box"])}
    raw = fields["positions"] - fields["is_positions"]
    assert (np.abs(raw) > ka500["box"] / 2).any()  # particles on the faces: their inherent state is across the box
    for positions in ("thermal", "inherent"):
        graph = configuration_graph(fields, positions=positions, with_is_displacement=True)
        np.testing.assert_allclose(graph.is_displacement.numpy(), vibration, atol=1e-6)
        assert graph.is_displacement.dtype == torch.float32
    assert "is_displacement" not in configuration_graph(fields)
    without_inherent = {k: v for k, v in ka500.items() if k not in ("is_positions", "is_potential_energy")}
    with pytest.raises(DataError, match="with_is_displacement=True needs the field 'is_positions'"):
        configuration_graph(without_inherent, with_is_displacement=True)


def test_missing_fields_give_clear_errors(ka500):
    without_inherent = {k: v for k, v in ka500.items() if k not in ("is_positions", "is_potential_energy")}
    configuration_graph(without_inherent)  # thermal positions need no inherent state
    with pytest.raises(DataError, match="needs the field 'is_positions'"):
        configuration_graph(without_inherent, positions="inherent")
    with pytest.raises(DataError, match="needs the field 'potential_energy'"):
        configuration_graph({k: v for k, v in ka500.items() if k != "potential_energy"}, with_potential_energy=True)
    with pytest.raises(ValueError, match="positions must be one of"):
        configuration_graph(ka500, positions="quenched")
    with pytest.raises(DataError, match="outside the box"):
        configuration_graph({**ka500, "positions": ka500["positions"] + ka500["box"]})
    with pytest.raises(ValueError, match="half the smallest box side"):
        configuration_graph(ka500, cutoff=4.0)


# ---------------------------------------------------------------- batching


def test_batch_edge_vectors_equal_singles():
    graphs = [configuration_graph(ka_configuration(500, 6)), configuration_graph(ka_configuration(400, 7))]
    assert graphs[0].box[0, 0] != graphs[1].box[0, 0]  # the per-graph box matters
    batch = Batch.from_data_list(graphs)
    assert batch.box.shape == (2, 3) and batch.times.shape == (2, len(TIMES)) and batch.y.shape == (900, len(TIMES))
    singles = torch.cat([graph_vectors(graph) for graph in graphs])
    torch.testing.assert_close(graph_vectors(batch), singles, rtol=0, atol=0)
    # cells as [B, 3, 3], e.g. after rotating every graph
    rotation = o3.rand_matrix()
    rotated = [g.clone() for g in graphs]
    for graph in rotated:
        graph.pos = graph.pos @ rotation.T
        graph.box = box_matrix(graph.box) @ rotation.T
    rotated_batch = Batch.from_data_list(rotated)
    assert rotated_batch.box.shape == (2, 3, 3)
    torch.testing.assert_close(graph_vectors(rotated_batch), singles @ rotation.T, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- PropensityDataset and splits


def write_dataset(directory, count: int = 4, absent: tuple[str, ...] = ()) -> None:
    n = 200
    entries = []
    for index in range(count):
        fields = {k: v for k, v in ka_configuration(n, 10 + index).items() if k not in absent}
        name = configuration_filename(index)
        write_configuration(directory / name, fields, n_particles=n, density=DENSITY, times=TIMES, absent=absent)
        entries.append({"file": name})
    write_manifest(directory, {
        "source": "test", "n_particles": n, "density": DENSITY, "temperature": 0.5, "times": TIMES.tolist(),
        "configurations": entries, "absent_fields": list(absent), "propensity_definition": "mean |displacement|",
    })


def test_propensity_dataset(tmp_path):
    write_dataset(tmp_path)
    dataset = PropensityDataset(tmp_path, with_potential_energy=True)
    assert len(dataset) == 4
    first = dataset[0]
    assert dataset[0] is first  # cached
    expected = configuration_graph(load_dataset(tmp_path).read(0), with_potential_energy=True)
    assert first.num_nodes == expected.num_nodes == 200
    for name in expected.keys():
        if name != "num_nodes":
            assert torch.equal(first[name], expected[name]), name
    assert torch.equal(first.configuration, torch.tensor([0]))

    uncached = PropensityDataset(load_dataset(tmp_path), with_potential_energy=True, cache=False)
    assert uncached[0] is not uncached[0] and torch.equal(uncached[0].pos, first.pos)

    subset = PropensityDataset(tmp_path, positions="inherent", indices=[3, 1])
    assert len(subset) == 2 and int(subset[0].configuration) == 3 and int(subset[-1].configuration) == 1
    inherent = load_dataset(tmp_path).read(3)["is_positions"]
    np.testing.assert_array_equal(subset[0].pos.numpy(), inherent.astype(np.float32))

    batch = next(iter(DataLoader(dataset, batch_size=3, shuffle=False)))
    assert batch.num_graphs == 3 and batch.box.shape == (3, 3) and torch.equal(batch.configuration, torch.arange(3))
    with pytest.raises(IndexError):
        PropensityDataset(tmp_path, indices=[4])


def test_propensity_dataset_rejects_absent_inherent_states(tmp_path):
    write_dataset(tmp_path, count=1, absent=("is_positions", "is_potential_energy"))
    PropensityDataset(tmp_path)[0]
    with pytest.raises(DataError, match="manifest.json.*declares absent"):
        PropensityDataset(tmp_path, positions="inherent")
    with pytest.raises(DataError, match=r"with_is_displacement=True needs \['is_positions'\].*declares absent"):
        PropensityDataset(tmp_path, with_is_displacement=True)


def test_split_indices():
    parts = split_indices(100, (0.8, 0.1, 0.1), seed=1)
    assert [len(p) for p in parts] == [80, 10, 10]
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(100))
    assert all(np.array_equal(a, b) for a, b in zip(parts, split_indices(100, (0.8, 0.1, 0.1), seed=1)))
    assert not np.array_equal(parts[0], split_indices(100, (0.8, 0.1, 0.1), seed=2)[0])
    assert [len(p) for p in split_indices(7, (0.5, 0.5))] == [4, 3]  # boundaries round(3.5) = 4, round(7) = 7
    counts = split_indices(500, (400, 50), seed=0)
    assert [len(p) for p in counts] == [400, 50] and not set(counts[0]) & set(counts[1])
    for bad in [(0.8, 0.3), (-0.1, 0.5), (400, 200), (True, False), ()]:
        with pytest.raises(ValueError):
            split_indices(500, bad)
