"""Reader and converter for the KA 3D files of GlassBench (Jung et al., "Roadmap on machine
learning glassy dynamics", arXiv:2311.14752; zenodo record 10118191, CC-BY-4.0), built on the
data of Shiba et al. (2023).

Layout: ``T{T}/{train,test}/N4096T{T}_{i}.npz``, i = 1-400 train, 401-500 test, T in
{0.44, 0.50, 0.56, 0.64}. Keys of one file (the public description of the benchmark; the real
files are not reachable from here, so this reader is strict):

* ``types`` [N] int; ``initial_positions`` [N, 3], wrapped into [-L/2, L/2) (reported; [0, L) is
  accepted too), L = (N / 1.2)^(1/3); ``initial_positions_inherent`` [N, 3];
  ``initial_positions_cage`` [N, 3] (only i <= 100 and 401-500);
* ``md_prop`` [T, N] iso-configurational propensity and ``bb_prop`` [T, N] bond-breaking at the
  T = 10 times of :data:`~equiglass.data.published.GLASSBENCH_TIMES`;
* test files: the published models' predictions :data:`~equiglass.data.format.PUBLISHED_MODELS`
  [T, N] (required) and descriptors :data:`~equiglass.data.format.PUBLISHED_DESCRIPTORS`
  ([N] or [T, N], kept where present).

Everything is kept: inherent positions as ``is_positions``, cage positions as
``cage_positions``, ``bond_breaking``, ``published_<MODEL>``, ``descriptor_<NAME>`` (see
:mod:`equiglass.data.format`). Positions of every kind are stored wrapped into [0, L).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from equiglass.data.format import PUBLISHED_DESCRIPTORS, PUBLISHED_MODELS
from equiglass.data.geometry import wrap
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

GLASSBENCH_NAME = re.compile(r"N(?P<n>\d+)T(?P<temperature>\d+(?:\.\d+)?)_(?P<index>\d+)\.npz")
GLASSBENCH_KEYS = ("types", "initial_positions", "initial_positions_inherent", "md_prop", "bb_prop")
CAGE_KEY = "initial_positions_cage"
Split = Literal["train", "test"]

#: Inherent and cage positions are the thermal ones relaxed: their median (minimum-image)
#: distance from them is about 0.1; beyond this (LJ lengths) they belong to another configuration.
MAX_MEDIAN_RELAXATION = 0.5

PROPENSITY_DEFINITION = (
    "GlassBench md_prop (Jung et al. 2025, from Shiba et al.'s 32 iso-configurational trajectories): mean over "
    "the trajectories of |x_i(t) - x_i(0)|"
)
#: Fields GlassBench's files never provide.
GLASSBENCH_ABSENT_FIELDS = (
    "potential_energy",
    "is_potential_energy",
    "msd",
    "propensity_halves",
    "self_intermediate_scattering",
)
PREDICTION_FIELDS = tuple(f"published_{name}" for name in PUBLISHED_MODELS)
DESCRIPTOR_FIELDS = tuple(f"descriptor_{name}" for name in PUBLISHED_DESCRIPTORS)


def glassbench_directory(root: str | Path, temperature: float, split: Split) -> Path:
    """``root/T{T:.2f}/{split}``: where GlassBench keeps one temperature's split."""
    return Path(root) / f"T{temperature:.2f}" / split


def find_glassbench_files(root: str | Path, temperature: float, split: Split) -> list[Path]:
    """The files ``N{N}T{T}_{i}.npz`` of one temperature and split, sorted by i.

    Raises :class:`DataError` when the directory holds none, or a file of another temperature."""
    directory = glassbench_directory(root, temperature, split)
    files = sorted(directory.glob("N*T*_*.npz"))
    if not files:
        raise DataError(directory, "no GlassBench files N{N}T{T}_{i}.npz here")
    for path in files:
        if abs(_name(path)[1] - temperature) > 1e-9:
            raise DataError(path, f"named for another temperature than {temperature}")
    return sorted(files, key=lambda path: _name(path)[2])


def _name(path: Path) -> tuple[int, float, int]:
    """(N, temperature, index) from ``N{N}T{T}_{i}.npz``."""
    match = GLASSBENCH_NAME.fullmatch(path.name)
    if match is None:
        raise DataError(path, "not a GlassBench file name (expected N{N}T{T}_{i}.npz)")
    return int(match["n"]), float(match["temperature"]), int(match["index"])


def read_glassbench_file(path: str | Path, n_times: int, split: Split) -> dict[str, np.ndarray]:
    """One GlassBench file as fields of our format (only those it holds).

    Raises :class:`DataError` naming the file when it is missing, truncated or corrupt, holds an
    object array, lacks a key (test files: also the four published predictions), holds arrays of
    the wrong dtype or shape (N from the name, ``n_times`` rows), NaN or infinite values, types
    outside {0, 1}, positions outside [-L/2, L/2) and [0, L) or not filling that box (L from N and
    density 1.2), or inherent / cage positions that are not the same particles relaxed.
    """
    path = Path(path)
    n_particles = _name(path)[0]
    required = (*GLASSBENCH_KEYS, *(PUBLISHED_MODELS if split == "test" else ()))
    data = load_npz(path, required, optional=(CAGE_KEY, *PUBLISHED_DESCRIPTORS))
    sizes = {"N": n_particles, "T": n_times}
    box = kob_andersen_box(n_particles)
    types = checked_array(data, "types", "N", sizes, path, integer=True)
    check_types(types, path)
    thermal = checked_array(data, "initial_positions", "N3", sizes, path)
    fields = {
        "positions": wrapped_positions(thermal, box, "initial_positions", path, centred_ok=True),
        "types": types,
        "box": box,
        "propensity": checked_array(data, "md_prop", "TN", sizes, path),
        "bond_breaking": checked_array(data, "bb_prop", "TN", sizes, path),
        "is_positions": _relaxed(data, "initial_positions_inherent", thermal, box, path),
    }
    if np.any(fields["propensity"] < 0):
        raise DataError(path, f"'md_prop' holds {np.count_nonzero(fields['propensity'] < 0)} negative propensities")
    if CAGE_KEY in data:
        fields["cage_positions"] = _relaxed(data, CAGE_KEY, thermal, box, path)
    for name in PUBLISHED_MODELS if split == "test" else ():
        fields[f"published_{name}"] = checked_array(data, name, "TN", sizes, path)
    for name in PUBLISHED_DESCRIPTORS:
        if name in data:
            static = np.ndim(data[name]) == 1
            value = checked_array(data, name, "N" if static else "TN", sizes, path)
            fields[f"descriptor_{name}"] = np.broadcast_to(value, (n_times, n_particles)) if static else value
    return fields


def _relaxed(data: dict[str, np.ndarray], key: str, thermal: np.ndarray, box: np.ndarray, path: Path) -> np.ndarray:
    """[N, 3] inherent or cage positions ``data[key]``, wrapped, after checking they are the
    thermal positions relaxed (median minimum-image distance below :data:`MAX_MEDIAN_RELAXATION`)."""
    positions = checked_array(data, key, "N3", {"N": len(thermal)}, path)
    step = positions - thermal
    step -= box * np.round(step / box)
    median = float(np.median(np.linalg.norm(step, axis=1)))
    if median > MAX_MEDIAN_RELAXATION:
        raise DataError(
            path, f"'{key}' lies a median {median:.3g} from initial_positions (minimum image, L = {box[0]:.7g}): "
            "not the same particles relaxed, or not the same box"
        )
    return wrap(positions, box)


def _converted(
    path: Path, temperature: float, table: np.ndarray, split: Split
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """One GlassBench file as (facts, fields, manifest entry)."""
    fields = read_glassbench_file(path, len(table), split)
    fields["times"] = table
    facts = {
        "n_particles": len(fields["types"]),
        "density": KA_DENSITY,
        "temperature": temperature,
        "times": table.tolist(),
    }
    lacking = [name for name in ("cage_positions", *DESCRIPTOR_FIELDS) if name not in fields]
    return facts, fields, {"source_file": path.name, "index": _name(path)[2], "absent_fields": lacking}


def convert_glassbench(
    root: str | Path,
    dest: str | Path,
    *,
    temperature: float,
    split: Split,
    times: Sequence[float] | None = None,
    command: str | None = None,
) -> Path:
    """Convert one temperature and split of GlassBench (``root/T{T}/{split}``) into ``dest``.

    One file = one configuration (:func:`read_glassbench_file`), with ``times`` the table of
    the temperature (default: the bundled one, :data:`~equiglass.data.published.GLASSBENCH_TIMES`;
    other temperatures need it). The manifest's ``absent_fields`` lists what the split never
    has (training files: the published predictions, read from test files only); each configuration entry's
    ``absent_fields`` lists the cage positions and descriptors that file lacks. Resumable, file
    by file, with a progress bar (:func:`~equiglass.data.published.convert_groups`). Returns ``dest``.
    """
    if split not in ("train", "test"):
        raise DataError(root, f"split must be 'train' or 'test', got {split!r}")
    files = find_glassbench_files(root, temperature, split)
    table = published_times(temperature, times, files[0])
    never = PREDICTION_FIELDS if split == "train" else ()
    header = {
        "source": "glassbench",
        "split": split,
        "absent_fields": [*GLASSBENCH_ABSENT_FIELDS, *never],
        "propensity_definition": PROPENSITY_DEFINITION,
        "bond_breaking_definition": "GlassBench bb_prop, as published",
        "published_predictions": [] if split == "train" else list(PREDICTION_FIELDS),
        "times_source": "given" if times is not None else "GlassBench KA_results/times_<T>.dat (bundled)",
        "source_path": str(glassbench_directory(root, temperature, split)),
        "command": command if command is not None else (
            f"convert_glassbench({str(root)!r}, {str(dest)!r}, temperature={temperature}, split={split!r})"
        ),
    }
    groups = {path.name: [path] for path in files}
    return convert_groups(dest, groups, lambda paths: _converted(paths[0], temperature, table, split), header)
