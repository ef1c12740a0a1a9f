"""Shared helpers and constants of the tests (plain functions, not fixtures: those are in conftest.py).

Import with ``from factories import ...``: pytest puts ``tests/``, the folder of the rootmost
conftest.py, on ``sys.path`` (default "prepend" import mode), whatever the test module's folder.

- The tiny synthetic training dataset and run configs (training/, analysis/, test_demo.py):
  :func:`synthetic_configuration` (what the ``dataset`` fixture writes), :func:`write_config`,
  :func:`read_metrics`, :data:`MODELS` (tiny ``[model]`` sections).
- Small float64 equivariant models' inputs (nn/, training/, test_testing.py): :data:`SMALL`,
  :func:`graph`, :func:`random_configuration`, and :func:`two_graphs` / :data:`SMALL_MODELS`
  for the compile and mixed-precision tests.
- Miniature files in the exact format of Bapst et al. (2020) (data/test_bapst.py,
  experiments/): :func:`make_bapst_data`, :func:`dump_bapst`, :func:`write_bapst_file`.
  The real files cannot be downloaded here; these follow the layout of the public ones
  (see ``equiglass/data/bapst.py``): a protocol-3 pickle of one dict with ``time`` a list of
  floats starting at 0, ``time_indices`` a list of ints not sorted by time,
  ``trajectory_start_velocities`` a list of [N, 3] arrays and ``trajectory_target_positions``
  a list (time) of lists (trajectory) of [N, 3] arrays of unwrapped positions.
"""

from __future__ import annotations

import csv
import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data

from equiglass.data.format import configuration_filename, write_configuration, write_manifest
from equiglass.data.geometry import wrap
from equiglass.data.graphs import neighbour_list
from equiglass.nn import EquivariantConfig, EquivariantPropensityModel
from equiglass.nn.bapst_gnn import BapstConfig, BapstGNN
from equiglass.training.config import to_toml

#: Number density of the synthetic dataset and of the miniature Bapst files.
DENSITY = 1.2

# ------------------------------------------------------------------ synthetic training dataset

TIMES = np.array([0.1, 1.0, 10.0])
N_PARTICLES = 300  # box 6.3: above 2 x the ridge descriptors' neighbour cutoff of 3.0
ABSENT = ("is_positions", "is_potential_energy", "msd", "self_intermediate_scattering")

TINY_EQUIVARIANT = {"kind": "equivariant", "l_max": 1, "channels": 4, "n_layers": 2, "num_basis": 4,
                    "radial_hidden": [8], "decoder_hidden": [16]}
#: Tiny [model] sections.
MODELS: dict[str, dict[str, Any]] = {
    "equivariant": TINY_EQUIVARIANT,
    "equivariant_l0": {**TINY_EQUIVARIANT, "l_max": 0},
    "bapst": {"kind": "bapst", "mlp_hidden": [16, 16], "n_steps": 2},
    "ridge": {"kind": "ridge", "radial_centres": [1.0, 1.2, 1.4, 1.6], "angular_centres": [1.0],
              "angular_orders": [4, 6], "coarse_lengths": [0.0], "coarse_cutoff": 2.0},
    "force": {"kind": "ridge", "radial_centres": [], "angular_orders": [], "coarse_lengths": [0.0], "use_force": True},
    "displacement": {"kind": "ridge", "radial_centres": [], "angular_orders": [], "coarse_lengths": [0.0],
                     "use_is_displacement": True},
}

def synthetic_configuration(seed: int) -> dict[str, np.ndarray]:
    """Random positions at density 1.2; propensity = a decreasing function of the neighbour count within 1.3."""
    rng = np.random.default_rng(seed)
    box = np.full(3, (N_PARTICLES / DENSITY) ** (1 / 3))
    positions = rng.uniform(0, box, (N_PARTICLES, 3))
    edge_index, _ = neighbour_list(positions, box, 1.3)
    count = np.bincount(edge_index[1].numpy(), minlength=N_PARTICLES).astype(np.float64)
    z = (count - count.mean()) / count.std()
    mobility = 0.2 + 1.0 / (1.0 + np.exp(z))
    propensity = np.stack([(1 + k) * mobility + 0.05 * rng.random(N_PARTICLES) for k in range(len(TIMES))])
    return {
        "positions": positions,
        "types": (rng.random(N_PARTICLES) < 0.2).astype(np.int64),
        "box": box,
        "times": TIMES,
        "propensity": propensity,
        "potential_energy": rng.normal(-6.5, 0.2, N_PARTICLES) - 0.5 * z,
    }


def with_inherent_state(index: int, fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``fields`` with an inherent state: every particle 0.1 (rms per component) from its position,
    drawn by configuration ``index``; a ``change`` for :func:`write_dataset`."""
    vibration = np.random.default_rng(100 + index).normal(0, 0.1, fields["positions"].shape)
    return {**fields, "is_positions": wrap(fields["positions"] - vibration, fields["box"]),
            "is_potential_energy": fields["potential_energy"] - 1.0}


def write_dataset(
    directory: Path,
    n_configurations: int = 8,
    change: Callable[[int, dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
    absent: Sequence[str] = ABSENT,
) -> Path:
    """A dataset of ``n_configurations`` :func:`synthetic_configuration` s in ``directory``,
    configuration ``k`` passed through ``change(k, fields)`` when given, lacking the fields ``absent``."""
    entries = []
    for index in range(n_configurations):
        fields = synthetic_configuration(index)
        fields = fields if change is None else change(index, fields)
        name = configuration_filename(index)
        write_configuration(directory / name, fields, n_particles=N_PARTICLES, density=DENSITY, times=TIMES,
                            absent=tuple(absent))
        entries.append({"file": name})
    write_manifest(directory, {
        "source": "test", "n_particles": N_PARTICLES, "density": DENSITY, "temperature": 0.5,
        "times": TIMES.tolist(), "configurations": entries, "absent_fields": list(absent),
        "propensity_definition": "synthetic",
    })
    return directory


def write_config(
    directory: Path,
    dataset: Path,
    model: str = "equivariant",
    *,
    data: dict[str, Any] | None = None,
    model_options: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
) -> Path:
    """``directory/<model>.toml``: the tiny ``model`` on ``dataset`` (given relative to the file), 1 epoch,
    with the entries of ``data``, ``model_options`` and ``train`` added or replaced."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{model}.toml"
    content = {
        "data": {"dataset": os.path.relpath(dataset, directory), "split": [6, 2, 0], **(data or {})},
        "model": {**MODELS[model], **(model_options or {})},
        "train": {"epochs": 1, "lr": 0.01, "threads": 1, **(train or {})},
    }
    path.write_text(to_toml(content))
    return path


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    """The rows of ``run_dir/metrics.csv`` (one per epoch), as strings."""
    with open(run_dir / "metrics.csv") as stream:
        return list(csv.DictReader(stream))


# ------------------------------------------------------------------ small equivariant models

CUTOFF = 2.0
#: A small model: every code path of the default one (residual middle layer, l up to 2).
SMALL = dict(
    n_timescales=3,
    channels=4,
    n_layers=3,
    num_basis=4,
    radial_hidden=(8,),
    decoder_hidden=(8,),
    avg_num_neighbours=10.0,
    cutoff=CUTOFF,
)


def graph(
    pos: torch.Tensor, box: torch.Tensor, types: torch.Tensor, energy: torch.Tensor, cutoff: float = CUTOFF
) -> Data:
    """Float64 graph of one configuration, edges from :func:`equiglass.data.graphs.neighbour_list`."""
    edge_index, edge_shift = neighbour_list(pos, box, cutoff)
    return Data(
        pos=pos.double(),
        types=types,
        box=box.double().reshape(1, 3),
        edge_index=edge_index,
        edge_shift=edge_shift,
        potential_energy=energy.double(),
        num_nodes=pos.shape[0],
    )


Configuration = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def random_configuration(n: int, side: float, seed: int) -> Configuration:
    """``(pos [n, 3], box [3], types [n], potential_energy [n])``: uniform positions in a cube of side ``side``."""
    generator = torch.Generator().manual_seed(seed)
    box = torch.full((3,), side, dtype=torch.float64)
    pos = torch.rand(n, 3, generator=generator, dtype=torch.float64) * box
    types = (torch.rand(n, generator=generator) < 0.3).long()
    energy = -6.0 + torch.randn(n, generator=generator, dtype=torch.float64)
    return pos, box, types, energy


def two_graphs() -> list:
    """Two float32 graphs of different sizes (a compiled model must not be tied to one shape)."""
    graphs = [graph(*random_configuration(n, 5.0, seed=n)) for n in (50, 64)]
    for data in graphs:
        data.pos, data.box, data.potential_energy = data.pos.float(), data.box.float(), data.potential_energy.float()
    return graphs


#: Name -> builder of a small float32 model (compile and mixed-precision tests).
SMALL_MODELS: dict[str, Callable[[], torch.nn.Module]] = {
    "equivariant": lambda: EquivariantPropensityModel(EquivariantConfig(**SMALL)),
    "bapst": lambda: BapstGNN(BapstConfig(n_timescales=3, mlp_hidden=(16, 16), n_steps=2)),
}


# ------------------------------------------------------------------ miniature Bapst files


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


def write_bapst_file(path: str | Path, rng: np.random.Generator, *args: Any, **options: Any) -> dict[str, Any]:
    """Write a miniature Bapst file of :func:`make_bapst_data` ``(rng, *args, **options)`` and return its dict."""
    data = make_bapst_data(rng, *args, **options)
    dump_bapst(path, data)
    return data


# ------------------------------------------------------------------ miniature Shiba et al. and GlassBench files

#: Temperature of the miniature Shiba and GlassBench files: the one with a bundled time table.
PUBLISHED_TEMPERATURE = 0.44
#: GlassBench's (and Shiba's tc01..tc10) time table at T = 0.44, for the tests' own checks.
PUBLISHED_TIMES = (0.13, 1.3, 13.0, 130.0, 412.0, 1300.0, 4120.0, 13000.0, 41200.0, 130000.0)


def ka_lattice(rng: np.random.Generator, n_particles: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A jittered simple-cubic lattice filling the box of ``n_particles`` (a cube) at density 1.2,
    in [0, L), with 80:20 A:B types (int8, as Shiba's files). Returns (positions [N, 3], types [N])."""
    side = round(n_particles ** (1 / 3))
    box_length = (n_particles / DENSITY) ** (1 / 3)
    lattice = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    positions = (lattice + 0.5 + rng.uniform(-0.1, 0.1, size=(n_particles, 3))) * box_length / side
    types = np.zeros(n_particles, dtype=np.int8)
    types[: n_particles // 5] = 1
    return positions, rng.permutation(types)


def make_shiba_data(
    rng: np.random.Generator, n_particles: int = 64, n_trajectories: int = 6, crossings: int = 3
) -> dict[str, np.ndarray]:
    """A Shiba-format dict: ``initial_positions`` in [0, L), ``positions`` [R, N, 3] unwrapped from them.

    Particle 0 crosses the box ``crossings`` times along x, to the right in even trajectories and
    to the left in odd ones (|displacement| about ``crossings`` x L); the others take Gaussian steps.
    """
    initial, types = ka_lattice(rng, n_particles)
    box_length = (n_particles / DENSITY) ** (1 / 3)
    steps = rng.normal(scale=0.3, size=(n_trajectories, n_particles, 3))
    signs = np.where(np.arange(n_trajectories) % 2 == 0, 1.0, -1.0)
    steps[:, 0, 0] = signs * (crossings + 0.3) * box_length
    return {"types": types, "initial_positions": initial, "positions": initial + steps}


def write_npz(path: str | Path, **arrays: Any) -> Path:
    """Write ``arrays`` as an uncompressed ``.npz`` (as Shiba's and GlassBench's files are); object
    arrays are pickled into it, as numpy does."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as stream:
        np.savez(stream, **arrays)
    return path


def make_glassbench_data(
    rng: np.random.Generator, n_particles: int = 64, *, test: bool = False, cage: bool = True
) -> dict[str, np.ndarray]:
    """A GlassBench-format dict at the 10 times: positions in [-L/2, L/2), inherent and cage positions
    within 0.1 of them (some across the boundary, not re-wrapped), ``md_prop`` >= 0, ``bb_prop``;
    test files add the four published predictions, SBO as [N] and DEN as [10, N]."""
    positions, types = ka_lattice(rng, n_particles)
    box_length = (n_particles / DENSITY) ** (1 / 3)
    centred = positions - box_length / 2
    n_times = len(PUBLISHED_TIMES)
    data = {
        "types": types.astype(np.int64),
        "initial_positions": centred,
        "initial_positions_inherent": centred + rng.normal(scale=0.05, size=centred.shape),
        "md_prop": rng.uniform(0.0, 3.0, size=(n_times, n_particles)),
        "bb_prop": rng.uniform(0.0, 1.0, size=(n_times, n_particles)),
    }
    if cage:
        data["initial_positions_cage"] = centred + rng.normal(scale=0.05, size=centred.shape)
    if test:
        data.update({name: rng.normal(size=(n_times, n_particles)) for name in ("BOTAN", "CAGE", "GlassMLP", "SE3")})
        data["SBO"] = rng.normal(size=n_particles)
        data["DEN"] = rng.normal(size=(n_times, n_particles))
    return data


def write_glassbench_tree(
    root: str | Path, rng: np.random.Generator, split: str, indices: Any, n_particles: int = 64
) -> dict[int, dict[str, np.ndarray]]:
    """Write ``root/T0.44/{split}/N{N}T0.44_{i}.npz`` for each i of ``indices`` (cage positions only
    for i <= 100 and i > 400, as GlassBench); return {i: its dict}."""
    written = {}
    for index in indices:
        data = make_glassbench_data(rng, n_particles, test=split == "test", cage=index <= 100 or index > 400)
        name = f"T{PUBLISHED_TEMPERATURE:.2f}/{split}/N{n_particles}T{PUBLISHED_TEMPERATURE:.2f}_{index}.npz"
        write_npz(Path(root) / name, **data)
        written[index] = data
    return written


# ------------------------------------------------------------------ LAMMPS text dumps and replica trajectories


def write_lammps_dump(
    path: str | Path,
    frames: np.ndarray,
    types: np.ndarray,
    box: np.ndarray,
    *,
    columns: str = "x",
    origin: float = 0.0,
    steps: Sequence[int] | None = None,
    order: np.ndarray | None = None,
    tilt: tuple[float, float, float] | None = None,
) -> Path:
    """A LAMMPS text dump (``dump custom``, LAMMPS's documented layout) of unwrapped ``frames`` [F, N, 3].

    ``columns``: ``"x"`` wrapped ``x y z`` only, ``"x ix"`` wrapped with image flags ``ix iy iz``,
    ``"xu"`` unwrapped ``xu yu zu``. The box runs from ``origin`` to ``origin + box`` (``tilt``: a
    triclinic ``xy xz yz`` box), LAMMPS types are ``types + 1``, rows follow ``order`` (a permutation
    of the particles; ids are particle index + 1), frame f is at time step ``steps[f]``.
    """
    frames = np.asarray(frames, dtype=np.float64)
    origin = float(origin)
    n = frames.shape[1]
    order = np.arange(n) if order is None else order
    steps = range(0, 100 * len(frames), 100) if steps is None else steps
    names = {"x": "x y z", "x ix": "x y z ix iy iz", "xu": "xu yu zu"}[columns]
    if tilt is None:
        bounds = "ITEM: BOX BOUNDS pp pp pp\n" + "".join(f"{origin} {_dump_number(origin + side)}\n" for side in box)
    else:
        bounds = "ITEM: BOX BOUNDS xy xz yz pp pp pp\n" + "".join(
            f"{origin} {_dump_number(origin + side)} {value}\n" for side, value in zip(box, tilt))
    lines = []
    for step, unwrapped in zip(steps, frames):
        images = np.floor(unwrapped / box).astype(np.int64)
        wrapped = unwrapped - images * box + origin
        lines += [f"ITEM: TIMESTEP\n{step}\nITEM: NUMBER OF ATOMS\n{n}\n{bounds}ITEM: ATOMS id type {names}\n"]
        for i in order:
            row = {"x": [*wrapped[i]], "x ix": [*wrapped[i], *images[i]], "xu": [*(unwrapped[i] + origin)]}[columns]
            lines.append(f"{i + 1} {types[i] + 1} " + " ".join(map(_dump_number, row)) + "\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines))
    return path


def _dump_number(value: float | int) -> str:
    return str(int(value)) if isinstance(value, (int, np.integer)) else repr(float(value))


def replica_trajectories(
    rng: np.random.Generator, n_particles: int = 40, n_replicas: int = 4, n_frames: int = 30, box: float = 4.0,
    step: float = 0.4,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unwrapped iso-configurational trajectories [R, F, N, 3] from one initial configuration (frame 0),
    random steps of up to ``step`` per frame along each axis on top of a drift of ``step`` / 2 in x (so
    that particles cross the box several times); returns (trajectories, types [N], box [3])."""
    initial = rng.uniform(0, box, (n_particles, 3))
    moves = rng.uniform(-step, step, (n_replicas, n_frames - 1, n_particles, 3)) + [step / 2, 0.0, 0.0]
    paths = np.concatenate([np.zeros((n_replicas, 1, n_particles, 3)), np.cumsum(moves, axis=1)], axis=1)
    types = (rng.random(n_particles) < 0.2).astype(np.int64)
    return initial + paths, types, np.full(3, box)


def direct_targets(trajectories: np.ndarray) -> dict[str, np.ndarray]:
    """Propensity, msd [T, N] and halves [2, T, N] of unwrapped trajectories [R, F, N, 3], computed
    directly: displacements from frame 0 less their mean over particles, then the replica means."""
    delta = trajectories[:, 1:] - trajectories[:, :1]
    delta = delta - delta.mean(axis=2, keepdims=True)
    norm = np.sqrt((delta**2).sum(axis=-1))
    half = (len(trajectories) + 1) // 2  # the first half holds one more for an odd number
    return {"propensity": norm.mean(axis=0), "msd": (norm**2).mean(axis=0),
            "propensity_halves": np.stack([norm[:half].mean(axis=0), norm[half:].mean(axis=0)])}


# ------------------------------------------------------------------ targets of synthetic replicas (noise ceiling)


def replica_values(
    seed: int, replicas: int, n: int = N_PARTICLES, n_times: int = len(TIMES), signal_std: float = 0.3, noise_std: float = 0.6
) -> tuple[np.ndarray, np.ndarray]:
    """``(signal [T, N], |displacement| [R, T, N])``: a per-particle signal 3 + ``signal_std`` x Gaussian,
    each replica the signal plus Gaussian noise of std ``noise_std``; the ceiling of R-replica means is
    sqrt(signal_std² / (signal_std² + noise_std² / R))."""
    rng = np.random.default_rng(seed)
    signal = 3.0 + signal_std * rng.standard_normal((n_times, n))
    return signal, signal + noise_std * rng.standard_normal((replicas, n_times, n))


def replica_targets(values: np.ndarray) -> dict[str, np.ndarray]:
    """``propensity`` and ``msd`` [T, N], ``propensity_halves`` [2, T, N] of replica values [R, T, N]."""
    return {"propensity": values.mean(axis=0), "msd": (values**2).mean(axis=0),
            "propensity_halves": np.stack([half.mean(axis=0) for half in np.array_split(values, 2)])}


class PicklePayload:
    """Pickles as a call of ``function(*args)`` (what an attacker's pickle does): a reader that
    unpickles it runs the call, which the tests detect by its side effect."""

    def __init__(self, function: Callable, *args: Any):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args
