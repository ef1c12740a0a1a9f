"""Periodic neighbour lists and PyTorch Geometric graphs of Kob–Andersen configurations.

Conventions (every model and training loop relies on them):

* **Edges.** ``edge_index[0] = j`` is the neighbour (message source),
  ``edge_index[1] = i`` the centre (message target). Each ordered pair
  ``(i, j)`` within the cutoff appears once, in both directions (a full list),
  sorted by ``(i, j)``.
* **Shifts.** ``edge_shift[e]`` holds integer lattice shifts (in units of the
  box vectors, stored as float32) such that the vector from centre ``i`` to
  neighbour ``j`` is ``pos[j] - pos[i] + edge_shift[e] @ cell`` where the rows
  of ``cell`` are the lattice vectors; for our orthorhombic boxes ``cell =
  diag(box)`` and the offset is ``edge_shift[e] * box``. Shifts refer to the
  positions the list was built from, so positions need not be wrapped.
* **Cutoff rule.** An edge exists when the distance is strictly below the
  cutoff, and the cutoff must be strictly below half the smallest box side:
  then every pair has at most one periodic image within the cutoff (two images
  of ``j`` are at least one box side apart), no particle sees its own image,
  and the graph is the minimum-image graph. A larger cutoff raises
  :class:`ValueError` rather than silently building an ambiguous graph.
* **No neighbour cap**: every neighbour within the cutoff is kept (a KA liquid
  at density 1.2 and r_c = 2.0 has about 40 neighbours per particle).
* **Rotations.** The stored box is axis-aligned, so a rotation test rotates the
  positions *and the lattice*: ``edge_vectors(pos @ R.T, edge_index,
  edge_shift, box_matrix(box) @ R.T, batch)`` equals ``edge_vectors(pos, ...)
  @ R.T``. :func:`edge_vectors` accepts box sides ``[B, 3]`` or full cell
  matrices ``[B, 3, 3]`` for exactly this purpose; assigning
  ``data.box = box_matrix(data.box) @ R.T`` on a graph keeps batching working.

Neighbour search uses vesin only (no torch-cluster or pyg-lib needed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import vesin
from torch_geometric.data import Data

from equiglass.data.format import OPTIONAL_FIELDS, Dataset, load_dataset, validate_configuration
from equiglass.data.geometry import minimum_image
from equiglass.errors import DataError

#: Default neighbour cutoff in LJ length units (σ_AA), as in Bapst et al. (2020) and PCL22.
DEFAULT_CUTOFF = 2.0

#: Position switch -> (positions field, per-particle potential energy field of those positions;
#: None where no dataset stores one: GlassBench's cage states come without energies).
POSITION_FIELDS: dict[str, tuple[str, str | None]] = {
    "thermal": ("positions", "potential_energy"),
    "inherent": ("is_positions", "is_potential_energy"),
    "cage": ("cage_positions", None),
}
#: Fields of the displacement from the inherent state to the thermal positions (``with_is_displacement``).
IS_DISPLACEMENT_FIELDS = ("positions", "is_positions")


def input_fields(positions: str = "thermal", with_potential_energy: bool = False,
                 with_is_displacement: bool = False) -> list[str]:
    """The configuration fields a graph of these settings is built from (see :func:`configuration_graph`).

    Raises:
        ValueError: unknown ``positions`` switch, or a potential energy asked of positions that have none.
    """
    if positions not in POSITION_FIELDS:
        raise ValueError(f"positions must be one of {sorted(POSITION_FIELDS)}, got {positions!r}")
    position_field, energy_field = POSITION_FIELDS[positions]
    if with_potential_energy and energy_field is None:
        raise ValueError(f"positions = {positions!r} come with no per-particle potential energy: "
                         "with_potential_energy must be false")
    needed = [position_field] + ([energy_field] if with_potential_energy else [])
    return list(dict.fromkeys(needed + (list(IS_DISPLACEMENT_FIELDS) if with_is_displacement else [])))


def is_displacement(fields: Mapping[str, np.ndarray]) -> np.ndarray:
    """``[N, 3]`` displacement of every particle from its inherent state to its thermal position,
    ``positions - is_positions`` in the minimum image (LJ lengths): its vibration in its cage."""
    return minimum_image(fields["positions"] - fields["is_positions"], fields["box"])


def neighbour_list(
    positions: np.ndarray | torch.Tensor, box: np.ndarray | torch.Tensor | Sequence[float], cutoff: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full periodic neighbour list of an orthorhombic box, computed with vesin.

    Args:
        positions: [N, 3] particle positions (LJ length units); wrapped or not,
            any finite values. A tensor is detached; outputs go to its device.
        box: [3] positive side lengths of the orthorhombic periodic box (or
            [1, 3], as stored on a graph).
        cutoff: neighbour distance; pairs with distance < cutoff are edges.
            Must satisfy ``0 < cutoff < min(box) / 2`` (see the module notes).

    Returns:
        ``edge_index`` [2, E] int64 with ``edge_index[0] = j`` (neighbour,
        source) and ``edge_index[1] = i`` (centre, target), sorted by ``(i, j)``;
        ``edge_shift`` [E, 3] float32, integer-valued, such that
        ``positions[j] - positions[i] + edge_shift * box`` is the
        minimum-image vector from i to j. No self-edges.

    Raises:
        ValueError: bad shapes, non-finite values, non-positive box sides or
            cutoff, or a cutoff of half the smallest box side or more.
    """
    device = positions.device if isinstance(positions, torch.Tensor) else None
    points = _as_float64(positions, "positions")
    sides = _as_float64(box, "box")
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"positions must have shape [N, 3], got {list(points.shape)}")
    if sides.shape == (1, 3):
        sides = sides[0]
    if sides.shape != (3,):
        raise ValueError(f"box must hold the 3 side lengths of an orthorhombic box, got shape {list(sides.shape)}")
    if not np.all(np.isfinite(points)):
        raise ValueError("positions hold NaN or infinite values")
    if not np.all(np.isfinite(sides)) or np.any(sides <= 0):
        raise ValueError(f"box sides must be positive and finite, got {sides.tolist()}")
    cutoff = float(cutoff)
    if not np.isfinite(cutoff) or cutoff <= 0:
        raise ValueError(f"cutoff must be positive and finite, got {cutoff}")
    if 2 * cutoff >= sides.min():
        raise ValueError(
            f"cutoff {cutoff} must be below half the smallest box side ({sides.min() / 2:.6g}): "
            "otherwise a pair can have several periodic images within the cutoff"
        )

    calculator = vesin.NeighborList(cutoff=cutoff, full_list=True)
    centre, neighbour, shift = calculator.compute(points, np.diag(sides), periodic=True, quantities="ijS")
    centre = centre.astype(np.int64)
    neighbour = neighbour.astype(np.int64)
    order = np.lexsort((neighbour, centre))
    edge_index = torch.from_numpy(np.stack([neighbour[order], centre[order]]))
    edge_shift = torch.from_numpy(shift[order].astype(np.float32))
    return edge_index.to(device), edge_shift.to(device)


def box_matrix(box: torch.Tensor) -> torch.Tensor:
    """Cell matrices of orthorhombic boxes: [3] or [B, 3] sides -> [B, 3, 3] = diag(sides).

    The rows of a cell matrix are the lattice vectors; rotating a system by R
    maps ``cell`` to ``cell @ R.T``.
    """
    if box.shape[-1] != 3 or box.ndim not in (1, 2):
        raise ValueError(f"box sides must have shape [3] or [B, 3], got {list(box.shape)}")
    return torch.diag_embed(box.reshape(-1, 3))


def edge_vectors(
    pos: torch.Tensor,
    edge_index: torch.Tensor,
    edge_shift: torch.Tensor,
    box: torch.Tensor,
    batch: torch.Tensor | None = None,
) -> torch.Tensor:
    """Vectors from each edge's centre i to its neighbour j, differentiable in ``pos`` and ``box``.

    ``vec[e] = pos[j] - pos[i] + edge_shift[e] @ cell[g]`` with ``j, i =
    edge_index[:, e]`` and ``g = batch[i]`` the graph of the edge.

    Args:
        pos: [N, 3] positions (any float dtype; the result has this dtype).
        edge_index: [2, E] int64, (neighbour j, centre i).
        edge_shift: [E, 3] integer-valued lattice shifts (any dtype).
        box: per graph either the orthorhombic sides, [B, 3] (or [3] for one
            graph), or full cell matrices with lattice vectors as rows,
            [B, 3, 3] (one graph: [1, 3, 3]). The rank decides, so a [3, 3]
            tensor is always the sides of three graphs.
        batch: [N] int64 graph index of each node (PyG ``Batch.batch``); None
            for a single graph, in which case ``box`` must describe one graph.

    Returns:
        [E, 3] edge vectors (LJ length units), same dtype and device as ``pos``.
    """
    neighbour, centre = edge_index[0], edge_index[1]
    shift = edge_shift.to(pos.dtype)
    box = box.to(pos.dtype)
    if box.ndim == 1:
        box = box.unsqueeze(0)
    if box.ndim not in (2, 3) or box.shape[-1] != 3 or (box.ndim == 3 and box.shape[-2] != 3):
        raise ValueError(f"box must have shape [3], [B, 3] (sides) or [B, 3, 3] (cells), got {list(box.shape)}")
    if batch is None and box.shape[0] != 1:
        raise ValueError(f"without batch, box must describe one graph ([3], [1, 3], [1, 3, 3]), got {list(box.shape)}")
    lattice = box if batch is None else box[batch[centre]]
    if box.ndim == 2:
        offset = shift * lattice
    else:
        offset = torch.einsum("ek,ekl->el", shift, lattice.expand(shift.shape[0], 3, 3))
    return pos[neighbour] - pos[centre] + offset


def configuration_graph(
    fields: Mapping[str, np.ndarray],
    *,
    cutoff: float = DEFAULT_CUTOFF,
    positions: str = "thermal",
    with_potential_energy: bool = False,
    with_is_displacement: bool = False,
) -> Data:
    """Build the PyG graph of one configuration (arrays as :func:`equiglass.data.format.read_configuration` returns).

    The fields are validated with :func:`~equiglass.data.format.validate_configuration`
    (fields missing from ``fields`` are treated as absent).

    Args:
        fields: the configuration's arrays (see :data:`equiglass.data.format.FIELDS`).
        cutoff: neighbour cutoff (LJ units), strictly below half the smallest box side.
        positions: ``"thermal"`` (``positions``), ``"inherent"`` (``is_positions``) or ``"cage"``
            (``cage_positions``: each particle's average position in its cage, GlassBench).
        with_potential_energy: attach the per-particle potential energy of the
            chosen positions (``potential_energy`` for thermal,
            ``is_potential_energy`` for inherent).
        with_is_displacement: attach every particle's displacement from its inherent state to
            its thermal position (:func:`is_displacement`), whichever positions the graph uses.

    Returns:
        A :class:`torch_geometric.data.Data` with, for N particles, E edges and T times:

        ====================  ========  =======  ====================================================
        field                 shape     dtype    meaning
        ====================  ========  =======  ====================================================
        ``pos``               [N, 3]    float32  thermal, inherent or cage positions, wrapped in [0, box)
        ``types``             [N]       int64    0 = A (large), 1 = B (small)
        ``box``               [1, 3]    float32  orthorhombic box sides (batches to [B, 3])
        ``edge_index``        [2, E]    int64    (neighbour j, centre i), sorted by (i, j)
        ``edge_shift``        [E, 3]    float32  integer lattice shifts, see :func:`edge_vectors`
        ``y``                 [N, T]    float32  propensity (mean |displacement|) at every time
        ``target_mask``       [N, T]    bool     True where a target exists (all True for our data)
        ``times``             [1, T]    float32  target times, LJ time units (batches to [B, T])
        ``msd``               [N, T]    float32  iso-configurational mean |displacement|², if stored
        ``potential_energy``  [N]       float32  only with ``with_potential_energy``
        ``is_displacement``   [N, 3]    float32  only with ``with_is_displacement``: thermal - inherent
                                                 position, minimum image (an ``l = 1`` vector)
        ``num_nodes``         int               N
        ====================  ========  =======  ====================================================

        ``target_mask`` exists so that losses and metrics can mask particles
        (for example type B) or missing targets uniformly; our datasets store
        every particle at every time, so it starts all True. A configuration
        without ``propensity`` (prediction-only) has neither ``y`` nor ``target_mask``.

    Raises:
        ValueError: unknown ``positions`` switch, an energy asked of cage positions, or a cutoff too
            large for the box.
        DataError: the chosen positions, energy or inherent state are missing, or the fields are invalid.
    """
    for name in input_fields(positions, with_potential_energy, with_is_displacement):
        if name not in fields:
            raise DataError(None, f"positions={positions!r}, with_potential_energy={with_potential_energy}, "
                                  f"with_is_displacement={with_is_displacement} needs the field '{name}', "
                                  "which this configuration lacks")
    position_field, energy_field = POSITION_FIELDS[positions]
    arrays = validate_configuration(fields, absent=tuple(name for name in OPTIONAL_FIELDS if name not in fields))

    box = arrays["box"]
    edge_index, edge_shift = neighbour_list(arrays[position_field], box, cutoff)
    graph = Data(
        pos=_float32(arrays[position_field]),
        types=torch.from_numpy(arrays["types"]),
        box=_float32(box[None, :]),
        edge_index=edge_index,
        edge_shift=edge_shift,
        times=_float32(arrays["times"][None, :]),
        num_nodes=int(arrays["types"].shape[0]),
    )
    if "propensity" in arrays:
        graph.y = _float32(arrays["propensity"].T)
        graph.target_mask = torch.ones(graph.y.shape, dtype=torch.bool)
    if "msd" in arrays:
        graph.msd = _float32(arrays["msd"].T)
    if with_potential_energy:
        graph.potential_energy = _float32(arrays[energy_field])
    if with_is_displacement:
        graph.is_displacement = _float32(is_displacement(arrays))
    return graph


class PropensityDataset(torch.utils.data.Dataset):
    """Graphs of the configurations of one dataset directory, for a PyG ``DataLoader``.

    Item ``k`` is :func:`configuration_graph` of configuration ``indices[k]``
    (read and validated with :meth:`Dataset.read`), with one extra field
    ``configuration`` ([1] int64, the configuration's position in the
    manifest; batches to [B]).

    With ``cache=True`` each graph is built once and kept in memory; the same
    object is returned on every access, so callers must not modify it in place
    (augmentations should work on ``graph.clone()``). A graph of N = 4096 at
    r_c = 2.0 (about 165k edges) takes about 5 MB. With a multi-process
    ``DataLoader`` each worker holds its own cache.

    Args:
        root_or_dataset: a dataset directory or an opened :class:`Dataset`.
        cutoff, positions, with_potential_energy, with_is_displacement: as in :func:`configuration_graph`.
        cache: keep built graphs in memory.
        indices: configurations to use, as positions in the manifest (for
            train/validation/test splits, see :func:`split_indices`); all by default.

    Raises:
        DataError: (naming the manifest) when the manifest declares the chosen
            positions, energy or inherent state absent, as for converted Bapst data without
            inherent states, or the dataset is prediction-only (no propensity).
        IndexError: an index outside the dataset.
    """

    def __init__(
        self,
        root_or_dataset: str | Path | Dataset,
        *,
        cutoff: float = DEFAULT_CUTOFF,
        positions: str = "thermal",
        with_potential_energy: bool = False,
        with_is_displacement: bool = False,
        cache: bool = True,
        indices: Sequence[int] | np.ndarray | None = None,
    ):
        self.dataset = root_or_dataset if isinstance(root_or_dataset, Dataset) else load_dataset(root_or_dataset)
        self.dataset.require_targets("training and evaluation")
        needed = input_fields(positions, with_potential_energy, with_is_displacement)
        absent = [name for name in needed if name in self.dataset.absent_fields]
        if absent:
            raise DataError(
                self.dataset.directory / "manifest.json",
                f"positions={positions!r}, with_potential_energy={with_potential_energy}, "
                f"with_is_displacement={with_is_displacement} needs {absent}, which this dataset declares absent",
            )
        count = len(self.dataset)
        chosen = np.arange(count) if indices is None else np.asarray(indices)
        if chosen.ndim != 1 or (chosen.size and not np.issubdtype(chosen.dtype, np.integer)):
            raise ValueError(f"indices must be a 1-D sequence of integers, got {chosen!r}")
        if chosen.size and (chosen.min() < 0 or chosen.max() >= count):
            raise IndexError(f"indices must lie in [0, {count}), got min {chosen.min()} and max {chosen.max()}")
        self.indices = chosen.astype(np.int64)
        self.cutoff = cutoff
        self.positions = positions
        self.with_potential_energy = with_potential_energy
        self.with_is_displacement = with_is_displacement
        self._cache: dict[int, Data] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> Data:
        index = int(self.indices[item])
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        graph = configuration_graph(
            self.dataset.read(index),
            cutoff=self.cutoff,
            positions=self.positions,
            with_potential_energy=self.with_potential_energy,
            with_is_displacement=self.with_is_displacement,
        )
        graph.configuration = torch.tensor([index], dtype=torch.long)
        if self._cache is not None:
            self._cache[index] = graph
        return graph


def split_indices(
    n: int, fractions: Sequence[float] | Sequence[int] = (0.8, 0.1, 0.1), seed: int = 0
) -> tuple[np.ndarray, ...]:
    """Deterministic random split of ``range(n)`` into disjoint parts.

    Args:
        n: number of items.
        fractions: the size of each part, either as fractions of ``n`` (floats,
            summing to at most 1; part boundaries are ``round(cumsum * n)``, so
            fractions summing to 1 use every item) or as counts (all Python or
            numpy integers, summing to at most ``n``).
        seed: seed of the permutation; the same ``(n, fractions, seed)`` gives
            the same split on every machine.

    Returns:
        One sorted int64 array per part.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    values = list(fractions)
    if not values:
        raise ValueError("fractions must name at least one part")
    if any(isinstance(value, bool) for value in values):
        raise ValueError(f"fractions must be numbers, got {values}")
    if all(isinstance(value, (int, np.integer)) for value in values):
        counts = np.asarray(values, dtype=np.int64)
        if np.any(counts < 0) or counts.sum() > n:
            raise ValueError(f"counts {values} must be non-negative and sum to at most n = {n}")
        bounds = np.cumsum(counts)
    else:
        shares = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(shares)) or np.any(shares < 0) or shares.sum() > 1 + 1e-9:
            raise ValueError(f"fractions {values} must be non-negative and sum to at most 1")
        bounds = np.minimum(np.rint(np.cumsum(shares) * n).astype(np.int64), n)
    permutation = np.random.default_rng(seed).permutation(n)
    starts = np.concatenate([[0], bounds[:-1]])
    return tuple(np.sort(permutation[start:stop]) for start, stop in zip(starts, bounds))


def _as_float64(values: np.ndarray | torch.Tensor | Sequence[float], name: str) -> np.ndarray:
    """A float64 numpy copy of an array or tensor (detached, on the CPU)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.float64)


def _float32(array: np.ndarray) -> torch.Tensor:
    """``array`` as a contiguous float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
