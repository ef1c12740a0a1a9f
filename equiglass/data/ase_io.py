"""Configurations from and to the files of other codes, through ASE: LAMMPS text dumps, extended XYZ,
anything ``ase.io.read`` reads (``equiglass import``), and extended-XYZ / LAMMPS-dump files of a
configuration with per-particle columns for OVITO (``equiglass predict --format``).

Import. Every frame is read with ``ase.io.read``; its box must be orthorhombic and periodic (the
file's cell, or ``box`` given explicitly; the origin, LAMMPS's ``xlo ylo zlo``, is moved to 0) and
its particle types are mapped to 0 (A) and 1 (B) by name: LAMMPS's integer ``type`` column
(default ``1 -> 0, 2 -> 1``) or the chemical symbols (an explicit map needed). Two kinds of dataset:

* *prediction-only* (:func:`import_configurations` without ``replicas``): each frame of each file
  is a configuration; propensity and the other targets are absent, ``times`` is empty.
* *iso-configurational* (``replicas=True``): each source (a directory or glob) is one configuration,
  its files the trajectories of the replicas, all starting from the same frame 0; the targets at
  the times of the later frames are the generator's (:func:`equiglass.physics.observables.
  iso_configurational_targets` of the centre-of-mass-corrected displacements). Trajectories are
  unwrapped with LAMMPS's image flags ``ix iy iz`` where the dump has them (ASE's reader drops
  them, so :func:`lammps_dump_columns` reads those columns), taken as they are where the dump
  holds unwrapped ``xu yu zu``, and otherwise by the minimum displacement between successive
  frames (:data:`UNWRAPPING`); the manifest records which, and a log line says it.

Times of a frame: its ``time`` info (extended XYZ) or LAMMPS's ``timestep`` times ``timestep``
(the MD time step, LJ units), relative to frame 0.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import ase
import ase.io
import numpy as np

from equiglass.data.format import (
    FIELDS,
    atomic_write,
    configuration_filename,
    load_dataset,
    write_configuration,
    write_manifest,
)
from equiglass.data.geometry import wrap
from equiglass.errors import DataError
from equiglass.physics import observables

log = logging.getLogger(__name__)

#: How a trajectory was unwrapped -> what the manifest says.
UNWRAPPING = {
    "image_flags": "positions + image flags (ix iy iz) x box",
    "unwrapped": "unwrapped coordinates of the file (xu yu zu)",
    "minimum_displacement": "minimum image of the displacement between successive frames (no image flags in the file)",
}
#: LAMMPS type -> equiglass type when no map is given.
LAMMPS_TYPES = {"1": 0, "2": 1}
#: Targets an iso-configurational import computes (the rest of the optional fields are absent).
TARGETS = ("propensity", "msd", "propensity_halves")
#: Export formats -> file suffix.
EXPORT_FORMATS = {"extxyz": ".extxyz", "lammps-dump": ".dump"}
PROPENSITY_DEFINITION = (
    "mean over R iso-configurational trajectories of |r_i(t) - r_i(0)|, centre-of-mass drift removed "
    "(as equiglass generate); msd the mean squared displacement; propensity_halves the same mean over the "
    "first and over the second half of the R trajectories (the first holds one more for odd R)"
)


@dataclass(frozen=True)
class Frames:
    """The frames of one file, in the file's particle order (LAMMPS: sorted by id).

    Attributes:
        path: the file.
        positions: [F, N, 3] float64 positions, box origin moved to 0 (wrapped or not, as in the file).
        types: [N] int64, 0 = A, 1 = B.
        box: [3] float64 box sides (LJ lengths).
        times: [F] float64 times (LJ units) from the frames' ``time`` info, or None.
        steps: [F] float64 MD time steps from the frames' ``timestep`` info (LAMMPS), or None.
        image_flags: [F, N, 3] int64 LAMMPS image flags, or None.
        unwrapped: the positions are the file's unwrapped coordinates (``xu yu zu``).
    """

    path: Path
    positions: np.ndarray
    types: np.ndarray
    box: np.ndarray
    times: np.ndarray | None
    steps: np.ndarray | None
    image_flags: np.ndarray | None
    unwrapped: bool

    @property
    def unwrapping(self) -> str:
        """The key of :data:`UNWRAPPING` that :meth:`unwrapped_positions` uses."""
        if self.image_flags is not None:
            return "image_flags"
        return "unwrapped" if self.unwrapped else "minimum_displacement"

    def unwrapped_positions(self) -> np.ndarray:
        """[F, N, 3] float64 continuous trajectory (see :data:`UNWRAPPING`)."""
        if self.image_flags is not None:
            return observables.unwrap(self.positions, self.image_flags, self.box)
        return self.positions if self.unwrapped else observables.unwrap_trajectory(self.positions, self.box)


def parse_type_map(text: str) -> dict[str, int]:
    """``"NAME=INDEX,..."`` (e.g. ``"1=0,2=1"`` or ``"Ni=0,P=1"``) -> {name: 0 or 1}.

    Raises:
        ValueError: malformed text or an index other than 0 and 1.
    """
    mapping = {}
    for item in text.split(","):
        name, _, index = item.partition("=")
        if not name.strip() or index.strip() not in ("0", "1"):
            raise ValueError(f"--types expects NAME=INDEX,... with INDEX 0 (A) or 1 (B), got {item!r}")
        mapping[name.strip()] = int(index)
    return mapping


def parse_box(text: str) -> list[float]:
    """``"LX,LY,LZ"`` -> [3] positive box sides.

    Raises:
        ValueError: not three positive numbers.
    """
    try:
        sides = [float(side) for side in text.split(",")]
    except ValueError:
        sides = []
    if len(sides) != 3 or not all(side > 0 for side in sides):
        raise ValueError(f"--box expects three positive sides LX,LY,LZ, got {text!r}")
    return sides


def read_frames(path: str | Path, type_map: Mapping[str, int] | None = None, box: Sequence[float] | None = None) -> Frames:
    """Read every frame of ``path`` with ``ase.io.read``; check that the frames agree.

    Args:
        path: a file ASE reads (format from its content or name).
        type_map: particle type name -> 0 or 1 (default :data:`LAMMPS_TYPES` for a ``type`` column).
        box: [3] box sides, for a file without a cell (must agree with the file's cell when it has one).

    Raises:
        DataError: naming the file: unreadable, no or a triclinic or non-periodic box, types missing
            or unmapped, or frames whose particle numbers, types or boxes differ.
    """
    path = Path(path)
    try:
        images = ase.io.read(path, index=":")
    except Exception as error:  # ASE raises many kinds for a file it cannot parse
        raise DataError(path, f"ASE cannot read it: {error}") from error
    if not images:
        raise DataError(path, "holds no frame")
    boxes = np.stack([frame_box(atoms, path, box) for atoms in images])
    counts = {len(atoms) for atoms in images}
    if len(counts) > 1:
        raise DataError(path, f"frames hold different numbers of particles {sorted(counts)}")
    if not np.allclose(boxes, boxes[0], rtol=1e-12, atol=0):
        raise DataError(path, "the box changes between frames (constant volume needed)")
    types = [frame_types(atoms, path, type_map) for atoms in images]
    if any(not np.array_equal(kinds, types[0]) for kinds in types):
        raise DataError(path, "particle types change between frames")
    positions = np.stack([atoms.positions - atoms.get_celldisp().reshape(3) for atoms in images])
    columns, image_flags = lammps_dump_columns(path) if _is_lammps_dump(path) else ((), None)
    return Frames(
        path=path,
        positions=positions,
        types=types[0],
        box=boxes[0],
        times=_info(images, "time"),
        steps=_info(images, "timestep"),
        image_flags=image_flags,
        unwrapped="xu" in columns and "x" not in columns,
    )


def frame_box(atoms: ase.Atoms, path: Path, box: Sequence[float] | None) -> np.ndarray:
    """[3] box sides of one frame: its orthorhombic periodic cell, or ``box`` where it has none.

    Raises:
        DataError: naming ``path``: no box, a triclinic or non-periodic one, or one differing from ``box``.
    """
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    sides = np.diag(cell)
    if not cell.any():
        if box is None:
            raise DataError(path, "holds no box (cell): give it with --box LX,LY,LZ")
        return np.asarray(box, dtype=np.float64)
    if np.any(cell - np.diag(sides)):
        raise DataError(path, f"has a triclinic box {cell.tolist()}: only orthorhombic boxes are supported")
    if not np.all(atoms.pbc):
        raise DataError(path, f"box is not periodic in every direction (pbc {atoms.pbc.tolist()})")
    if box is not None and not np.allclose(sides, box, rtol=1e-9, atol=0):
        raise DataError(path, f"box {sides.tolist()} differs from the one given, {list(box)}")
    return sides


def frame_types(atoms: ase.Atoms, path: Path, type_map: Mapping[str, int] | None) -> np.ndarray:
    """[N] int64 equiglass types (0, 1) of one frame, from its ``type`` column or its chemical symbols.

    Raises:
        DataError: naming ``path``: no ``type`` column and no map for the symbols, or names the map lacks.
    """
    if "type" in atoms.arrays:
        names = np.asarray(atoms.arrays["type"]).astype(str)
        mapping = LAMMPS_TYPES if type_map is None else type_map
    else:
        names = np.asarray(atoms.get_chemical_symbols())
        if type_map is None:
            raise DataError(path, f"has species {sorted(set(names.tolist()))} and no 'type' column: "
                                  "map them with --types NAME=0,NAME=1")
        mapping = type_map
    unknown = sorted(set(names.tolist()) - set(mapping))
    if unknown:
        raise DataError(path, f"particle types {unknown} are not in the type map {dict(mapping)}: use --types NAME=INDEX,...")
    return np.array([mapping[name] for name in names], dtype=np.int64)


def _info(images: Sequence[ase.Atoms], key: str) -> np.ndarray | None:
    """[F] float64 ``info[key]`` of every frame, or None unless every frame has it."""
    if all(key in atoms.info for atoms in images):
        return np.array([float(atoms.info[key]) for atoms in images])
    return None


def _is_lammps_dump(path: Path) -> bool:
    try:
        return ase.io.formats.filetype(str(path), guess=False) == "lammps-dump-text"
    except Exception:  # unknown format: ase.io.read has already said what it is
        return False


def lammps_dump_columns(path: str | Path) -> tuple[tuple[str, ...], np.ndarray | None]:
    """The ``ITEM: ATOMS`` column names of a LAMMPS text dump, and its image flags if it has them.

    ASE's reader keeps positions, types and a few prefixed columns but drops ``ix iy iz``; this reads
    only the ``id`` and image-flag columns of every frame, ordered by ``id`` as ASE orders particles.

    Returns:
        (column names of the first frame, [F, N, 3] int64 image flags or None).
    """
    columns: tuple[str, ...] = ()
    flags = []
    with open(path) as stream:
        for line in stream:
            if line.startswith("ITEM: NUMBER OF ATOMS"):
                count = int(stream.readline())
            elif line.startswith("ITEM: ATOMS"):
                columns = columns or tuple(line.split()[2:])
                here = line.split()[2:]
                rows = [stream.readline() for _ in range(count)]
                if {"ix", "iy", "iz"} <= set(here):
                    wanted = [here.index(name) for name in ("ix", "iy", "iz")]
                    table = np.loadtxt(rows, usecols=wanted, dtype=np.int64, ndmin=2)
                    order = np.argsort(np.loadtxt(rows, usecols=here.index("id"), dtype=np.int64, ndmin=1)) \
                        if "id" in here else np.arange(count)
                    flags.append(table[order])
    return columns, np.stack(flags) if flags else None


# ------------------------------------------------------------------ import


def source_files(source: str | Path) -> list[Path]:
    """The files of one source: the file itself, a directory's files, or a glob's matches (sorted).

    Raises:
        DataError: nothing matches.
    """
    path = Path(source)
    if path.is_dir():
        files = sorted(child for child in path.iterdir() if child.is_file() and not child.name.startswith("."))
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(name) for name in glob.glob(str(source)) if Path(name).is_file())
    if not files:
        raise DataError(path, "no such file, directory or matching file")
    return files


def replica_configuration(replicas: Sequence[Frames], timestep: float | None) -> tuple[dict[str, np.ndarray], str]:
    """The fields of one configuration from its replicas' trajectories, and the unwrapping used.

    Frame 0 of every replica must be the same configuration (positions to 1e-6 by minimum image,
    same types and box); later frames' times (relative to frame 0) must be the same in every replica.

    Raises:
        DataError: naming the offending file.
    """
    first = replicas[0]
    if len(replicas) < 2:
        raise DataError(first.path, "an iso-configurational configuration needs at least 2 replica trajectories")
    times = trajectory_times(first, timestep)
    for frames in replicas[1:]:
        if frames.positions.shape != first.positions.shape or not np.array_equal(frames.types, first.types):
            raise DataError(frames.path, f"frames, particles or types differ from those of {first.path}")
        if not np.allclose(frames.box, first.box, rtol=1e-12, atol=0):
            raise DataError(frames.path, f"box {frames.box.tolist()} differs from {first.box.tolist()} of {first.path}")
        apart = frames.positions[0] - first.positions[0]
        if np.abs(apart - np.rint(apart / first.box) * first.box).max() > 1e-6:
            raise DataError(frames.path, f"frame 0 is not the initial configuration of {first.path}")
        if not np.allclose(trajectory_times(frames, timestep), times, rtol=1e-9, atol=0):
            raise DataError(frames.path, f"frame times differ from those of {first.path}")
    unwrapped = np.stack([frames.unwrapped_positions() for frames in replicas])  # [R, F, N, 3]
    relative = unwrapped[:, 1:] - unwrapped[:, :1]
    delta = observables.displacements(relative, np.zeros_like(relative[0, 0]), remove_centre_of_mass=True)
    fields = {
        "positions": wrap(first.positions[0], first.box),
        "types": first.types,
        "box": first.box,
        "times": times,
        **observables.iso_configurational_targets(delta),
    }
    methods = {frames.unwrapping for frames in replicas}
    return fields, methods.pop() if len(methods) == 1 else "mixed: " + ", ".join(sorted(methods))


def trajectory_times(frames: Frames, timestep: float | None) -> np.ndarray:
    """[F - 1] times of frames 1, 2, ... after frame 0 (LJ units).

    Raises:
        DataError: naming the file: fewer than 2 frames, no times (give ``timestep`` for a LAMMPS
            dump), or times not increasing.
    """
    if frames.positions.shape[0] < 2:
        raise DataError(frames.path, "a replica trajectory needs frame 0 and at least one later frame")
    if frames.times is not None:
        times = frames.times
    elif frames.steps is None:
        raise DataError(frames.path, "its frames record no time: give a 'time' (or 'timestep') in each frame's info")
    elif timestep is None:
        raise DataError(frames.path, "its frames record MD time steps: give the time step with --timestep DT")
    else:
        times = frames.steps * timestep
    elapsed = times[1:] - times[0]
    if np.any(elapsed <= 0) or np.any(np.diff(elapsed) <= 0):
        raise DataError(frames.path, f"frame times {times.tolist()} do not increase")
    return elapsed


def import_configurations(
    sources: Sequence[str | Path],
    dest: str | Path,
    *,
    temperature: float,
    replicas: bool = False,
    type_map: Mapping[str, int] | None = None,
    box: Sequence[float] | None = None,
    timestep: float | None = None,
    command: str = "",
) -> Path:
    """Make an equiglass dataset ``dest`` from files ASE reads.

    Args:
        sources: files, directories or glob patterns. Without ``replicas`` every frame of every
            file is a configuration (a prediction-only dataset); with ``replicas`` each source is
            one configuration whose files are its replica trajectories.
        dest: the new dataset directory; must not exist or be empty. The dataset is built in a
            hidden sibling and renamed into place, so a failed import leaves nothing behind.
        temperature: the temperature of the configurations (LJ units; recorded in the manifest).
        replicas: compute the iso-configurational targets from replica trajectories.
        type_map: see :func:`read_frames`.
        box: see :func:`read_frames`.
        timestep: MD time step (LJ units) converting a LAMMPS dump's time steps into times.
        command: the command line, recorded in the manifest.

    Raises:
        DataError: naming the file that cannot be read or does not fit (see :func:`read_frames`,
            :func:`replica_configuration`), or ``dest`` holding files.
    """
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataError(dest, "exists and is not an empty directory: choose a new dataset directory")
    if replicas:
        configurations = _replica_configurations(sources, type_map, box, timestep)
    else:
        configurations = _prediction_only_configurations(sources, type_map, box)
    building = dest.with_name(f".{dest.name}.importing")
    shutil.rmtree(building, ignore_errors=True)
    try:
        _write_dataset(building, configurations, temperature=temperature, replicas=replicas, command=command)
        if dest.is_dir():
            dest.rmdir()
        os.replace(building, dest)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return dest


def _prediction_only_configurations(sources, type_map, box) -> list[tuple[dict[str, np.ndarray], dict]]:
    configurations = []
    for path in [path for source in sources for path in source_files(source)]:
        frames = read_frames(path, type_map, box)
        for index, positions in enumerate(frames.positions):
            fields = {"positions": wrap(positions, frames.box), "types": frames.types, "box": frames.box,
                      "times": np.zeros(0)}
            configurations.append((fields, {"source": str(path), "frame": index}))
    return configurations


def _replica_configurations(sources, type_map, box, timestep) -> list[tuple[dict[str, np.ndarray], dict]]:
    configurations = []
    for source in sources:
        files = source_files(source)
        fields, unwrapping = replica_configuration([read_frames(path, type_map, box) for path in files], timestep)
        log.info("%s: %d replicas, %d times, unwrapped by %s", source, len(files), fields["times"].size,
                 UNWRAPPING.get(unwrapping, unwrapping))
        configurations.append((fields, {"sources": [str(path) for path in files], "unwrapping": unwrapping}))
    return configurations


def _write_dataset(directory: Path, configurations, *, temperature: float, replicas: bool, command: str) -> None:
    """Write the configurations and the manifest of an imported dataset into ``directory``."""
    first = configurations[0][0]
    n, times = first["types"].size, first["times"]
    density = n / float(np.prod(first["box"]))
    kept = TARGETS if replicas else ()
    absent = [name for name in FIELDS if name not in (*kept, "positions", "types", "box", "times")]
    entries = []
    for index, (fields, facts) in enumerate(configurations):
        where = facts.get("source") or facts["sources"][0]
        name = configuration_filename(index)
        try:
            write_configuration(directory / name, fields, n_particles=n, density=density, times=times, absent=tuple(absent))
        except DataError as error:
            raise DataError(where, f"does not fit the dataset: {error.problem}") from error
        entries.append({"file": name, **facts})
    unwrapping = sorted({facts["unwrapping"] for _, facts in configurations} if replicas else ())
    write_manifest(directory, {
        "source": "equiglass import: configurations read with ASE"
                  + (" from iso-configurational replica trajectories" if replicas else " (prediction-only)"),
        "engine": {"name": "ASE", "version": ase.__version__},
        "n_particles": n,
        "density": density,
        "temperature": temperature,
        "box": first["box"].tolist(),
        "times": times.tolist(),
        "unwrapping": {method: UNWRAPPING.get(method, method) for method in unwrapping},
        "absent_fields": absent,
        "propensity_definition": PROPENSITY_DEFINITION if replicas else "none: prediction-only dataset (no trajectories)",
        "command": command,
        "configurations": entries,
    })
    load_dataset(directory)  # the whole dataset reads back


# ------------------------------------------------------------------ export for viewing


def configuration_atoms(
    fields: Mapping[str, np.ndarray], columns: Mapping[str, np.ndarray], info: Mapping[str, object] | None = None
) -> ase.Atoms:
    """An ``ase.Atoms`` of one configuration with per-particle ``columns``.

    Args:
        fields: the configuration's ``positions`` [N, 3], ``types`` [N], ``box`` [3].
        columns: name -> [N] or [N, K] float per-particle values (e.g. ``predicted_propensity`` [N, T]).
        info: frame information (e.g. ``times``), stored as arrays (written as space-separated numbers).

    Returns:
        Atoms in the periodic box, ``type`` = LAMMPS's type (1 = A, 2 = B) and atomic numbers alike
        (H, He: ASE's reading of a LAMMPS dump), one array per column.
    """
    lammps_type = np.asarray(fields["types"], dtype=np.int64) + 1
    atoms = ase.Atoms(numbers=lammps_type, positions=fields["positions"], cell=np.diag(fields["box"]), pbc=True)
    atoms.new_array("type", lammps_type)
    for name, values in columns.items():
        atoms.new_array(name, np.asarray(values, dtype=np.float64))
    atoms.info.update({key: np.asarray(value) for key, value in (info or {}).items()})
    return atoms


def write_extxyz(path: str | Path, atoms: ase.Atoms) -> Path:
    """Write ``atoms`` as extended XYZ with ASE's writer (8 decimals), atomically."""
    return atomic_write(path, lambda stream: ase.io.write(stream, atoms, format="extxyz"), binary=False)


def write_lammps_dump(path: str | Path, atoms: ase.Atoms, step: int = 0) -> Path:
    """Write ``atoms`` as one frame of a LAMMPS text dump (``dump custom``), atomically.

    ASE has no LAMMPS dump writer; this writes LAMMPS's documented layout: ``ITEM: TIMESTEP``,
    ``NUMBER OF ATOMS``, ``BOX BOUNDS pp pp pp`` (0 to each side), then ``ITEM: ATOMS id type x y z``
    and one column per per-particle array (an [N, K] array as ``name_0`` ... ``name_{K-1}``),
    every number in full precision. ``info`` is written as JSON in a sibling ``<path>.json``.
    """
    names = ["id", "type", "x", "y", "z"]
    table = [np.arange(1, len(atoms) + 1), atoms.arrays["type"], *atoms.positions.T]
    for name, values in atoms.arrays.items():
        if name in ("numbers", "positions", "type"):
            continue
        names += [name] if values.ndim == 1 else [f"{name}_{k}" for k in range(values.shape[1])]
        table += list(values.reshape(len(atoms), -1).T)
    bounds = "".join(f"0 {_number(side)}\n" for side in atoms.cell.lengths())
    rows = "\n".join(" ".join(_number(value) for value in row) for row in zip(*table))
    text = (f"ITEM: TIMESTEP\n{step}\nITEM: NUMBER OF ATOMS\n{len(atoms)}\nITEM: BOX BOUNDS pp pp pp\n{bounds}"
            f"ITEM: ATOMS {' '.join(names)}\n{rows}\n")
    path = atomic_write(path, lambda stream: stream.write(text), binary=False)
    if atoms.info:
        info = {key: np.asarray(value).tolist() for key, value in atoms.info.items()}
        atomic_write(Path(f"{path}.json"), lambda stream: json.dump(info, stream, indent=2), binary=False)
    return path


def _number(value: float | int) -> str:
    return str(int(value)) if isinstance(value, (int, np.integer)) else repr(float(value))


def write_view(path: str | Path, atoms: ase.Atoms, format: str) -> Path:
    """Write ``atoms`` in one of :data:`EXPORT_FORMATS` (``path`` without its suffix, which is added)."""
    target = Path(path).with_suffix(EXPORT_FORMATS[format])
    return write_extxyz(target, atoms) if format == "extxyz" else write_lammps_dump(target, atoms)
