"""Reader, converter and exporter for the files of Bapst et al. (2020).

One Bapst file is a pickle (protocol 3) of one ``dict`` describing one
equilibrated Kob–Andersen configuration and its iso-configurational
trajectories (see ``/work/shared/reference/bapst_dataset.md`` and the README of
``glassy_dynamics/`` in google-deepmind/deepmind-research). This module

* reads such files without ever running code from them
  (:class:`RestrictedUnpickler`) and validates every field
  (:func:`read_bapst_file`, :func:`read_bapst`);
* computes Bapst's target, the propensity (:func:`bapst_propensity`);
* converts a set of files into an equiglass dataset (:func:`convert_bapst`);
* writes equiglass datasets back as Bapst files, so that tools built for that
  dataset read ours (:func:`export_bapst`).

Facts about the real files, checked on ``glassy_dynamics/testdata/test_small.pickle``
of that repository (20 of the 4096 particles, in the full box): ``time`` is a
list of 169 floats starting at 0.0, ``time_indices`` a list of 10 ints that is
*not* sorted by time (the last stored point, where F_s = 1/e, lies between the
6th and 7th), 30 trajectories, ``trajectory_start_velocities`` a list of
``[N, 3]`` arrays, ``trajectory_target_positions`` a list (time) of lists
(trajectory) of ``[N, 3]`` arrays, and the only globals the pickle references
are ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and ``numpy.dtype``.

LJ units throughout.
"""

from __future__ import annotations

import functools
import glob
import math
import numbers
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from equiglass.data.format import (
    DENSITY_TOLERANCE,
    MANIFEST_NAME,
    Dataset,
    atomic_write,
    configuration_filename,
    load_dataset,
    write_configuration,
    write_manifest,
)
from equiglass.data.geometry import wrap
from equiglass.errors import DataError
from equiglass.physics.kob_andersen import potential_energy_and_forces

#: The keys of a Bapst file (``trajectory_start_velocities`` may be missing).
BAPST_KEYS = (
    "positions",
    "types",
    "box",
    "time",
    "time_indices",
    "is_values",
    "trajectory_start_velocities",
    "trajectory_target_positions",
    "metadata",
)
OPTIONAL_BAPST_KEYS = ("trajectory_start_velocities",)

#: Bapst's name of the fluid, as in the metadata of the public files.
KOB_ANDERSEN_FLUID = "Kob Andersen"

#: No two Kob–Andersen particles come this close (V_AB(0.4) ≈ 2.5e4 ε): a pair
#: closer than this once the positions are wrapped means the box does not fit them.
MIN_PAIR_DISTANCE = 0.4

PROPENSITY_DEFINITION = (
    "Bapst et al. (2020): mean over the iso-configurational trajectories of |x_i(t) - x_i(0)|, "
    "the Euclidean norm of the unwrapped displacement, without removing the centre-of-mass drift"
)
MSD_DEFINITION = "mean over the same trajectories of |x_i(t) - x_i(0)|^2 (unwrapped, no centre-of-mass correction)"
POTENTIAL_ENERGY_DEFINITION = (
    "not in Bapst's files: computed by equiglass from the positions with the exact Kob-Andersen potential "
    "(equiglass.physics.kob_andersen.potential_energy_and_forces; each pair energy split half and half)"
)

#: Fields of our format that Bapst's files cannot provide: no inherent states, and
#: ``is_values`` are the F_s levels that chose the time points, not a
#: per-configuration measurement.
BAPST_ABSENT_FIELDS = ("is_positions", "is_potential_energy", "self_intermediate_scattering")

EXPORT_NOTE = (
    "Written by equiglass export_bapst. trajectory_target_positions are synthetic: one trajectory per stored "
    "time, x_i(t_k) = positions_i + propensity_i(t_k) * (1, 0, 0), so that Bapst's target (the mean over "
    "trajectories of |x_i(t_k) - positions_i|) equals the stored propensity. They are not physical positions, "
    "the mean squared displacement cannot be recovered from them, and trajectory_start_velocities are NaN "
    "(unknown). positions are wrapped into the box."
)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that admits only the globals Bapst's files need.

    Every other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``,
    ``functools.partial``, ``numpy.load``, ...) raises :class:`DataError`
    naming the file, before anything is called. The admitted objects are
    looked up in :data:`ADMITTED_GLOBALS`: nothing is ever imported by name.

    Containers (dict, list, tuple), str, bytes, int, float, bool and None
    have their own opcodes in protocol 3 and need no global; ``bytes`` are
    ``BINBYTES``, so ``_codecs.encode`` (used only for bytes by protocols 0-2)
    is refused.
    """

    def __init__(self, stream: Any, path: str | Path):
        super().__init__(stream)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ADMITTED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                self.path,
                f"refused to load: the pickle asks for the global '{module}.{name}', which a Bapst file never "
                "needs (only numpy array reconstruction is admitted); the file is corrupt or malicious",
            ) from None


#: (module, name) -> object, for the globals that pickled numpy arrays and
#: scalars reference. The functions are taken from numpy's own ``__reduce__``,
#: so both spellings (``numpy.core`` from numpy 1.x, which wrote Bapst's files,
#: and ``numpy._core`` from numpy 2.x) resolve without importing either module.
_MULTIARRAY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
ADMITTED_GLOBALS: dict[tuple[str, str], Any] = {
    # Rebuilds an empty array of the given class (only ndarray is admitted), shape and dtype;
    # the data then come from ndarray.__setstate__.
    **{(module, "_reconstruct"): np.ndarray((0,)).__reduce__()[0] for module in _MULTIARRAY_MODULES},
    # Rebuilds a numpy scalar (np.float64 metadata values) from a dtype and its raw bytes.
    **{(module, "scalar"): np.float64(0).__reduce__()[0] for module in _MULTIARRAY_MODULES},
    # The class passed to _reconstruct.
    ("numpy", "ndarray"): np.ndarray,
    # Every array and scalar pickles its dtype as numpy.dtype(code, align, copy) + __setstate__.
    ("numpy", "dtype"): np.dtype,
}


@dataclass(frozen=True, eq=False)
class BapstConfiguration:
    """One validated Bapst file (arrays are read-only float64 / int64 copies).

    Attributes:
        positions: [N, 3] the equilibrated configuration, as stored (unwrapped).
        types: [N] int, 0 = A (large), 1 = B (small).
        box: [3] side lengths of the periodic box.
        time: [K] the logarithmically sampled time points (LJ time units), increasing.
        time_indices: [T] int, index into ``time`` of each stored time point
            (in the file's order, which is not necessarily sorted by time).
        is_values: [T] F_s level of each stored time point; all NaN when unknown
            (files written by :func:`export_bapst` from data without F_s).
        start_velocities: [R, N, 3] the initial velocities of the trajectories,
            or None when the file has none (or only NaN, as :func:`export_bapst` writes).
        target_positions: [T, R, N, 3] unwrapped positions of each trajectory at
            each stored time point.
        metadata: ``temperature`` (float), ``pressure`` (float, NaN when unknown),
            ``fluid`` (str), and any further keys the file holds.
    """

    positions: np.ndarray
    types: np.ndarray
    box: np.ndarray
    time: np.ndarray
    time_indices: np.ndarray
    is_values: np.ndarray
    start_velocities: np.ndarray | None
    target_positions: np.ndarray
    metadata: dict[str, Any]

    @property
    def n_particles(self) -> int:
        return self.positions.shape[0]

    @property
    def n_trajectories(self) -> int:
        return self.target_positions.shape[1]

    @property
    def times(self) -> np.ndarray:
        """[T] the stored time points ``time[time_indices]``, in the file's order."""
        return self.time[self.time_indices]


def read_bapst_file(path: str | Path) -> BapstConfiguration:
    """Read and validate one Bapst file.

    Raises :class:`DataError` naming the file when it is missing, truncated or
    corrupt, references a global that a Bapst file does not need (never
    executed), is not a dict, lacks a key, or holds an array of the wrong shape
    or dtype, NaN or infinite values, types outside {0, 1}, a non-positive box
    or one that does not fit the positions, a time axis that is not increasing,
    time indices out of range, repeated or pointing at t = 0, or bad metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "Bapst file does not exist (or is not a file)")
    try:
        with path.open("rb") as stream:
            data = RestrictedUnpickler(stream, path).load()
    except DataError:
        raise
    except Exception as error:  # a corrupt pickle can fail with almost any exception type
        problem = f"not a readable pickle (truncated or corrupt?): {type(error).__name__}: {error}"
        raise DataError(path, problem) from error
    return _validate(data, path)


def find_bapst_files(source: str | Path) -> list[Path]:
    """The Bapst files named by ``source``, sorted.

    ``source`` is a file, a directory (every regular file in it whose name does
    not start with '.'; Bapst's are named ``aggregated*``) or a glob pattern.
    Raises :class:`DataError` when nothing matches.
    """
    source_path = Path(source)
    if source_path.is_file():
        return [source_path]
    if source_path.is_dir():
        files = [path for path in source_path.iterdir() if path.is_file() and not path.name.startswith(".")]
    else:
        files = [Path(name) for name in glob.glob(str(source)) if Path(name).is_file()]
    if not files:
        raise DataError(source_path, "no Bapst files found (expected a file, a directory of files or a glob pattern)")
    return sorted(files)


def read_bapst(source: str | Path) -> list[tuple[Path, BapstConfiguration]]:
    """Read every Bapst file named by ``source`` (see :func:`find_bapst_files`), sorted by path.

    Holds every file in memory (about 31 MB each at Bapst's size): iterate
    over :func:`find_bapst_files` with :func:`read_bapst_file` for large sets.
    """
    return [(path, read_bapst_file(path)) for path in find_bapst_files(source)]


def bapst_propensity(config: BapstConfiguration) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bapst's target: the iso-configurational mean displacement of every particle.

    ``propensity[k, i]`` = mean over trajectories r of ``|x_i^(r)(t_k) - x_i(0)|``,
    with unwrapped positions and the plain Euclidean norm: no centre-of-mass
    drift is removed, exactly as ``get_targets`` in Bapst's ``train.py``.

    Returns:
        times: [T] ``time[time_indices]``, in the file's order (LJ time units).
        propensity: [T, N] mean |displacement| (LJ length units).
        msd: [T, N] mean |displacement|^2 over the same trajectories.
    """
    distance = np.linalg.norm(config.target_positions - config.positions, axis=-1)  # [T, R, N]
    return config.times, distance.mean(axis=1), (distance**2).mean(axis=1)


def convert_bapst(source: str | Path, dest: str | Path, *, command: str | None = None) -> Path:
    """Convert Bapst files into an equiglass dataset directory ``dest``.

    Each file (see :func:`find_bapst_files`) becomes one configuration:
    positions wrapped into [0, box), types, box, the stored time points sorted
    by time, ``propensity`` and ``msd`` from :func:`bapst_propensity`, and
    ``potential_energy``, which Bapst's files lack: it is derived from the
    positions with the exact KA potential (:data:`POTENTIAL_ENERGY_DEFINITION`;
    meaningless for a sub-sampled file such as Bapst's 20-particle test file).
    Inherent states, their energies and per-configuration F_s are not in
    Bapst's files: they are listed in the manifest's ``absent_fields``, never
    invented.

    The manifest records source 'bapst', temperature, pressure (per
    configuration, and at the top level when all agree) and fluid from the
    metadata, density N / volume, the sorted times, ``is_values`` (the F_s
    levels of the time points, in our order), ``bapst_stored_index`` (for each
    of our time points, its index among the file's stored points: Bapst's
    ``time_index``), each configuration's source file name and number of
    trajectories, the propensity definition and ``command``.

    Every file must share N, the stored times, ``is_values``, temperature,
    fluid and density; otherwise :class:`DataError` names the odd file.

    Resumable and atomic: every configuration file and, after each, the
    manifest are written atomically, so an interrupted run leaves a valid
    dataset of the configurations done so far; a rerun skips source files the
    manifest already lists (by name) whose configuration file exists.

    Returns ``dest``.
    """
    dest = Path(dest)
    files = find_bapst_files(source)
    seen: dict[str, Path] = {}
    for path in files:
        if path.name in seen:
            raise DataError(path, f"has the same name as {seen[path.name]}: source files must have distinct names")
        seen[path.name] = path

    manifest = _resumed_manifest(dest)
    done = {entry["source_file"] for entry in manifest["configurations"]} if manifest else set()
    for path in files:
        if path.name in done:
            continue
        config = read_bapst_file(path)
        facts, fields = _converted(config, path)
        if manifest is None:
            manifest = {
                "source": "bapst",
                **facts,
                "configurations": [],
                "absent_fields": list(BAPST_ABSENT_FIELDS),
                "propensity_definition": PROPENSITY_DEFINITION,
                "msd_definition": MSD_DEFINITION,
                "potential_energy_definition": POTENTIAL_ENERGY_DEFINITION,
                "source_path": str(source),
                "command": command if command is not None else f"convert_bapst({str(source)!r}, {str(dest)!r})",
            }
        else:
            _check_same_protocol(path, facts, manifest)
        dataset = Dataset(dest, manifest)
        used = {entry["file"] for entry in manifest["configurations"]}
        name = next(configuration_filename(i) for i in range(len(used) + 1) if configuration_filename(i) not in used)
        write_configuration(dest / name, fields, **dataset.checks())
        manifest["configurations"].append({
            "file": name,
            "source_file": path.name,
            "pressure": _json_number(config.metadata["pressure"]),
            "n_trajectories": config.n_trajectories,
        })
        pressures = {entry["pressure"] for entry in manifest["configurations"]}
        if len(pressures) == 1:
            manifest["pressure"] = pressures.pop()
        else:
            manifest.pop("pressure", None)
        write_manifest(dest, manifest)
    return dest


def export_bapst(dataset_dir: str | Path, dest_dir: str | Path) -> list[Path]:
    """Write every configuration of an equiglass dataset as a Bapst file.

    Our format stores the propensity, not the per-trajectory positions it was
    computed from, so ``trajectory_target_positions`` cannot be reconstructed.
    What is written instead reproduces Bapst's target exactly: for each stored
    time point one synthetic trajectory,
    ``x_i(t_k) = positions_i + propensity_i(t_k) * (1, 0, 0)``, whose mean
    |displacement| over its single trajectory is the propensity (to rounding,
    about 1e-15). Everything else is what we have:

    * ``positions``: our positions (wrapped into the box), ``types`` (int32), ``box``;
    * ``time``: our T time points; ``time_indices``: the permutation that
      restores the order of the original Bapst files when the dataset came from
      :func:`convert_bapst` (so Bapst's ``time_index`` means the same point),
      else 0..T-1;
    * ``is_values``: the F_s levels of a converted Bapst dataset, else the
      configuration's ``self_intermediate_scattering``, else NaN (unknown);
    * ``trajectory_start_velocities``: one [N, 3] array of NaN (unknown);
    * ``metadata``: temperature, pressure (NaN when unknown), fluid, and
      ``equiglass_note`` (:data:`EXPORT_NOTE`) saying all this.

    The mean squared displacement is not representable by one trajectory and
    is lost. Files are pickles of protocol 3 with exactly Bapst's keys and
    containers, named after the configuration (``configuration_00000.pickle``),
    each written atomically. Returns their paths, in dataset order.
    """
    dataset = load_dataset(dataset_dir)
    manifest = dataset.manifest
    n_times = len(dataset.times)
    stored_index = manifest.get("bapst_stored_index", list(range(n_times)))
    if sorted(stored_index) != list(range(n_times)):
        problem = f"bapst_stored_index {stored_index} is not a permutation of 0..{n_times - 1}"
        raise DataError(dataset.directory / MANIFEST_NAME, problem)
    time_indices = np.argsort(stored_index)  # inverse permutation: Bapst's k -> our index
    levels = manifest.get("is_values")
    if levels is not None and len(levels) != n_times:
        raise DataError(dataset.directory / MANIFEST_NAME, f"is_values has {len(levels)} entries for {n_times} times")
    written = []
    for entry, path in zip(manifest["configurations"], dataset.files):
        fields = dataset.read(path)
        if levels is not None:
            is_values = np.array([_float(level) for level in levels])
        else:
            is_values = fields.get("self_intermediate_scattering", np.full(n_times, np.nan))
        positions = fields["positions"]
        displaced = positions + fields["propensity"][:, :, None] * np.array([1.0, 0.0, 0.0])  # [T, N, 3]
        data = {
            "positions": positions,
            "types": fields["types"].astype(np.int32),
            "box": fields["box"],
            "time": dataset.times.tolist(),
            "time_indices": time_indices.tolist(),
            "is_values": is_values[time_indices],
            "trajectory_start_velocities": [np.full_like(positions, np.nan)],
            "trajectory_target_positions": [[displaced[j]] for j in time_indices],
            "metadata": {
                "temperature": float(manifest["temperature"]),
                "pressure": _float(entry.get("pressure", manifest.get("pressure"))),
                "fluid": manifest.get("fluid", KOB_ANDERSEN_FLUID),  # equiglass datasets are all Kob–Andersen
                "equiglass_note": EXPORT_NOTE,
                "equiglass_source": str(path),
            },
        }
        target = Path(dest_dir) / (path.stem + ".pickle")
        written.append(atomic_write(target, functools.partial(pickle.dump, data, protocol=3)))
    return written


def _validate(data: Any, path: Path) -> BapstConfiguration:
    """Check an unpickled Bapst dict field by field (see :func:`read_bapst_file`)."""
    if not isinstance(data, dict):
        raise DataError(path, f"a Bapst file holds a dict, this one holds a {type(data).__name__}")
    missing = [key for key in BAPST_KEYS if key not in data and key not in OPTIONAL_BAPST_KEYS]
    if missing:
        raise DataError(path, f"missing keys {missing}")
    sizes: dict[str, int] = {}

    def array(key: str, dims: str, *, integer: bool = False, unknown_ok: bool = False) -> np.ndarray | None:
        """``data[key]`` as a read-only array of symbolic shape ``dims`` (letters bind sizes,
        digits are fixed); None when ``unknown_ok`` and every value is NaN."""
        try:
            value = np.asarray(data[key])
        except (ValueError, TypeError) as error:
            raise DataError(path, f"'{key}' is not a regular numeric array (ragged?): {error}") from error
        if value.dtype.kind not in ("iu" if integer else "iuf"):
            raise DataError(path, f"'{key}' must hold {'integers' if integer else 'numbers'}, got dtype {value.dtype}")
        if value.ndim != len(dims):
            raise DataError(path, f"'{key}' has shape {list(value.shape)}, expected [{', '.join(dims)}]")
        for symbol, size in zip(dims, value.shape):
            expected = int(symbol) if symbol.isdigit() else sizes.setdefault(symbol, size)
            if size != expected:
                wanted = [int(s) if s.isdigit() else sizes.get(s, s) for s in dims]
                raise DataError(path, f"'{key}' has shape {list(value.shape)}, expected [{', '.join(dims)}] = {wanted}")
        value = value.astype(np.int64 if integer else np.float64)
        if unknown_ok and value.size and np.all(np.isnan(value)):
            return None
        if not np.all(np.isfinite(value)):
            raise DataError(path, f"'{key}' holds {np.count_nonzero(~np.isfinite(value))} NaN or infinite values")
        value.flags.writeable = False
        return value

    positions = array("positions", "N3")
    types = array("types", "N", integer=True)
    box = array("box", "3")
    time = array("time", "K")
    time_indices = array("time_indices", "T", integer=True)
    is_values = array("is_values", "T", unknown_ok=True)
    if is_values is None:
        is_values = np.full(sizes["T"], np.nan)
        is_values.flags.writeable = False
    target_positions = array("trajectory_target_positions", "TRN3")
    start_velocities = None
    if "trajectory_start_velocities" in data:
        start_velocities = array("trajectory_start_velocities", "RN3", unknown_ok=True)

    if np.any((types != 0) & (types != 1)):
        raise DataError(path, f"types must be 0 (A) or 1 (B), found {sorted(set(types.tolist()) - {0, 1})}")
    if np.any(box <= 0):
        raise DataError(path, f"box sides must be positive, got {box.tolist()}")
    if time.size and (time[0] < 0 or np.any(np.diff(time) <= 0)):
        raise DataError(path, "'time' must be non-negative and strictly increasing")
    if np.any((time_indices < 0) | (time_indices >= time.size)):
        raise DataError(path, f"time_indices {time_indices.tolist()} out of range for 'time' of length {time.size}")
    if len(set(time_indices.tolist())) != time_indices.size:
        raise DataError(path, f"time_indices {time_indices.tolist()} repeat a time point")
    if np.any(time[time_indices] <= 0):
        raise DataError(path, "a stored time point is at t = 0, where no displacement can be measured")
    _check_box_fits(positions, box, path)
    return BapstConfiguration(
        positions=positions,
        types=types,
        box=box,
        time=time,
        time_indices=time_indices,
        is_values=is_values,
        start_velocities=start_velocities,
        target_positions=target_positions,
        metadata=_metadata(data["metadata"], path),
    )


def _metadata(metadata: Any, path: Path) -> dict[str, Any]:
    """Check Bapst's metadata dict; temperature and pressure become floats."""
    if not isinstance(metadata, dict):
        raise DataError(path, f"'metadata' must be a dict, got {type(metadata).__name__}")
    missing = [key for key in ("temperature", "pressure", "fluid") if key not in metadata]
    if missing:
        raise DataError(path, f"'metadata' lacks {missing}")

    def real(key: str) -> float:
        value = metadata[key]
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise DataError(path, f"metadata '{key}' must be a number, got {value!r}")
        return float(value)

    temperature, pressure = real("temperature"), real("pressure")
    if not (math.isfinite(temperature) and temperature > 0):
        raise DataError(path, f"metadata temperature must be positive and finite, got {temperature}")
    if math.isinf(pressure):  # NaN: unknown, as written by export_bapst
        raise DataError(path, f"metadata pressure must be finite (or NaN when unknown), got {pressure}")
    if not isinstance(metadata["fluid"], str):
        raise DataError(path, f"metadata 'fluid' must be a string, got {metadata['fluid']!r}")
    return {**metadata, "temperature": temperature, "pressure": pressure}


def _check_box_fits(positions: np.ndarray, box: np.ndarray, path: Path) -> None:
    """Raise unless the positions, wrapped into ``box``, keep every pair at least
    :data:`MIN_PAIR_DISTANCE` apart.

    A box too small for the positions (or positions in other units) folds
    particles onto each other. A box too large cannot be told from a
    sub-sampled file (Bapst's own test file holds 20 particles in the full box).
    """
    if positions.shape[0] < 2:
        return
    wrapped = wrap(positions, box)
    nearest = cKDTree(wrapped, boxsize=box).query(wrapped, k=2)[0][:, 1]  # [N] periodic nearest-neighbour distance
    close = np.count_nonzero(nearest < MIN_PAIR_DISTANCE)
    if close:
        raise DataError(
            path,
            f"box {box.tolist()} does not fit the positions: wrapped into it, {close} particles have a neighbour "
            f"closer than {MIN_PAIR_DISTANCE} (closest {nearest.min():.3g})",
        )


def _converted(config: BapstConfiguration, path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One Bapst configuration (read from ``path``) in our format.

    Returns the facts every configuration of a dataset must share (manifest
    keys: n_particles, density, temperature, fluid, times, is_values,
    bapst_stored_index) and the configuration's fields, time points sorted.
    """
    times, propensity, msd = bapst_propensity(config)
    order = np.argsort(times)
    try:
        potential_energy, _ = potential_energy_and_forces(config.positions, config.types, config.box)
    except ValueError as error:
        raise DataError(path, f"cannot compute the Kob-Andersen potential energy: {error}") from error
    facts = {
        "n_particles": config.n_particles,
        "density": config.n_particles / float(np.prod(config.box)),
        "temperature": config.metadata["temperature"],
        "fluid": config.metadata["fluid"],
        "times": times[order].tolist(),
        "is_values": [_json_number(value) for value in config.is_values[order].tolist()],
        "bapst_stored_index": order.tolist(),
    }
    fields = {
        "positions": wrap(config.positions, config.box),
        "types": config.types,
        "box": config.box,
        "times": times[order],
        "propensity": propensity[order],
        "msd": msd[order],
        "potential_energy": potential_energy,
    }
    return facts, fields


def _json_number(value: float) -> float | None:
    """``value`` for a JSON manifest: NaN (unknown) becomes null, which strict JSON allows."""
    return None if math.isnan(value) else value


def _float(value: float | None) -> float:
    """Inverse of :func:`_json_number`: null (or a missing value) becomes NaN."""
    return math.nan if value is None else float(value)


def _check_same_protocol(path: Path, facts: Mapping[str, Any], manifest: Mapping[str, Any]) -> None:
    """Raise :class:`DataError` naming ``path`` unless its facts agree with the dataset's."""
    comparisons: dict[str, Callable[[Any, Any], bool]] = {
        "n_particles": lambda a, b: a == b,
        "density": lambda a, b: abs(a - b) <= DENSITY_TOLERANCE * b,
        "temperature": lambda a, b: math.isclose(a, b, rel_tol=1e-9),
        "fluid": lambda a, b: a == b,
        "times": lambda a, b: len(a) == len(b) and np.allclose(a, b, rtol=1e-9, atol=0),
        "is_values": lambda a, b: np.array_equal([_float(x) for x in a], [_float(x) for x in b], equal_nan=True),
        "bapst_stored_index": lambda a, b: a == b,
    }
    for key, same in comparisons.items():
        if not same(facts[key], manifest[key]):
            raise DataError(path, f"{key} {facts[key]} differs from {manifest[key]} of the files converted before")


def _resumed_manifest(dest: Path) -> dict[str, Any] | None:
    """The manifest of an earlier conversion into ``dest``, keeping only configurations whose
    file exists; None when ``dest`` holds no dataset. Refuses a dataset of another source."""
    if not (dest / MANIFEST_NAME).is_file():
        return None
    manifest = load_dataset(dest, require_complete=False).manifest
    if manifest["source"] != "bapst" or any("source_file" not in entry for entry in manifest["configurations"]):
        raise DataError(dest / MANIFEST_NAME, "holds a dataset that is not a Bapst conversion: refusing to add to it")
    return dict(manifest)
