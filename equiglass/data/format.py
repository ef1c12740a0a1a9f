"""The equiglass dataset format: a directory of one manifest and one `.npz` per configuration.

A dataset directory holds

* ``manifest.json``: schema version, source, model parameters, engine and version,
  temperature, density, number of particles, stored time points, the protocol
  (every parameter and seed), τ_α, the list of configuration files and the list
  of fields that are absent from every configuration (for example inherent
  states of converted Bapst data), and the command that made it.
* ``configuration_00000.npz``, ...: one file per equilibrated configuration,
  holding the arrays of :data:`FIELDS` (LJ units throughout).

Every writer goes through a temporary file and an atomic rename, so an
interrupted run never leaves a half-written file under its final name, and
every reader validates what it reads and raises :class:`~equiglass.errors.DataError`
naming the file and the problem. No pickles: ``np.load(..., allow_pickle=False)``.

Published data (GlassBench, Shiba et al.: :mod:`equiglass.data.glassbench`,
:mod:`equiglass.data.shiba`) add optional fields, never required (:data:`LATER_FIELDS`):
``cage_positions`` [N, 3] (a third choice of input positions, beside thermal and inherent),
``bond_breaking`` [T, N], and the published predictions stored side by side with ours on the
same particles and times: one field ``published_<MODEL>`` [T, N] per model of
:data:`PUBLISHED_MODELS` (a predicted propensity, in the published model's own units and
scale, so compare by correlation) and ``descriptor_<NAME>`` [T, N] per descriptor of
:data:`PUBLISHED_DESCRIPTORS` (a static descriptor published as [N] is repeated along T).
A fixed, documented set of names keeps the strict shape checks of every other field; the
manifest's ``absent_fields`` lists what no configuration has (all of them for training
files), and a configuration entry's own ``absent_fields`` what that one lacks (GlassBench
has cage positions for files 1-100 and 401-500 only).

A configuration entry may be a symbolic link (say to a file shared by several datasets): it
is read like a file, and never written through: a writer replaces the link itself with the
new file (the rename acts on the name), leaving the file it pointed to unchanged.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from equiglass.errors import DataError

SCHEMA = "equiglass-dataset"
SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"

#: Published models whose predictions GlassBench's test files hold (field ``published_<name>``).
PUBLISHED_MODELS = ("BOTAN", "CAGE", "GlassMLP", "SE3")
#: Published structural descriptors of GlassBench's test files (field ``descriptor_<name>``).
PUBLISHED_DESCRIPTORS = ("SBO", "SBO_CG", "DEN", "EPOT", "PSI6")

#: Per-configuration arrays: name -> (shape with symbolic N and T, kind, description).
FIELDS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "positions": (("N", "3"), "f", "thermal positions, wrapped into [0, box), LJ length units"),
    "types": (("N",), "i", "particle species: 0 = A (large), 1 = B (small)"),
    "box": (("3",), "f", "side lengths of the periodic orthorhombic box"),
    "is_positions": (("N", "3"), "f", "inherent-state positions (energy minimum), wrapped"),
    "potential_energy": (("N",), "f", "per-particle potential energy of the thermal configuration"),
    "is_potential_energy": (("N",), "f", "per-particle potential energy of the inherent state"),
    "times": (("T",), "f", "time points of the targets, LJ time units, increasing"),
    "propensity": (("T", "N"), "f", "iso-configurational mean of |displacement| at each time"),
    "msd": (("T", "N"), "f", "iso-configurational mean of |displacement|^2 at each time"),
    "propensity_halves": (
        ("2", "T", "N"),
        "f",
        "means of |displacement| over the first and the second half of the replicas (split-half reliability)",
    ),
    "self_intermediate_scattering": (
        ("T",),
        "f",
        "F_s(q, t) of the A particles, averaged over trajectories (q in the manifest)",
    ),
    "cage_positions": (("N", "3"), "f", "cage-state positions (Alkemade et al. 2023, GlassBench), wrapped"),
    "bond_breaking": (("T", "N"), "f", "iso-configurational bond-breaking propensity (GlassBench bb_prop)"),
    **{f"published_{name}": (("T", "N"), "f", f"{name}'s published prediction") for name in PUBLISHED_MODELS},
    **{f"descriptor_{name}": (("T", "N"), "f", f"published descriptor {name}") for name in PUBLISHED_DESCRIPTORS},
}
#: Fields every configuration must have. ``propensity`` is required unless the manifest declares it
#: absent: a *prediction-only* dataset (configurations without trajectories, e.g. from ``equiglass import``
#: without replicas; empty ``times``) that ``equiglass predict`` reads and training refuses.
REQUIRED_FIELDS = ("positions", "types", "box", "times")
#: Fields a manifest may declare absent (the source had no such data).
OPTIONAL_FIELDS = tuple(name for name in FIELDS if name not in REQUIRED_FIELDS)
#: Optional fields added after schema version 1: datasets written before them lack them undeclared.
LATER_FIELDS = (
    "propensity_halves",
    "cage_positions",
    "bond_breaking",
    *(f"published_{name}" for name in PUBLISHED_MODELS),
    *(f"descriptor_{name}" for name in PUBLISHED_DESCRIPTORS),
)

#: Relative tolerance when checking a box against N / density.
DENSITY_TOLERANCE = 1e-3


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (what identifies a manifest, a
    configuration or a checkpoint in run and prediction records)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def arrays_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """Hex sha256 of a configuration's arrays: name, dtype, shape and C-order bytes of each, in name
    order. Unlike :func:`file_sha256` of the ``.npz``, it does not change with the zip's timestamps,
    so it tells whether a regenerated dataset holds the same numbers."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def configuration_filename(index: int) -> str:
    """File name of configuration ``index`` inside a dataset directory."""
    return f"configuration_{index:05d}.npz"


def atomic_write(path: str | Path, write: Callable[[Any], None], *, binary: bool = True) -> Path:
    """Write a file through a temporary sibling and an atomic rename.

    ``write`` receives an open file object. If it raises, or the process dies,
    the previous content of ``path`` (if any) is untouched and no partial file
    remains under its name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = _create_sibling(path)
    try:
        with os.fdopen(handle, "wb" if binary else "w") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def _create_sibling(path: Path) -> tuple[int, Path]:
    """Create a new, hidden, uniquely named file next to ``path``; return its descriptor (open for writing) and path.

    Its mode is 0o666 less the umask, as for any new file, so that datasets stay readable by
    collaborators (``tempfile.mkstemp`` would make it 0o600).
    """
    while True:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), temporary
        except FileExistsError:
            continue


def validate_configuration(
    fields: Mapping[str, np.ndarray],
    path: str | Path | None = None,
    *,
    n_particles: int | None = None,
    density: float | None = None,
    times: np.ndarray | None = None,
    absent: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """Check one configuration's arrays and return them with canonical dtypes.

    Checks: required fields present (and optional ones present unless listed in
    ``absent``), shapes consistent with N and T, every value finite, types in
    {0, 1}, box positive and matching ``density`` (N / volume) when given,
    positions inside the box, inherent-state positions inside the box, times
    strictly increasing and positive, propensity and msd non-negative.
    Raises :class:`DataError` naming ``path`` and the problem.
    """
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise DataError(path, f"unknown fields {unknown}; expected a subset of {sorted(FIELDS)}")
    expected = [name for name in FIELDS if name in REQUIRED_FIELDS or name not in (*absent, *LATER_FIELDS)]
    missing = [name for name in expected if name not in fields]
    if missing:
        raise DataError(path, f"missing fields {missing}")

    out: dict[str, np.ndarray] = {}
    for name, array in fields.items():
        array = np.asarray(array)
        kind = FIELDS[name][1]
        if kind == "i":
            if not np.issubdtype(array.dtype, np.integer):
                raise DataError(path, f"field '{name}' must hold integers, got dtype {array.dtype}")
            out[name] = array.astype(np.int64)
        else:
            if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
                raise DataError(path, f"field '{name}' must be numeric, got dtype {array.dtype}")
            array = array.astype(np.float64)
            if not np.all(np.isfinite(array)):
                bad = int(np.count_nonzero(~np.isfinite(array)))
                raise DataError(path, f"field '{name}' holds {bad} NaN or infinite values")
            out[name] = array

    n = out["types"].shape[0] if out["types"].ndim == 1 else None
    t = out["times"].shape[0] if out["times"].ndim == 1 else None
    if n_particles is not None and n is not None and n != n_particles:
        raise DataError(path, f"holds {n} particles, the manifest says {n_particles}")
    sizes = {"N": n, "T": t, "3": 3, "2": 2}
    for name, array in out.items():
        symbolic = FIELDS[name][0]
        wanted = tuple(sizes[s] for s in symbolic)
        if array.shape != wanted:
            shape = "[" + ", ".join(symbolic) + "]"
            raise DataError(path, f"field '{name}' has shape {list(array.shape)}, expected {shape} = {list(wanted)}")

    types = out["types"]
    if types.size and (types.min() < 0 or types.max() > 1):
        raise DataError(path, f"types must be 0 (A) or 1 (B), found values {sorted(set(types.tolist()) - {0, 1})}")
    box = out["box"]
    if np.any(box <= 0):
        raise DataError(path, f"box sides must be positive, got {box.tolist()}")
    if density is not None:
        actual = n / float(np.prod(box))
        if abs(actual - density) > DENSITY_TOLERANCE * density:
            raise DataError(path, f"box {box.tolist()} with {n} particles has density {actual:.6g}, the manifest says {density}")
    for name in ("positions", "is_positions", "cage_positions"):
        if name in out:
            positions = out[name]
            if np.any(positions < 0) or np.any(positions >= box):
                outside = int(np.count_nonzero(np.any((positions < 0) | (positions >= box), axis=1)))
                raise DataError(path, f"{outside} particles of '{name}' lie outside the box [0, {box.tolist()})")
    stored_times = out["times"]
    if np.any(stored_times <= 0) or np.any(np.diff(stored_times) <= 0):
        raise DataError(path, "times must be positive and strictly increasing")
    if times is not None and (
        stored_times.shape != np.shape(times)
        or not np.allclose(stored_times, np.asarray(times, dtype=np.float64), rtol=1e-9, atol=0)
    ):
        raise DataError(path, f"times {stored_times.tolist()} differ from the manifest's {list(times)}")
    for name in ("propensity", "msd", "propensity_halves"):
        if name in out and np.any(out[name] < 0):
            raise DataError(path, f"field '{name}' holds negative values")
    return out


def write_configuration(path: str | Path, fields: Mapping[str, np.ndarray], **checks: Any) -> Path:
    """Validate (see :func:`validate_configuration`) and write one configuration atomically.

    ``checks`` are forwarded to :func:`validate_configuration` (``n_particles``,
    ``density``, ``times``, ``absent``). Writes a compressed, pickle-free `.npz`.
    """
    arrays = validate_configuration(fields, path, **checks)
    return atomic_write(path, lambda stream: np.savez_compressed(stream, **arrays))


def read_configuration(path: str | Path, **checks: Any) -> dict[str, np.ndarray]:
    """Read and validate one configuration `.npz` (see :func:`validate_configuration`).

    A missing, truncated or corrupt file raises :class:`DataError` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "configuration file does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            fields = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError) as error:
        raise DataError(path, f"not a readable .npz file (truncated or corrupt?): {error}") from error
    return validate_configuration(fields, path, **checks)


@dataclass(frozen=True)
class Dataset:
    """A dataset directory whose manifest has been read and checked.

    Attributes:
        directory: the dataset directory.
        manifest: the parsed ``manifest.json``.
    """

    directory: Path
    manifest: dict[str, Any]

    @property
    def files(self) -> list[Path]:
        """Paths of every configuration the manifest lists, in manifest order."""
        return [self.directory / entry["file"] for entry in self.manifest["configurations"]]

    @property
    def times(self) -> np.ndarray:
        """[T] float, the stored time points (LJ units)."""
        return np.asarray(self.manifest["times"], dtype=np.float64)

    @property
    def absent_fields(self) -> tuple[str, ...]:
        return tuple(self.manifest.get("absent_fields", ()))

    @property
    def has_targets(self) -> bool:
        """False for a prediction-only dataset (its manifest declares ``propensity`` absent)."""
        return "propensity" not in self.absent_fields

    def require_targets(self, purpose: str) -> None:
        """Raise :class:`DataError` naming the manifest if this dataset is prediction-only.

        ``purpose`` says what needs the targets (e.g. "training").
        """
        if not self.has_targets:
            raise DataError(self.directory / MANIFEST_NAME, f"is a prediction-only dataset (no propensity): {purpose} "
                                                            "needs targets; use it with 'equiglass predict', or import "
                                                            "iso-configurational trajectories (equiglass import --replicas)")

    def completed(self) -> list[Path]:
        """Configuration files that exist (a sharded or interrupted run may lack some)."""
        return [path for path in self.files if path.is_file()]

    def read(self, index_or_path: int | str | Path) -> dict[str, np.ndarray]:
        """Read configuration ``index_or_path`` and check it against the manifest."""
        path = self.files[index_or_path] if isinstance(index_or_path, int) else Path(index_or_path)
        return read_configuration(path, **self.checks())

    def checks(self) -> dict[str, Any]:
        """The manifest facts every configuration must agree with."""
        return {
            "n_particles": int(self.manifest["n_particles"]),
            "density": float(self.manifest["density"]),
            "times": self.times,
            "absent": self.absent_fields,
        }

    def __len__(self) -> int:
        return len(self.manifest["configurations"])

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for path in self.files:
            yield self.read(path)


#: Manifest keys that must be present, with the type each must have.
MANIFEST_KEYS: dict[str, type | tuple[type, ...]] = {
    "schema": str,
    "schema_version": int,
    "source": str,
    "n_particles": int,
    "density": (int, float),
    "temperature": (int, float),
    "times": list,
    "configurations": list,
    "absent_fields": list,
    "propensity_definition": str,
}


def write_manifest(directory: str | Path, manifest: Mapping[str, Any]) -> Path:
    """Check and write ``manifest.json`` atomically; ``schema`` keys are filled in."""
    directory = Path(directory)
    content = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **manifest}
    check_manifest(content, directory / MANIFEST_NAME)
    text = json.dumps(content, indent=2, sort_keys=False) + "\n"
    return atomic_write(directory / MANIFEST_NAME, lambda stream: stream.write(text), binary=False)


def check_manifest(manifest: Mapping[str, Any], path: str | Path) -> None:
    """Raise :class:`DataError` naming ``path`` unless ``manifest`` is well formed."""
    for key, kind in MANIFEST_KEYS.items():
        if key not in manifest:
            raise DataError(path, f"manifest lacks the key '{key}'")
        if not isinstance(manifest[key], kind) or isinstance(manifest[key], bool):
            raise DataError(path, f"manifest key '{key}' has type {type(manifest[key]).__name__}")
    if manifest["schema"] != SCHEMA:
        raise DataError(path, f"not an equiglass manifest (schema '{manifest['schema']}')")
    if manifest["schema_version"] > SCHEMA_VERSION:
        raise DataError(
            path, f"schema version {manifest['schema_version']} is newer than this equiglass reads ({SCHEMA_VERSION})"
        )
    for key in ("density", "temperature"):
        if not (math.isfinite(manifest[key]) and manifest[key] > 0):
            raise DataError(path, f"manifest {key} must be positive and finite, got {manifest[key]}")
    if not all(isinstance(name, str) for name in manifest["absent_fields"]):
        raise DataError(path, "absent_fields must list field names")
    unknown = sorted(set(manifest["absent_fields"]) - set(OPTIONAL_FIELDS))
    if unknown:
        raise DataError(path, f"absent_fields {unknown} are not optional fields {list(OPTIONAL_FIELDS)}")
    names = [entry.get("file") if isinstance(entry, Mapping) else None for entry in manifest["configurations"]]
    if any(not isinstance(name, str) or not name or "/" in name or name.startswith(".") for name in names):
        raise DataError(path, "every configuration entry needs a plain 'file' name inside the directory")
    if len(set(names)) != len(names):
        raise DataError(path, "configuration files are listed more than once")
    try:
        times = np.asarray(manifest["times"], dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise DataError(path, f"manifest times must be numbers: {error}") from error
    if times.ndim != 1 or not np.all(np.isfinite(times)) or np.any(times <= 0) or np.any(np.diff(times) <= 0):
        raise DataError(path, "manifest times must be positive and strictly increasing")


def load_dataset(directory: str | Path, *, require_complete: bool = True) -> Dataset:
    """Open a dataset directory: read and check its manifest.

    With ``require_complete`` (default), every configuration the manifest lists
    must exist; otherwise only the files present are used (for instance while
    a sharded generation is still running).
    """
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise DataError(path, "no manifest.json: not an equiglass dataset directory")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(path, f"manifest is not valid JSON: {error}") from error
    if not isinstance(manifest, dict):
        raise DataError(path, "manifest must be a JSON object")
    check_manifest(manifest, path)
    dataset = Dataset(directory, manifest)
    if require_complete:
        missing = [file.name for file in dataset.files if not file.is_file()]
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise DataError(path, f"{len(missing)} of {len(dataset)} configuration files are missing: {shown}")
    else:
        dataset = Dataset(directory, {**manifest, "configurations": [
            entry for entry in manifest["configurations"] if (directory / entry["file"]).is_file()
        ]})
    return dataset
