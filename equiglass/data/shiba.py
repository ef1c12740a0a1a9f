"""Reader and converter for the iso-configurational files of Shiba et al. (BOTAN, J. Chem. Phys.
158, 084503, 2023), the trajectories behind GlassBench's KA 3D data.

One file, ``isoconfig_N{N}T{T}_{i}_tc{XX}.npz`` (uncompressed ``.npz``; a public sample is in
the GitHub repository h3-Open-BDEC/pyg_botan, ``small_data/``), holds configuration ``i`` at
temperature ``T`` and the time point of index ``XX`` (1-based: ``tc07`` is the 7th time of
:data:`~equiglass.data.published.GLASSBENCH_TIMES`, 4120 ≈ τ_α at T = 0.44):

* ``types`` [N] int (0 = A, 1 = B);
* ``initial_positions`` [N, 3] float, wrapped into [0, L), L = (N / 1.2)^(1/3) = 15.05658 at N = 4096;
* ``positions`` [R, N, 3] float: the *unwrapped* positions of the R = 32 trajectories at that time.

The trajectories start from the stored, wrapped ``initial_positions`` (checked on the 15 public
files: the centre of mass of ``positions - initial_positions`` is below 2e-11, where one particle
off by a box length would move it by L / N ≈ 4e-3), so the displacement is exactly
``positions - initial_positions``, unwrapped, with no minimum image (a particle may cross the box
several times). A file whose trajectories are not in that frame (a particle's displacement
averaged over the trajectories beyond half a box) is refused.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from equiglass.data.published import (
    KA_DENSITY,
    check_types,
    checked_array,
    convert_groups,
    kob_andersen_box,
    load_npz,
    published_times,
    wrapped_positions,
)
from equiglass.errors import DataError
from equiglass.physics import observables

SHIBA_NAME = re.compile(r"isoconfig_N(?P<n>\d+)T(?P<temperature>\d+(?:\.\d+)?)_(?P<index>\d+)_tc(?P<tc>\d+)\.npz")
SHIBA_KEYS = ("types", "initial_positions", "positions")

#: Wave number of the self-intermediate scattering function stored per configuration (1 / σ_AA).
FS_WAVE_NUMBER = 7.25

PROPENSITY_DEFINITION = (
    "Shiba et al. (2023), as in their load_data.py: mean over the 32 iso-configurational trajectories of "
    "|x_i(t) - x_i(0)|, unwrapped positions minus the stored initial positions, no centre-of-mass correction"
)
MSD_DEFINITION = "mean over the same trajectories of |x_i(t) - x_i(0)|^2"
HALVES_DEFINITION = "propensity over the first and the second half of the trajectories of the file (the first holds one more when R is odd)"

#: Fields of our format that Shiba's files cannot provide.
SHIBA_ABSENT_FIELDS = (
    "is_positions",
    "potential_energy",
    "is_potential_energy",
    "cage_positions",
    "bond_breaking",
)


@dataclass(frozen=True)
class ShibaName:
    """What a Shiba file's name says: N, temperature, configuration index and 1-based time index."""

    n_particles: int
    temperature: float
    index: int
    time_index: int


@dataclass(frozen=True, eq=False)
class ShibaFile:
    """One validated Shiba file.

    Attributes:
        types: [N] int, 0 = A, 1 = B.
        initial_positions: [N, 3] as stored, in [0, L).
        positions: [R, N, 3] unwrapped positions of the R trajectories, same frame as the initial ones.
        box: [3] the box implied by N and density 1.2.
    """

    types: np.ndarray
    initial_positions: np.ndarray
    positions: np.ndarray
    box: np.ndarray


def parse_shiba_name(path: str | Path) -> ShibaName:
    """Parse ``isoconfig_N{N}T{T}_{i}_tc{XX}.npz``; :class:`DataError` if the name does not match."""
    match = SHIBA_NAME.fullmatch(Path(path).name)
    if match is None:
        raise DataError(path, "not a Shiba et al. file name (expected isoconfig_N{N}T{T}_{i}_tc{XX}.npz)")
    return ShibaName(int(match["n"]), float(match["temperature"]), int(match["index"]), int(match["tc"]))


def find_shiba_files(sources: Sequence[str | Path]) -> list[Path]:
    """Every Shiba file named by ``sources`` (files, directories, glob patterns), sorted by
    configuration and time index; :class:`DataError` when one source matches nothing."""
    files: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found = sorted(path.glob("isoconfig_*.npz"))
        elif path.is_file():
            found = [path]
        else:
            found = [Path(name) for name in sorted(glob.glob(str(source)))]
        if not found:
            raise DataError(path, "no Shiba et al. files found (expected files, directories or a glob pattern)")
        files.extend(found)
    names = {path: parse_shiba_name(path) for path in files}
    return sorted(set(files), key=lambda path: (names[path].index, names[path].time_index, str(path)))


def read_shiba_file(path: str | Path) -> ShibaFile:
    """Read and validate one Shiba file.

    Raises :class:`DataError` naming the file when it is missing, truncated or corrupt, holds an
    object array, lacks a key, holds arrays of the wrong dtype or shape (N must be the name's),
    NaN or infinite values, types outside {0, 1}, initial positions outside [0, L) or not filling
    that box (L from N and density 1.2), or trajectories not in the frame of the initial positions.
    """
    path = Path(path)
    name = parse_shiba_name(path)
    data = load_npz(path, SHIBA_KEYS)
    sizes = {"N": name.n_particles}
    types = checked_array(data, "types", "N", sizes, path, integer=True)
    initial = checked_array(data, "initial_positions", "N3", sizes, path)
    positions = checked_array(data, "positions", "RN3", sizes, path)
    check_types(types, path)
    box = kob_andersen_box(name.n_particles)
    wrapped_positions(initial, box, "initial_positions", path, centred_ok=False)
    mean_displacement = (positions - initial).mean(axis=0)  # [N, 3]
    off = np.abs(mean_displacement) >= box / 2
    if np.any(off):
        particles = np.flatnonzero(off.any(axis=1))
        raise DataError(
            path, f"{particles.size} particles (first {particles[0]}) have trajectories on average half a box or more "
            "from initial_positions: 'positions' are not unwrapped from the stored initial positions"
        )
    return ShibaFile(types=types, initial_positions=initial, positions=positions, box=box)


def shiba_targets(initial: np.ndarray, trajectories: np.ndarray, types: np.ndarray) -> dict[str, np.ndarray]:
    """Targets of one configuration from its trajectories.

    Args:
        initial: [N, 3] initial positions, in the frame the trajectories were unwrapped from.
        trajectories: [R, T, N, 3] unwrapped positions (LJ lengths).
        types: [N] 0 = A, 1 = B.

    Returns:
        ``propensity`` [T, N] mean |Δr|, ``msd`` [T, N] mean |Δr|², ``propensity_halves`` [2, T, N]
        (first and second half of the trajectories, see
        :func:`~equiglass.physics.observables.propensity_halves`), ``self_intermediate_scattering`` [T]
        (F_s of the A particles at q = :data:`FS_WAVE_NUMBER`).
    """
    delta = observables.displacements(trajectories, initial, remove_centre_of_mass=False)  # [R, T, N, 3]
    return {
        **observables.iso_configurational_targets(delta),
        "self_intermediate_scattering": observables.self_intermediate_scattering(delta, FS_WAVE_NUMBER, types == 0),
    }


def _converted(paths: Sequence[Path], times: Sequence[float] | None) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """The files of one configuration (one per time index) as (facts, fields, manifest entry)."""
    names = [parse_shiba_name(path) for path in paths]
    table = published_times(names[0].temperature, times, paths[0])
    files = [read_shiba_file(path) for path in paths]
    first = files[0]
    for path, name, file in zip(paths, names, files):
        if not 1 <= name.time_index <= len(table):
            raise DataError(path, f"time index tc{name.time_index:02d} is outside the {len(table)} times {table.tolist()}")
        if not (np.array_equal(file.types, first.types) and np.array_equal(file.initial_positions, first.initial_positions)):
            raise DataError(path, f"types or initial_positions differ from those of {paths[0].name}: not one configuration")
        if file.positions.shape != first.positions.shape:
            raise DataError(path, f"holds {file.positions.shape[0]} trajectories, {paths[0].name} {first.positions.shape[0]}")
    trajectories = np.stack([file.positions for file in files], axis=1)  # [R, T, N, 3]
    fields = {
        "positions": wrapped_positions(first.initial_positions, first.box, "initial_positions", paths[0], centred_ok=False),
        "types": first.types,
        "box": first.box,
        "times": table[[name.time_index - 1 for name in names]],
        **shiba_targets(first.initial_positions, trajectories, first.types),
    }
    facts = {
        "n_particles": names[0].n_particles,
        "density": KA_DENSITY,
        "temperature": names[0].temperature,
        "times": fields["times"].tolist(),
    }
    entry = {"source_files": [path.name for path in paths], "n_trajectories": int(trajectories.shape[0])}
    return facts, fields, entry


def convert_shiba(
    sources: Sequence[str | Path],
    dest: str | Path,
    *,
    times: Sequence[float] | None = None,
    command: str | None = None,
) -> Path:
    """Convert Shiba et al. files into an equiglass dataset directory ``dest``.

    The files of one configuration ``i`` (several ``tcXX`` time indices) become one configuration:
    positions (the initial ones, wrapped), types, box, the times of their time indices, and
    :func:`shiba_targets`. Every configuration must have the same time indices, N and temperature.
    ``times`` is the full time table of the temperature (index k - 1 for ``tcXX`` = k); without it
    the bundled table (:data:`~equiglass.data.published.GLASSBENCH_TIMES`) is used, and a
    temperature without one is refused. Resumable, file by file, with a progress bar
    (:func:`~equiglass.data.published.convert_groups`). Returns ``dest``.
    """
    groups: dict[str, list[Path]] = {}
    for path in find_shiba_files(sources):
        name = parse_shiba_name(path)
        key = f"N{name.n_particles}T{name.temperature:g}_{name.index}"
        if any(parse_shiba_name(other).time_index == name.time_index for other in groups.get(key, [])):
            raise DataError(path, f"a second file for configuration {name.index} at tc{name.time_index:02d}")
        groups.setdefault(key, []).append(path)
    header = {
        "source": "shiba",
        "absent_fields": list(SHIBA_ABSENT_FIELDS),
        "q": FS_WAVE_NUMBER,
        "propensity_definition": PROPENSITY_DEFINITION,
        "msd_definition": MSD_DEFINITION,
        "propensity_halves_definition": HALVES_DEFINITION,
        "times_source": "given" if times is not None else "GlassBench KA_results/times_<T>.dat (bundled)",
        "source_paths": [str(source) for source in sources],
        "command": command if command is not None else f"convert_shiba({[str(s) for s in sources]!r}, {str(dest)!r})",
    }
    return convert_groups(dest, groups, lambda paths: _converted(paths, times), header)
