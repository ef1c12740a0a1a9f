"""Tests of equiglass.data.format: the manifest + one .npz per configuration dataset format."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from equiglass.data.format import (
    FIELDS,
    LATER_FIELDS,
    MANIFEST_KEYS,
    MANIFEST_NAME,
    OPTIONAL_FIELDS,
    SCHEMA_VERSION,
    atomic_write,
    configuration_filename,
    load_dataset,
    read_configuration,
    validate_configuration,
    write_configuration,
    write_manifest,
)
from equiglass.errors import DataError

N = 40
DENSITY = 1.2
TIMES = np.array([0.5, 2.0, 10.0])
BOX = np.full(3, (N / DENSITY) ** (1 / 3))


def configuration(seed: int = 0) -> dict[str, np.ndarray]:
    """Every field of the format for N particles in a box at density 1.2, T = 3."""
    rng = np.random.default_rng(seed)
    propensity = rng.uniform(0.0, 2.0, size=(len(TIMES), N))
    return {
        "positions": rng.uniform(0.0, 1.0, size=(N, 3)) * BOX,
        "types": (rng.uniform(size=N) < 0.2).astype(np.int32),
        "box": BOX.copy(),
        "is_positions": rng.uniform(0.0, 1.0, size=(N, 3)) * BOX,
        "potential_energy": rng.normal(-6.5, 1.0, size=N),
        "is_potential_energy": rng.normal(-7.5, 0.5, size=N),
        "times": TIMES.copy(),
        "propensity": propensity,
        "msd": propensity**2 * 1.1,
        "self_intermediate_scattering": np.array([0.9, 0.6, 0.3]),
    }


def manifest(n_configurations: int = 2, **changes: Any) -> dict[str, Any]:
    return {
        "source": "test",
        "n_particles": N,
        "density": DENSITY,
        "temperature": 0.6,
        "times": TIMES.tolist(),
        "configurations": [{"file": configuration_filename(i)} for i in range(n_configurations)],
        "absent_fields": [],
        "propensity_definition": "mean |displacement| over trajectories",
        **changes,
    }


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    """A complete two-configuration dataset."""
    directory = tmp_path / "dataset"
    for i in range(2):
        write_configuration(directory / configuration_filename(i), configuration(i))
    write_manifest(directory, manifest())
    return directory


def test_round_trip(dataset_dir: Path) -> None:
    dataset = load_dataset(dataset_dir)
    assert len(dataset) == 2
    assert dataset.manifest["schema_version"] == SCHEMA_VERSION
    np.testing.assert_array_equal(dataset.times, TIMES)
    assert dataset.absent_fields == ()
    for i, fields in enumerate(dataset):
        expected = configuration(i)
        assert set(fields) == set(FIELDS) - set(LATER_FIELDS)  # older datasets lack those undeclared
        for name, array in expected.items():
            np.testing.assert_array_equal(fields[name], array)
        assert fields["types"].dtype == np.int64 and fields["positions"].dtype == np.float64
    np.testing.assert_array_equal(dataset.read(1)["propensity"], configuration(1)["propensity"])
    with np.load(dataset.files[0], allow_pickle=False) as archive:  # pickle-free
        assert set(archive.files) == set(FIELDS) - set(LATER_FIELDS)


def test_a_symlinked_configuration_is_read_and_never_written_through(dataset_dir: Path, tmp_path: Path) -> None:
    """An entry that links to a file outside the dataset is read like a file; writing the entry
    replaces the link, and the file it pointed to keeps its bytes."""
    outside = tmp_path / "shared" / "configuration.npz"
    write_configuration(outside, configuration(7))
    original = outside.read_bytes()
    entry = dataset_dir / configuration_filename(1)
    entry.unlink()
    entry.symlink_to(outside)
    np.testing.assert_array_equal(load_dataset(dataset_dir).read(1)["positions"], configuration(7)["positions"])
    write_configuration(entry, configuration(1))
    assert not entry.is_symlink() and outside.read_bytes() == original
    np.testing.assert_array_equal(load_dataset(dataset_dir).read(1)["positions"], configuration(1)["positions"])


def test_absent_fields(tmp_path: Path) -> None:
    fields = {name: array for name, array in configuration().items() if name not in OPTIONAL_FIELDS}
    with pytest.raises(DataError, match="missing fields"):
        write_configuration(tmp_path / "c.npz", fields)
    write_configuration(tmp_path / configuration_filename(0), fields, absent=OPTIONAL_FIELDS)
    write_manifest(tmp_path, manifest(1, absent_fields=list(OPTIONAL_FIELDS)))
    dataset = load_dataset(tmp_path)
    assert dataset.absent_fields == OPTIONAL_FIELDS
    assert set(dataset.read(0)) == set(fields)


def replace(name: str, value: Callable[[np.ndarray], Any]) -> Callable[[dict], dict]:
    def mutate(fields: dict) -> dict:
        fields[name] = value(fields[name])
        return fields

    return mutate


def setting(name: str, index: Any, value: Any) -> Callable[[dict], dict]:
    def set_one(array: np.ndarray) -> np.ndarray:
        array = np.array(array, dtype=np.result_type(array, type(value)))
        array[index] = value
        return array

    return replace(name, set_one)


def without(name: str) -> Callable[[dict], dict]:
    def mutate(fields: dict) -> dict:
        del fields[name]
        return fields

    return mutate


BAD_FIELDS: dict[str, tuple[Callable[[dict], dict], dict[str, Any], str]] = {
    "nan-propensity": (setting("propensity", (1, 3), np.nan), {}, "'propensity' holds 1 NaN"),
    "inf-positions": (setting("positions", (0, 0), np.inf), {}, "'positions' holds 1 NaN or infinite"),
    "positions-shape": (replace("positions", lambda a: a[:, :2]), {}, r"'positions' has shape \[40, 2\], expected \[N"),
    "propensity-shape": (replace("propensity", lambda a: a[:2]), {}, r"'propensity' has shape \[2, 40\], expected \[T"),
    "types-length": (replace("types", lambda a: a[:-1]), {}, "'positions' has shape"),
    "types-2": (setting("types", 5, 2), {}, r"types must be 0 \(A\) or 1 \(B\), found values \[2\]"),
    "types-float": (replace("types", lambda a: a.astype(float)), {}, "'types' must hold integers"),
    "types-string": (replace("types", lambda a: a.astype(str)), {}, "'types' must hold integers"),
    "positions-string": (replace("positions", lambda a: a.astype(str)), {}, "'positions' must be numeric"),
    "box-negative": (setting("box", 2, -1.0), {}, "box sides must be positive"),
    "box-not-density": (replace("box", lambda a: a * 1.1), {"density": DENSITY}, "density .* the manifest says 1.2"),
    "positions-outside": (setting("positions", (3, 1), BOX[1]), {}, r"1 particles of 'positions' lie outside the box"),
    "positions-negative": (setting("positions", (3, 1), -1e-9), {}, r"1 particles of 'positions' lie outside"),
    "is-positions-outside": (setting("is_positions", (0, 2), 2 * BOX[2]), {}, "of 'is_positions' lie outside"),
    "times-decreasing": (replace("times", lambda a: a[::-1]), {}, "strictly increasing"),
    "times-zero": (setting("times", 0, 0.0), {}, "positive and strictly increasing"),
    "negative-msd": (setting("msd", (0, 0), -0.1), {}, "'msd' holds negative values"),
    "missing-required": (without("propensity"), {}, r"missing fields \['propensity'\]"),
    "missing-optional": (without("msd"), {}, r"missing fields \['msd'\]"),
    "unknown-field": (lambda fields: {**fields, "velocities": fields["positions"]}, {}, r"unknown fields \['velocit"),
    "n-particles": (lambda fields: fields, {"n_particles": N + 1}, "holds 40 particles, the manifest says 41"),
    "times-values": (lambda fields: fields, {"times": TIMES * 1.01}, "differ from the manifest"),
    "times-length": (lambda fields: fields, {"times": np.append(TIMES, 20.0)}, "differ from the manifest"),
}


@pytest.mark.parametrize("mutate, checks, message", BAD_FIELDS.values(), ids=BAD_FIELDS.keys())
def test_validation_names_the_file(
    tmp_path: Path, mutate: Callable[[dict], dict], checks: dict[str, Any], message: str
) -> None:
    fields = mutate(configuration())
    path = tmp_path / "c.npz"
    with pytest.raises(DataError, match=message) as error:
        write_configuration(path, fields, **checks)
    assert error.value.path == path and str(error.value).startswith(str(path))
    assert not path.exists() and list(tmp_path.iterdir()) == []
    # the same checks on reading: a file written without them is refused by read_configuration
    np.savez(path, **{name: np.asarray(array) for name, array in fields.items()})
    with pytest.raises(DataError, match=message) as error:
        read_configuration(path, **checks)
    assert error.value.path == path


def flipped(start: int) -> Callable[[bytes], bytes]:
    """Inverts 60 bytes from ``start`` (inside the compressed data of the first member, positions.npy)."""
    stop = start + 60
    return lambda content: content[:start] + bytes(b ^ 0xFF for b in content[start:stop]) + content[stop:]


BAD_NPZ: dict[str, Callable[[bytes], bytes]] = {
    "truncated": lambda content: content[: len(content) // 2],
    "empty": lambda content: b"",
    "not-a-zip": lambda content: b"positions,types\n0.1,0\n",
    "pickle": lambda content: b"\x80\x03]q\x00.",
    "corrupt-deflate-stream": flipped(100),  # zlib.error
    "bad-crc": flipped(300),  # zipfile.BadZipFile
}


@pytest.mark.parametrize("corrupt", BAD_NPZ.values(), ids=BAD_NPZ.keys())
def test_unreadable_configuration_names_the_file(tmp_path: Path, corrupt: Callable[[bytes], bytes]) -> None:
    path = write_configuration(tmp_path / "c.npz", configuration())
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(DataError, match="not a readable .npz file") as error:
        read_configuration(path)
    assert error.value.path == path


def test_missing_configuration_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_configuration(tmp_path / "c.npz")


def test_validate_returns_canonical_dtypes() -> None:
    fields = configuration()
    fields["positions"] = fields["positions"].astype(np.float32)
    out = validate_configuration(fields)
    assert out["positions"].dtype == np.float64 and out["types"].dtype == np.int64


# ---------------------------------------------------------------- manifest


def write_raw_manifest(directory: Path, content: Any) -> Path:
    path = directory / MANIFEST_NAME
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def schema(**changes: Any) -> dict[str, Any]:
    return {"schema": "equiglass-dataset", "schema_version": SCHEMA_VERSION, **manifest(), **changes}


def dropped(key: str) -> dict[str, Any]:
    content = schema()
    del content[key]
    return content


BAD_MANIFESTS: dict[str, tuple[Any, str]] = {
    **{f"missing-{key}": (dropped(key), f"manifest lacks the key '{key}'") for key in MANIFEST_KEYS},
    "bad-json": ('{"schema": "equiglass-dataset",', "manifest is not valid JSON"),
    "not-an-object": ("[1, 2]", "manifest must be a JSON object"),
    "wrong-type": (schema(n_particles="40"), "manifest key 'n_particles' has type str"),
    "bool-as-int": (schema(n_particles=True), "manifest key 'n_particles' has type bool"),
    "other-schema": (schema(schema="something-else"), "not an equiglass manifest"),
    "newer-schema": (schema(schema_version=SCHEMA_VERSION + 1), "is newer than this equiglass reads"),
    "unknown-absent-field": (schema(absent_fields=["positions"]), "are not optional fields"),
    "absent-field-not-a-name": (schema(absent_fields=[["msd"]]), "absent_fields must list field names"),
    "file-outside": (schema(configurations=[{"file": "../c.npz"}]), "plain 'file' name"),
    "file-empty": (schema(configurations=[{"file": ""}]), "plain 'file' name"),
    "entry-not-object": (schema(configurations=["c.npz"]), "plain 'file' name"),
    "duplicate-files": (schema(configurations=[{"file": "c.npz"}] * 2), "listed more than once"),
    "times-decreasing": (schema(times=TIMES[::-1].tolist()), "manifest times must be positive and strictly increasing"),
    "times-not-numbers": (schema(times=["a", "b"]), "manifest times must be numbers"),
    "times-nan": (schema(times=[0.5, math.nan]), "manifest times must be positive"),  # json writes NaN
    "density-nan": (schema(density=math.nan), "manifest density must be positive and finite"),
    "density-zero": (schema(density=0.0), "manifest density must be positive and finite"),
}


@pytest.mark.parametrize("content, message", BAD_MANIFESTS.values(), ids=BAD_MANIFESTS.keys())
def test_bad_manifest_names_the_manifest(dataset_dir: Path, content: Any, message: str) -> None:
    path = write_raw_manifest(dataset_dir, content)
    with pytest.raises(DataError, match=message) as error:
        load_dataset(dataset_dir)
    assert error.value.path == path


def test_write_manifest_checks_before_writing(dataset_dir: Path) -> None:
    before = (dataset_dir / MANIFEST_NAME).read_text()
    with pytest.raises(DataError, match="manifest lacks the key 'temperature'"):
        write_manifest(dataset_dir, {key: value for key, value in manifest().items() if key != "temperature"})
    assert (dataset_dir / MANIFEST_NAME).read_text() == before


def test_no_manifest(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no manifest.json"):
        load_dataset(tmp_path)


def test_missing_configuration_files_and_require_complete(dataset_dir: Path) -> None:
    write_manifest(dataset_dir, manifest(4))
    with pytest.raises(DataError, match="2 of 4 configuration files are missing: configuration_00002.npz") as error:
        load_dataset(dataset_dir)
    assert error.value.path == dataset_dir / MANIFEST_NAME
    partial = load_dataset(dataset_dir, require_complete=False)
    assert len(partial) == 2
    assert [path.name for path in partial.completed()] == [configuration_filename(i) for i in range(2)]
    assert [fields["propensity"].shape for fields in partial] == [(3, N)] * 2


def test_configuration_disagreeing_with_the_manifest(dataset_dir: Path) -> None:
    write_configuration(dataset_dir / configuration_filename(1), {**configuration(1), "times": TIMES * 2})
    dataset = load_dataset(dataset_dir)
    dataset.read(0)
    with pytest.raises(DataError, match="differ from the manifest") as error:
        dataset.read(1)
    assert error.value.path == dataset.files[1]


# ---------------------------------------------------------------- atomic writes


def test_atomic_write_keeps_the_old_file_when_the_writer_raises(tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    atomic_write(path, lambda stream: stream.write(b"old content"))

    def write_half_then_fail(stream) -> None:
        stream.write(b"new content, half written")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, write_half_then_fail)
    assert path.read_bytes() == b"old content"
    assert [entry.name for entry in tmp_path.iterdir()] == ["file.bin"]  # no temporary left


def test_write_configuration_keeps_the_old_file_on_bad_input(tmp_path: Path) -> None:
    path = write_configuration(tmp_path / "c.npz", configuration(0))
    bad = {**configuration(1), "types": np.full(N, 3)}
    with pytest.raises(DataError):
        write_configuration(path, bad)
    np.testing.assert_array_equal(read_configuration(path)["propensity"], configuration(0)["propensity"])
    assert [entry.name for entry in tmp_path.iterdir()] == ["c.npz"]


def test_atomic_write_text_creates_parents(tmp_path: Path) -> None:
    path = atomic_write(tmp_path / "a" / "b.txt", lambda stream: stream.write("text"), binary=False)
    assert path.read_text() == "text"


def test_data_error_survives_pickling_across_processes():
    """A DataError raised in a worker process must come back intact."""
    import pickle

    error = pickle.loads(pickle.dumps(DataError("data/x.npz", "holds 3 NaN values")))
    assert isinstance(error, DataError)
    assert error.path == Path("data/x.npz") and error.problem == "holds 3 NaN values"
    assert str(error) == "data/x.npz: holds 3 NaN values"


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_get_the_usual_permissions(tmp_path, umask):
    """Datasets must stay readable by collaborators: mode 0o666 less the umask in force when writing."""
    import os

    previous = os.umask(umask)
    try:
        target = atomic_write(tmp_path / "a.txt", lambda stream: stream.write(b"x"))
    finally:
        os.umask(previous)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [path.name for path in tmp_path.iterdir()] == ["a.txt"]  # no temporary left behind
