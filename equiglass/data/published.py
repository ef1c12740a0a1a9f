"""Strict reading and resumable conversion of published Kob–Andersen data files.

Shared by the readers of Shiba et al.'s iso-configurational files (:mod:`equiglass.data.shiba`)
and of GlassBench's files (:mod:`equiglass.data.glassbench`): both are uncompressed ``.npz``
archives of the 3D KA mixture at number density 1.2 that carry no box (it follows from N and
ρ) and no time axis (it follows from the temperature). This module

* loads an ``.npz`` without ever unpickling (:func:`load_npz`) and checks its arrays
  (:func:`checked_array`, :func:`check_types`, :func:`wrapped_positions`);
* holds the time table of the published data (:data:`GLASSBENCH_TIMES`, :func:`published_times`);
* converts groups of source files into an equiglass dataset, one configuration at a time,
  resumably, with a progress bar (:func:`convert_groups`).

LJ units throughout.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from equiglass.data.format import (
    DENSITY_TOLERANCE,
    MANIFEST_NAME,
    Dataset,
    configuration_filename,
    load_dataset,
    write_configuration,
    write_manifest,
)
from equiglass.data.geometry import wrap
from equiglass.errors import DataError

#: Number density of every published KA file (Shiba et al.; GlassBench): L = 15.05658 at N = 4096.
KA_DENSITY = 1.2

#: Time points (LJ units) of the published KA data, per temperature: GlassBench's
#: ``KA_results/times_<T>.dat`` (zenodo 10118191), as quoted in the benchmark's public
#: description (Jung et al., arXiv:2311.14752). Index k - 1 is Shiba et al.'s ``tcXX`` index k
#: (``tc07`` = 4120 ≈ τ_α at T = 0.44) and row k - 1 of GlassBench's ``md_prop``. Other
#: temperatures: pass the table of that ``times_<T>.dat``.
GLASSBENCH_TIMES: dict[float, tuple[float, ...]] = {
    0.44: (0.13, 1.3, 13.0, 130.0, 412.0, 1300.0, 4120.0, 13000.0, 41200.0, 130000.0),
}

#: Positions may exceed their range by this much (LJ lengths): published files round L = 15.05658.
ROUNDING = 1e-3

#: A liquid at density 1.2 leaves no empty slab this wide (LJ lengths): positions that span less
#: than ``L - MAX_EDGE_GAP`` along an axis were made in a smaller box than N and ρ imply.
MAX_EDGE_GAP = 1.0


def kob_andersen_box(n_particles: int, density: float = KA_DENSITY) -> np.ndarray:
    """[3] side lengths of the cubic box of ``n_particles`` at ``density`` (15.05658 for 4096 at 1.2)."""
    return np.full(3, (n_particles / density) ** (1 / 3))


def published_times(temperature: float, times: Sequence[float] | None, path: str | Path) -> np.ndarray:
    """[K] the time table of ``temperature``: ``times`` when given, else the bundled one.

    Raises :class:`DataError` naming ``path`` when neither exists or the table is not
    positive and strictly increasing.
    """
    if times is None:
        table = next((value for key, value in GLASSBENCH_TIMES.items() if math.isclose(key, temperature)), None)
        if table is None:
            known = sorted(GLASSBENCH_TIMES)
            raise DataError(path, f"no bundled time table for T = {temperature} (only {known}): pass the times")
        times = table
    array = np.asarray(times, dtype=np.float64)
    if array.ndim != 1 or not np.all(np.isfinite(array)) or np.any(array <= 0) or np.any(np.diff(array) <= 0):
        raise DataError(path, f"times {list(times)} must be positive and strictly increasing")
    return array


def load_npz(path: str | Path, keys: Sequence[str], optional: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The arrays ``keys`` (all required) and ``optional`` (those present) of an ``.npz`` file.

    Never unpickles: an object array is refused (``allow_pickle=False``) before anything in it
    runs. Raises :class:`DataError` naming the file when it is missing, truncated or corrupt,
    lacks a key, or holds an object array.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file does not exist (or is not a file)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in keys if key not in archive.files]
            if missing:
                raise DataError(path, f"missing keys {missing} (holds {sorted(archive.files)})")
            return {key: archive[key] for key in (*keys, *optional) if key in archive.files}
    except DataError:
        raise
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise DataError(path, f"holds an object array, refused unread (it would need unpickling): {error}") from error
        raise DataError(path, f"not a readable .npz file (truncated or corrupt?): {error}") from error
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as error:
        raise DataError(path, f"not a readable .npz file (truncated or corrupt?): {error}") from error


def checked_array(
    data: Mapping[str, np.ndarray],
    key: str,
    dims: str,
    sizes: dict[str, int],
    path: str | Path,
    *,
    integer: bool = False,
) -> np.ndarray:
    """``data[key]`` as float64 (int64 if ``integer``) of symbolic shape ``dims``, all finite.

    ``dims`` has one character per axis: a digit is a fixed size, a letter binds a size in
    ``sizes`` at its first use (shared by later calls with the same dict).
    """
    value = np.asarray(data[key])
    if value.dtype.kind not in ("iu" if integer else "iuf"):
        raise DataError(path, f"'{key}' must hold {'integers' if integer else 'numbers'}, got dtype {value.dtype}")
    wanted = [int(s) if s.isdigit() else sizes.get(s, n) for s, n in zip(dims, value.shape)]
    if value.ndim != len(dims) or list(value.shape) != wanted:
        shown = [int(s) if s.isdigit() else sizes.get(s, s) for s in dims]
        raise DataError(path, f"'{key}' has shape {list(value.shape)}, expected [{', '.join(dims)}] = {shown}")
    sizes.update({s: n for s, n in zip(dims, value.shape) if not s.isdigit()})
    value = value.astype(np.int64 if integer else np.float64)
    if not np.all(np.isfinite(value)):
        raise DataError(path, f"'{key}' holds {np.count_nonzero(~np.isfinite(value))} NaN or infinite values")
    return value


def check_types(types: np.ndarray, path: str | Path) -> None:
    """Raise :class:`DataError` unless every type is 0 (A) or 1 (B)."""
    if np.any((types != 0) & (types != 1)):
        raise DataError(path, f"types must be 0 (A) or 1 (B), found {sorted(set(types.tolist()) - {0, 1})}")


def wrapped_positions(
    positions: np.ndarray, box: np.ndarray, key: str, path: str | Path, *, centred_ok: bool
) -> np.ndarray:
    """[N, 3] ``positions`` wrapped into [0, box), after checking they fill that box.

    Accepted ranges (each widened by :data:`ROUNDING`): [0, L), and [-L/2, L/2) when
    ``centred_ok``. Positions outside them, or spanning less than ``L - MAX_EDGE_GAP`` along an
    axis, were not made in the box that N and ρ imply: :class:`DataError`.
    """
    ranges = [(0.0, 1.0)] + ([(-0.5, 0.5)] if centred_ok else [])
    if not any(np.all((positions >= low * box - ROUNDING) & (positions < high * box + ROUNDING)) for low, high in ranges):
        shown = " or ".join(f"[{low}, {high}) x L" for low, high in ranges)
        raise DataError(
            path, f"'{key}' spans [{positions.min():.6g}, {positions.max():.6g}], outside {shown} with L = {box[0]:.7g} "
            f"(N = {len(positions)}, density {KA_DENSITY}): the box does not match N and the density"
        )
    span = positions.max(axis=0) - positions.min(axis=0)
    if np.any(span < box - MAX_EDGE_GAP):
        raise DataError(
            path, f"'{key}' spans only {span.round(4).tolist()} of the box L = {box[0]:.7g} implied by N = "
            f"{len(positions)} and density {KA_DENSITY}: the box does not match N and the density"
        )
    return wrap(positions, box)


def convert_groups(
    dest: str | Path,
    groups: Mapping[str, Sequence[Path]],
    convert: Callable[[Sequence[Path]], tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]],
    header: Mapping[str, Any],
) -> Path:
    """Convert each group of source files into one configuration of the dataset ``dest``.

    ``groups`` maps a key naming the configuration (recorded as ``source_key``) to its files;
    ``convert(paths)`` returns the facts every configuration must share (manifest keys such as
    ``n_particles``, ``density``, ``temperature``, ``times``), the configuration's fields, and
    extra keys of its manifest entry. ``header`` holds the manifest's other keys (``source``,
    ``absent_fields``, definitions, ``command``).

    Resumable and atomic: each configuration file and then the manifest are written atomically,
    so an interrupted run leaves a valid dataset of what is done, and a rerun converts only the
    groups the manifest does not list. A group whose facts differ from the dataset's raises
    :class:`DataError` naming its first file; what was written before stays.
    """
    dest = Path(dest)
    manifest = _resumed_manifest(dest, header["source"])
    done = {entry["source_key"] for entry in manifest["configurations"]} if manifest else set()
    pending = [key for key in groups if key not in done]
    for key in tqdm(pending, desc=f"{header['source']} -> {dest.name}", unit="configuration", disable=not pending):
        facts, fields, entry = convert(groups[key])
        if manifest is None:
            manifest = {**header, **facts, "configurations": []}
        else:
            _check_same_facts(groups[key][0], facts, manifest)
        used = {item["file"] for item in manifest["configurations"]}
        name = next(configuration_filename(i) for i in range(len(used) + 1) if configuration_filename(i) not in used)
        write_configuration(dest / name, fields, **Dataset(dest, manifest).checks())
        manifest["configurations"].append({"file": name, "source_key": key, **entry})
        write_manifest(dest, manifest)
    if manifest is None:
        raise DataError(dest, "no source files to convert")
    return dest


def _check_same_facts(path: Path, facts: Mapping[str, Any], manifest: Mapping[str, Any]) -> None:
    """Raise :class:`DataError` naming ``path`` unless its facts agree with the dataset's."""
    for key, value in facts.items():
        if key == "density":
            same = abs(value - manifest[key]) <= DENSITY_TOLERANCE * manifest[key]
        else:
            same = np.shape(value) == np.shape(manifest[key]) and np.allclose(value, manifest[key], rtol=1e-9, atol=0)
        if not same:
            raise DataError(path, f"{key} {value} differs from {manifest[key]} of the dataset it is converted into")


def _resumed_manifest(dest: Path, source: str) -> dict[str, Any] | None:
    """The manifest of an earlier conversion into ``dest`` (only configurations whose file
    exists); None when ``dest`` holds no dataset. Refuses a dataset of another source."""
    if not (dest / MANIFEST_NAME).is_file():
        return None
    manifest = load_dataset(dest, require_complete=False).manifest
    if manifest["source"] != source or any("source_key" not in entry for entry in manifest["configurations"]):
        raise DataError(dest / MANIFEST_NAME, f"holds a dataset that is not a '{source}' conversion: refusing to add to it")
    return dict(manifest)
