"""The Kob-Andersen (KA) binary Lennard-Jones mixture, independent of any MD engine.

Kob & Andersen, Phys. Rev. E 51, 4626 (1995). Everything is in Lennard-Jones
(LJ) reduced units: lengths in sigma_AA, energies in epsilon_AA, masses in the
particle mass, time in sigma_AA * sqrt(m / epsilon_AA), temperature in
epsilon_AA / k_B.

Two species, 80 % A (type 0) and 20 % B (type 1), equal masses. Each pair
(a, b) interacts through

    V_ab(r) = 4 eps_ab [(sig_ab / r)^12 - (sig_ab / r)^6] - V_ab^LJ(r_c,ab),  r < r_c,ab = 2.5 sig_ab

and 0 beyond: every pair has its own cutoff and the potential is shifted to
zero there (LAMMPS ``pair_style lj/cut`` with ``pair_modify shift yes``). The
per-pair parameters do not follow a mixing rule.

`potential_energy_and_forces` is a plain-numpy reference implementation,
deliberately independent of LAMMPS, used to validate the engine and to check
inherent states.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

EPSILON = np.array([[1.0, 1.5], [1.5, 0.5]])
"""eps_ab, indexed [type_a, type_b] with 0 = A and 1 = B (LJ energy units)."""
SIGMA = np.array([[1.0, 0.8], [0.8, 0.88]])
"""sig_ab, indexed [type_a, type_b] with 0 = A and 1 = B (LJ length units)."""
CUTOFF_RATIO = 2.5
"""r_c,ab = CUTOFF_RATIO * sig_ab: 2.5 (AA), 2.0 (AB), 2.2 (BB)."""
FRACTION_A = 0.8
"""Number fraction of A particles."""
DENSITY = 1.2
"""Standard number density N / V."""
MASS = 1.0
"""Mass of both species."""

CUTOFF = CUTOFF_RATIO * SIGMA
"""r_c,ab as a 2x2 array (LJ length units)."""
MAX_CUTOFF = float(CUTOFF.max())
"""The largest cutoff, 2.5: minimum-image periodic boxes need a side of at least twice it."""

_ROW_CHUNK_ELEMENTS = 1_000_000  # pair slots per chunk: ~100 MB of temporaries at most


def _lj(r2: np.ndarray, epsilon: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unshifted LJ energy 4 eps (s^12 - s^6) and -dV/dr / r, with s = sigma^2 / r2."""
    s6 = (sigma * sigma / r2) ** 3
    energy = 4.0 * epsilon * (s6 * s6 - s6)
    force_over_r = 24.0 * epsilon * (2.0 * s6 * s6 - s6) / r2
    return energy, force_over_r


_SHIFT = _lj(CUTOFF**2, EPSILON, SIGMA)[0]  # V_ab^LJ(r_c,ab), subtracted inside the cutoff


def pair_force_over_r(r2: np.ndarray, type_i: np.ndarray, type_j: np.ndarray) -> np.ndarray:
    """``-dV_ab/dr / r`` of KA pairs, 0 at and beyond their cutoff.

    The force on i from j is ``pair_force_over_r * (r_i - r_j)``.

    Args:
        r2: [P] squared pair distances (LJ lengths², > 0).
        type_i, type_j: [P] species of the two particles (0 = A, 1 = B).

    Returns:
        [P] float64 (LJ energy / length²).
    """
    r2 = np.asarray(r2, dtype=np.float64)
    type_i, type_j = np.asarray(type_i), np.asarray(type_j)
    force_over_r = _lj(r2, EPSILON[type_i, type_j], SIGMA[type_i, type_j])[1]
    return np.where(r2 < CUTOFF[type_i, type_j] ** 2, force_over_r, 0.0)


def composition(n_particles: int) -> tuple[int, int]:
    """Exact 80:20 composition: (n_a, n_b) with n_a = round(0.8 n) and n_b = n - n_a."""
    if int(n_particles) != n_particles or n_particles < 1:
        raise ValueError(f"n_particles must be a positive integer, got {n_particles!r}")
    n_particles = int(n_particles)
    n_a = (4 * n_particles + 2) // 5  # round(4 n / 5) in exact integer arithmetic (no .5 ties exist)
    return n_a, n_particles - n_a


def box_length(n_particles: int, density: float = DENSITY) -> float:
    """Side of the cubic box holding `n_particles` at number `density` (LJ length units)."""
    if n_particles < 1 or not density > 0:
        raise ValueError(f"need n_particles >= 1 and density > 0, got {n_particles!r} and {density!r}")
    return float((n_particles / density) ** (1.0 / 3.0))


def _check_system(positions: np.ndarray, types: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    positions = np.asarray(positions, dtype=np.float64)
    types = np.asarray(types)
    box = np.asarray(box, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape [N, 3], got {positions.shape}")
    if types.shape != (positions.shape[0],):
        raise ValueError(f"types must have shape [N] = [{positions.shape[0]}], got {types.shape}")
    if not np.issubdtype(types.dtype, np.integer) or not np.isin(types, (0, 1)).all():
        raise ValueError("types must be integers in {0 (A), 1 (B)}")
    if box.shape != (3,):
        raise ValueError(f"box must have shape [3], got {box.shape}")
    if not (np.isfinite(positions).all() and np.isfinite(box).all()):
        raise ValueError("positions and box must be finite")
    return positions, types.astype(np.intp), box


def potential_energy_and_forces(
    positions: np.ndarray, types: np.ndarray, box: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-particle KA potential energies and forces in a periodic orthorhombic box.

    A plain-numpy O(N^2) implementation (minimum image, per-pair cutoffs and
    shifts), vectorised over pairs in chunks of rows so that the temporaries
    stay below ~100 MB for any N (N = 4096 takes about 1.5 s).

    Args:
        positions: [N, 3] coordinates (LJ lengths); any periodic image.
        types: [N] integers, 0 = A and 1 = B.
        box: [3] box sides (LJ lengths), box = [0, L_x) x [0, L_y) x [0, L_z).

    Returns:
        per_particle_energy: [N] (LJ energies); each pair energy is split half
            and half between its two particles, as LAMMPS ``compute pe/atom``
            does, so the sum is the total potential energy.
        forces: [N, 3] total force on each particle (LJ energy / length).

    Raises:
        ValueError: on malformed input, or if a box side is shorter than twice
            the largest cutoff (the minimum-image convention would then miss
            interacting images).
    """
    positions, types, box = _check_system(positions, types, box)
    if (box < 2.0 * MAX_CUTOFF).any():
        raise ValueError(
            f"box sides {box.tolist()} must be at least 2 * {MAX_CUTOFF} (twice the largest cutoff) "
            "for the minimum-image convention (N >= 150 at density 1.2)"
        )
    n = positions.shape[0]
    energy = np.zeros(n)
    forces = np.zeros((n, 3))
    cutoff2 = CUTOFF**2
    rows = max(1, _ROW_CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        delta = positions[start:stop, None, :] - positions[None, :, :]  # r_i - r_j, [rows, N, 3]
        delta -= box * np.round(delta / box)
        r2 = np.einsum("ijk,ijk->ij", delta, delta)
        pair_types = (types[start:stop, None], types[None, :])
        inside = r2 < cutoff2[pair_types]
        inside[np.arange(stop - start), np.arange(start, stop)] = False  # no self-interaction
        i, j = np.nonzero(inside)
        ti, tj = types[start + i], types[j]
        pair_energy, force_over_r = _lj(r2[i, j], EPSILON[ti, tj], SIGMA[ti, tj])
        energy[start:stop] += 0.5 * np.bincount(i, weights=pair_energy - _SHIFT[ti, tj], minlength=stop - start)
        pair_force = force_over_r[:, None] * delta[i, j]
        for k in range(3):
            forces[start:stop, k] += np.bincount(i, weights=pair_force[:, k], minlength=stop - start)
    return energy, forces


def initial_positions(
    n_particles: int,
    box: np.ndarray,
    rng: np.random.Generator,
    start: Literal["random", "lattice"] = "random",
) -> tuple[np.ndarray, np.ndarray]:
    """A starting configuration with the exact KA composition.

    Args:
        n_particles: N.
        box: [3] box sides (LJ lengths); positions lie in [0, L_x) x [0, L_y) x [0, L_z).
        rng: the random source (types are shuffled with it; random positions,
            and the vacant sites of the lattice, are drawn from it).
        start: ``"random"``: uniform positions (overlapping: relax them before
            dynamics, e.g. with `KobAndersenLammps.relax_overlaps`);
            ``"lattice"``: a simple cubic lattice of m^3 >= N sites with
            m = ceil(N^(1/3)) filling the box (spacing L / m, sites at cell
            centres), N of them occupied at random.

    Returns:
        positions: [N, 3] float64 (LJ lengths).
        types: [N] int64, 0 = A and 1 = B, in shuffled order.
    """
    n_a, n_b = composition(n_particles)
    box = np.asarray(box, dtype=np.float64)
    if box.shape != (3,) or not (np.isfinite(box).all() and (box > 0).all()):
        raise ValueError(f"box must be 3 positive finite sides, got {box!r}")
    if start == "random":
        positions = rng.uniform(0.0, 1.0, size=(n_particles, 3)) * box
    elif start == "lattice":
        m = int(np.ceil(n_particles ** (1.0 / 3.0) - 1e-9))
        while m**3 < n_particles:
            m += 1
        cells = np.stack(np.meshgrid(*[np.arange(m)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
        occupied = np.sort(rng.choice(m**3, size=n_particles, replace=False))
        positions = (cells[occupied] + 0.5) * (box / m)
    else:
        raise ValueError(f"start must be 'random' or 'lattice', got {start!r}")
    types = np.concatenate([np.zeros(n_a, dtype=np.int64), np.ones(n_b, dtype=np.int64)])
    rng.shuffle(types)
    return positions, types
