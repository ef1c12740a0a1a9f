"""Rotation-invariant structural descriptors of particles (Boattini et al. 2021 style).

Per particle i, with r_ij the minimum-image distance and r̂_ij the unit vector to j:

* **Radial densities** (one per species s and shell centre r_k): Gaussian-smeared
  neighbour counts ``G_s(i; r_k) = Σ_{j≠i, type j = s} exp(-(r_ij - r_k)² / (2 δ_r²))``.
* **Bond-orientational order** (one per angular shell centre r_k and order l): the
  Steinhardt parameter of a Gaussian shell,
  ``q_l(i; r_k) = sqrt(4π / (2l + 1) Σ_m |q_lm|²)`` with
  ``q_lm = Σ_j w_ij Y_lm(r̂_ij) / Σ_j w_ij`` and ``w_ij = exp(-(r_ij - r_k)² / (2 δ_a²))``
  (all species). When every neighbour of a shell sits at the same distance, this is the
  classic q_l of that neighbourhood (fcc: q_4 = 0.19094, q_6 = 0.57452).
* **Potential energy** of the particle (optional).
* **Force magnitude** ``|F_i| = |Σ_j -V'_ab(r_ij) r̂_ji|`` of the Kob-Andersen potential
  (optional; pairs within 2.5 σ_ab). Alone it is the one-line physical baseline of the shortest
  times: before a particle feels more than its first neighbours, its displacement is
  ``v t + F t² / 2m`` with a random ``v`` of the same distribution for every particle, so
  the force is what tells particles apart.
* **Coarse-graining**: each of the above averaged over a neighbourhood of size L,
  ``x̄_i(L) = Σ_j e^{-r_ij / L} x_j / Σ_j e^{-r_ij / L}``, the sum running over i itself
  (r_ii = 0) and every j with ``r_ij < coarse_cutoff``; L = 0 means the particle itself.

Every Gaussian is cut at ``GAUSSIAN_TRUNCATION`` widths from its centre (relative weight
3e-4), which sets the neighbour cutoff with ``coarse_cutoff`` (see
:attr:`DescriptorConfig.neighbour_cutoff`); it must be below half the smallest box side.

Layout of the ``[N, D]`` output: one block per coarse-graining length (in the order of
``coarse_lengths``), each block ``[radial (species-major: all shells of A, then of B),
angular (shell-major: all orders of the first shell, ...), energy, force]``.
:attr:`DescriptorConfig.feature_names` names every column. Units: LJ (σ_AA, ε_AA).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from e3nn import o3
from torch_geometric.data import Data

from equiglass.data.graphs import edge_vectors, neighbour_list
from equiglass.physics.kob_andersen import MAX_CUTOFF, pair_force_over_r

#: Gaussians are cut at this many widths from their centre.
GAUSSIAN_TRUNCATION = 4.0

#: Species names used in feature names (0 = A, 1 = B).
SPECIES = ("A", "B")


def _grid(start: float, stop: float, step: float) -> tuple[float, ...]:
    """``start, start + step, ..., stop`` (inclusive), rounded to 1e-9."""
    return tuple(round(float(r), 9) for r in np.arange(start, stop + step / 2, step))


@dataclass(frozen=True)
class DescriptorConfig:
    """Which descriptors :func:`structural_descriptors` computes.

    The defaults give D = 3 × (2 × 17 + 5 × 8) = 222 features (225 with the potential
    energy) and a neighbour cutoff of 3.0, so boxes need sides above 6.0 (N >= 260 at
    density 1.2).

    Attributes:
        radial_centres: shell centres r_k of the radial densities (LJ units).
        radial_width: Gaussian standard deviation δ_r of the radial shells.
        angular_centres: shell centres of the bond-orientational order parameters.
        angular_width: Gaussian standard deviation δ_a of the angular shells.
        angular_orders: the orders l of the q_l.
        coarse_lengths: coarse-graining lengths L (0 = the particle itself), one feature
            block each.
        coarse_cutoff: neighbours averaged over when L > 0 are those closer than this.
        n_types: number of species (types ``0 .. n_types - 1``).
        use_potential_energy: append the per-particle potential energy to the local features.
        use_force: append the magnitude of the Kob-Andersen force on the particle (then the
            neighbour cutoff is at least 2.5, the largest KA cutoff). With no shells and
            ``coarse_lengths = (0,)`` it is the only feature: the force baseline.
        use_is_displacement: append ``|d|``, the distance of the particle from its inherent-state
            position (its vibration in its cage).
    """

    radial_centres: tuple[float, ...] = _grid(0.8, 2.4, 0.1)
    radial_width: float = 0.1
    angular_centres: tuple[float, ...] = _grid(1.0, 2.0, 0.25)
    angular_width: float = 0.15
    angular_orders: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    coarse_lengths: tuple[float, ...] = (0.0, 1.0, 2.0)
    coarse_cutoff: float = 3.0
    n_types: int = 2
    use_potential_energy: bool = False
    use_force: bool = False
    use_is_displacement: bool = False

    def __post_init__(self) -> None:
        for name in ("radial_centres", "angular_centres", "coarse_lengths"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        object.__setattr__(self, "angular_orders", tuple(int(l) for l in self.angular_orders))
        problems = []
        if not self.coarse_lengths:
            problems.append("coarse_lengths must hold at least one length (0 = no coarse-graining)")
        if any(r <= 0 for r in self.radial_centres + self.angular_centres):
            problems.append("shell centres must be positive")
        if self.radial_width <= 0 or self.angular_width <= 0:
            problems.append("widths must be positive")
        if any(l < 0 for l in self.angular_orders):
            problems.append("angular orders must be >= 0")
        if any(length < 0 for length in self.coarse_lengths) or self.coarse_cutoff <= 0:
            problems.append("coarse_lengths must be >= 0 and coarse_cutoff positive")
        if self.n_types < 1:
            problems.append("n_types must be positive")
        if problems:
            raise ValueError(f"DescriptorConfig: {'; '.join(problems)}")

    @property
    def neighbour_cutoff(self) -> float:
        """Cutoff of the neighbour list: the farthest truncated Gaussian or the coarse-graining cutoff."""
        tails = [max(c) + GAUSSIAN_TRUNCATION * w for c, w in self._shells() if c]
        coarse = [self.coarse_cutoff] if any(length > 0 for length in self.coarse_lengths) else []
        force = [MAX_CUTOFF] if self.use_force else []
        return max(tails + coarse + force + [0.0])

    @property
    def local_names(self) -> list[str]:
        """Names of the local (not coarse-grained) features, in column order."""
        species = [SPECIES[s] if s < len(SPECIES) else f"type{s}" for s in range(self.n_types)]
        names = [f"rho_{s}(r={r:g})" for s in species for r in self.radial_centres]
        names += [f"q_{l}(r={r:g})" for r in self.angular_centres for l in self.angular_orders]
        optional = (("energy", self.use_potential_energy), ("force", self.use_force),
                    ("is_displacement", self.use_is_displacement))
        return names + [name for name, used in optional if used]

    @property
    def feature_names(self) -> list[str]:
        """Names of all D output columns, e.g. ``rho_A(r=1.1)|L=0``, ``q_6(r=1.25)|L=2``."""
        return [f"{name}|L={length:g}" for length in self.coarse_lengths for name in self.local_names]

    @property
    def n_features(self) -> int:
        """D, the number of output columns."""
        return len(self.coarse_lengths) * len(self.local_names)

    def _shells(self) -> list[tuple[tuple[float, ...], float]]:
        """(centres, width) of the radial and the used angular shells."""
        angular = [(self.angular_centres, self.angular_width)] if self.angular_orders else []
        return [(self.radial_centres, self.radial_width), *angular]


def structural_descriptors(
    positions: np.ndarray | torch.Tensor,
    types: np.ndarray | torch.Tensor,
    box: np.ndarray | torch.Tensor,
    potential_energy: np.ndarray | torch.Tensor | None = None,
    config: DescriptorConfig | None = None,
    is_displacement: np.ndarray | torch.Tensor | None = None,
) -> torch.Tensor:
    """Descriptors of every particle of one periodic configuration.

    Args:
        positions: [N, 3] positions (LJ units), wrapped or not.
        types: [N] integer species in ``0 .. config.n_types - 1``.
        box: [3] (or [1, 3]) sides of the orthorhombic periodic box, each above
            ``2 * config.neighbour_cutoff``.
        potential_energy: [N] per-particle potential energy (LJ units); required when
            ``config.use_potential_energy``, ignored otherwise.
        config: which descriptors; :class:`DescriptorConfig` defaults when None.
        is_displacement: [N, 3] displacement from the inherent state (LJ units); required when
            ``config.use_is_displacement``, ignored otherwise.

    Returns:
        [N, D] float64 on the device of ``positions`` (a tensor) or the CPU; columns as
        ``config.feature_names``.

    Raises:
        ValueError: bad shapes or types, missing energy or displacement, or a box too small for the cutoff.
    """
    config = config or DescriptorConfig()
    pos = torch.as_tensor(positions, dtype=torch.float64)
    device = pos.device
    types = torch.as_tensor(types, device=device).long()
    sides = torch.as_tensor(box, dtype=torch.float64, device=device).reshape(-1)
    n = pos.shape[0]
    if pos.ndim != 2 or pos.shape[1] != 3 or types.shape != (n,) or sides.shape != (3,):
        raise ValueError(
            f"expected positions [N, 3], types [N], box [3]; got {list(pos.shape)}, {list(types.shape)}, "
            f"{list(torch.as_tensor(box).shape)}"
        )
    if n and (types.min() < 0 or types.max() >= config.n_types):
        raise ValueError(f"types must lie in [0, {config.n_types}), got values {sorted(set(types.tolist()))}")

    if config.neighbour_cutoff > 0:
        edge_index, edge_shift = neighbour_list(pos, sides, config.neighbour_cutoff)
    else:  # single-particle features only (e.g. |d| alone, not coarse-grained)
        edge_index = torch.zeros(2, 0, dtype=torch.long, device=device)
        edge_shift = torch.zeros(0, 3, dtype=torch.float32, device=device)
    vectors = edge_vectors(pos, edge_index, edge_shift, sides)
    distances = vectors.norm(dim=-1)
    neighbour, centre = edge_index[0], edge_index[1]

    local = [
        radial_densities(distances, centre, types[neighbour], n, config),
        orientational_order(vectors, centre, n, config),
    ]
    if config.use_potential_energy:
        if potential_energy is None:
            raise ValueError("config.use_potential_energy is True but no potential_energy was given")
        energy = torch.as_tensor(potential_energy, dtype=torch.float64, device=device)
        if energy.shape != (n,):
            raise ValueError(f"potential_energy must have shape [{n}], got {list(energy.shape)}")
        local.append(energy[:, None])
    if config.use_force:
        local.append(force_magnitude(vectors, edge_index, types)[:, None])
    if config.use_is_displacement:
        if is_displacement is None:
            raise ValueError("config.use_is_displacement is True but no is_displacement was given")
        displacement = torch.as_tensor(is_displacement, dtype=torch.float64, device=device)
        if displacement.shape != (n, 3):
            raise ValueError(f"is_displacement must have shape [{n}, 3], got {list(displacement.shape)}")
        local.append(displacement.norm(dim=-1, keepdim=True))
    return coarse_grain(torch.cat(local, dim=1), distances, edge_index, config)


def radial_densities(
    distances: torch.Tensor, centre: torch.Tensor, neighbour_types: torch.Tensor, n: int, config: DescriptorConfig
) -> torch.Tensor:
    """Gaussian-smeared neighbour counts per species.

    Args:
        distances: [E] edge lengths; centre: [E] centre particle of each edge;
        neighbour_types: [E] species of each edge's neighbour; n: number of particles.

    Returns:
        [N, n_types * K_r] (species-major) float64.
    """
    weights = _gaussian_shells(distances, config.radial_centres, config.radial_width)  # [E, K]
    counts = torch.zeros(n * config.n_types, weights.shape[1], dtype=weights.dtype, device=weights.device)
    counts.index_add_(0, centre * config.n_types + neighbour_types, weights)
    return counts.reshape(n, -1)


def orientational_order(vectors: torch.Tensor, centre: torch.Tensor, n: int, config: DescriptorConfig) -> torch.Tensor:
    """Gaussian-shell Steinhardt parameters q_l (see the module docstring).

    A shell with no neighbour within its truncated Gaussian gives q_l = 0.

    Args:
        vectors: [E, 3] edge vectors (centre to neighbour); centre: [E]; n: number of particles.

    Returns:
        [N, K_a * len(angular_orders)] (shell-major) float64.
    """
    if not (config.angular_orders and config.angular_centres):
        return vectors.new_zeros(n, 0)
    weights = _gaussian_shells(vectors.norm(dim=-1), config.angular_centres, config.angular_width)  # [E, K]
    inside = weights.any(dim=1)
    weights, vectors, centre = weights[inside], vectors[inside], centre[inside]
    edge, shell = weights.nonzero(as_tuple=True)
    n_shells = weights.shape[1]
    rows = centre[edge] * n_shells + shell  # one row per (particle, shell)
    # 'component' normalisation: Σ_m Y_lm(r̂)² = 2l + 1 for every l.
    harmonics = o3.spherical_harmonics(list(config.angular_orders), vectors, normalize=True, normalization="component")
    values = weights[edge, shell]
    ones = torch.ones(vectors.shape[0], 1, dtype=vectors.dtype, device=vectors.device)
    sums = _sparse_sum(rows, edge, values, n * n_shells, torch.cat([ones, harmonics], dim=1))
    q_lm = sums[:, 1:] / sums[:, :1].clamp_min(torch.finfo(sums.dtype).tiny)  # [N * K, Σ_l (2l + 1)]
    blocks = q_lm.split([2 * l + 1 for l in config.angular_orders], dim=1)
    q = [block.square().sum(dim=1).div(2 * l + 1).sqrt() for l, block in zip(config.angular_orders, blocks)]
    return torch.stack(q, dim=1).reshape(n, -1)


def force_magnitude(vectors: torch.Tensor, edge_index: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
    """|F_i| of the Kob-Andersen potential, summed over edges (the list must reach 2.5).

    Args:
        vectors: [E, 3] edge vectors (centre to neighbour); edge_index: [2, E] (neighbour j,
            centre i); types: [N] species.

    Returns:
        [N] float64 (LJ energy / length).
    """
    neighbour, centre = edge_index[0], edge_index[1]
    force_over_r = pair_force_over_r(
        vectors.square().sum(dim=1).detach().cpu().numpy(), types[centre].cpu().numpy(), types[neighbour].cpu().numpy()
    )
    pair_forces = -torch.as_tensor(force_over_r, dtype=vectors.dtype, device=vectors.device)[:, None] * vectors
    return vectors.new_zeros(types.shape[0], 3).index_add_(0, centre, pair_forces).norm(dim=1)


def coarse_grain(
    features: torch.Tensor, distances: torch.Tensor, edge_index: torch.Tensor, config: DescriptorConfig
) -> torch.Tensor:
    """Averages of ``features`` with weights ``exp(-r / L)`` over the particle and its neighbours.

    Args:
        features: [N, F] local features; distances: [E] edge lengths; edge_index: [2, E]
            (neighbour j, centre i).

    Returns:
        [N, len(coarse_lengths) * F], the blocks in the order of ``config.coarse_lengths``.
    """
    n = features.shape[0]
    within = distances < config.coarse_cutoff
    rows, cols, r = edge_index[1, within], edge_index[0, within], distances[within]
    ones = torch.ones(n, 1, dtype=features.dtype, device=features.device)
    blocks = []
    for length in config.coarse_lengths:
        if length == 0:
            blocks.append(features)
            continue
        sums = _sparse_sum(rows, cols, torch.exp(-r / length), n, torch.cat([ones, features], dim=1))
        blocks.append((features + sums[:, 1:]) / (1 + sums[:, :1]))
    return torch.cat(blocks, dim=1)


def _sparse_sum(
    rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n_rows: int, dense: torch.Tensor
) -> torch.Tensor:
    """``out[r] = Σ_{k: rows[k] = r} values[k] * dense[cols[k]]`` as a sparse product, ``[n_rows, F]``.

    Avoids materialising the ``[len(values), F]`` products of a gather + ``index_add_``.
    """
    matrix = torch.sparse_coo_tensor(
        torch.stack([rows, cols]), values, (n_rows, dense.shape[0]), check_invariants=False
    )
    return torch.sparse.mm(matrix, dense)


def _gaussian_shells(distances: torch.Tensor, centres: tuple[float, ...], width: float) -> torch.Tensor:
    """``exp(-(d - r_k)² / (2 width²))`` for ``|d - r_k| < GAUSSIAN_TRUNCATION * width``, else 0: [E] -> [E, K]."""
    offset = distances[:, None] - torch.tensor(centres, dtype=distances.dtype, device=distances.device)
    gaussian = torch.exp(-0.5 * (offset / width).square())
    return torch.where(offset.abs() < GAUSSIAN_TRUNCATION * width, gaussian, torch.zeros_like(gaussian))


def graph_descriptors(data: Data, config: DescriptorConfig | None = None) -> torch.Tensor:
    """:func:`structural_descriptors` of every graph of a ``Data`` / ``Batch`` (graphs of :mod:`equiglass.data.graphs`).

    Uses ``pos``, ``types``, ``box`` (sides ``[B, 3]``; rotated cells ``[B, 3, 3]`` are
    refused, descriptors being rotation invariant anyway), ``batch`` and, when
    ``config.use_potential_energy``, ``potential_energy`` (``config.use_is_displacement``,
    ``is_displacement``). Builds its own neighbour lists
    (``config.neighbour_cutoff``), ignoring the graph's edges.

    Returns:
        [N, D] float64, rows in node order.
    """
    config = config or DescriptorConfig()
    if data.box.ndim != 2:
        raise ValueError(f"descriptors need orthorhombic box sides [B, 3], got box of shape {list(data.box.shape)}")
    if data.batch is None:
        counts = [data.num_nodes]
    else:
        counts = torch.bincount(data.batch, minlength=data.box.shape[0]).tolist()
    energy = data.potential_energy if config.use_potential_energy and "potential_energy" in data else None
    displacement = data.is_displacement if config.use_is_displacement and "is_displacement" in data else None
    blocks, start = [], 0
    for graph, count in enumerate(counts):
        nodes = slice(start, start + count)
        blocks.append(
            structural_descriptors(
                data.pos[nodes], data.types[nodes], data.box[graph], None if energy is None else energy[nodes], config,
                None if displacement is None else displacement[nodes],
            )
        )
        start += count
    return torch.cat(blocks, dim=0)
