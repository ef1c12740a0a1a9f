"""Miniature files in the exact format of Bapst et al. (2020), for tests.

The real files cannot be downloaded here; these follow the layout of the
public ones (see ``equiglass/data/bapst.py``): a protocol-3 pickle of one dict
with ``time`` a list of floats starting at 0, ``time_indices`` a list of ints
not sorted by time, ``trajectory_start_velocities`` a list of [N, 3] arrays and
``trajectory_target_positions`` a list (time) of lists (trajectory) of [N, 3]
arrays of unwrapped positions. Import with ``from bapst_files import ...``
(pytest puts ``tests/`` on the path).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

DENSITY = 1.2


def make_bapst_data(
    rng: np.random.Generator,
    n_particles: int = 512,
    n_times: int = 3,
    n_trajectories: int = 4,
    temperature: float = 0.5,
    *,
    stacked_velocities: bool = False,
) -> dict[str, Any]:
    """A Bapst-format dict: a jittered simple-cubic lattice at density 1.2.

    ``n_particles`` must be a cube (512 = 8^3 is the smallest that fits the
    KA cutoffs, 64 the smallest that makes sense). 80:20 A:B types; particle
    0 sits one box length outside the box in x and particle 1 one inside in
    -y (unwrapped, as a particle that crossed a boundary). Stored time points
    are time[time_indices] with the last two swapped, so not sorted (as in
    Bapst's files); F_s levels decrease with time. Target positions are the
    initial ones plus Gaussian steps that grow with time.
    """
    side = round(n_particles ** (1 / 3))
    if side**3 != n_particles:
        raise ValueError(f"n_particles must be a cube, got {n_particles}")
    box_length = (n_particles / DENSITY) ** (1 / 3)
    spacing = box_length / side
    lattice = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    positions = (lattice + 0.5 + rng.uniform(-0.1, 0.1, size=(n_particles, 3))) * spacing
    positions[0, 0] += box_length
    positions[1, 1] -= box_length
    types = np.zeros(n_particles, dtype=np.int32)
    types[: n_particles // 5] = 1
    types = rng.permutation(types)

    time = [0.0] + np.geomspace(0.003, 300.0, n_times + 4).tolist()
    stored = list(range(2, 2 + n_times))
    stored[-2:] = stored[:-3:-1]  # swap the last two
    levels = np.linspace(0.9, 0.3, n_times)
    is_values = levels[np.argsort(np.argsort(stored))]
    velocities = [rng.normal(scale=np.sqrt(temperature), size=(n_particles, 3)) for _ in range(n_trajectories)]
    targets = [
        [positions + rng.normal(scale=0.05 * time[index] ** 0.25, size=(n_particles, 3)) for _ in range(n_trajectories)]
        for index in stored
    ]
    return {
        "positions": positions,
        "types": types,
        "box": np.full(3, box_length),
        "time": time,
        "time_indices": stored,
        "is_values": is_values,
        "trajectory_start_velocities": np.stack(velocities) if stacked_velocities else velocities,
        "trajectory_target_positions": targets,
        "metadata": {"temperature": temperature, "pressure": 2.93, "fluid": "Kob Andersen"},
    }


def dump_bapst(path: str | Path, data: Any) -> Path:
    """Pickle ``data`` to ``path`` as Bapst did (protocol 3)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as stream:
        pickle.dump(data, stream, protocol=3)
    return path


def write_bapst_file(
    path: str | Path,
    rng: np.random.Generator,
    n_particles: int = 512,
    n_times: int = 3,
    n_trajectories: int = 4,
    temperature: float = 0.5,
    *,
    stacked_velocities: bool = False,
) -> dict[str, Any]:
    """Write a miniature Bapst file (see :func:`make_bapst_data`) and return its dict."""
    data = make_bapst_data(
        rng, n_particles, n_times, n_trajectories, temperature, stacked_velocities=stacked_velocities
    )
    dump_bapst(path, data)
    return data
