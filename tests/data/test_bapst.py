"""Tests of equiglass.data.bapst on miniature files in Bapst et al.'s exact format."""

from __future__ import annotations

import builtins
import functools
import io
import json
import math
import os
import pickle
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from factories import PicklePayload, dump_bapst, make_bapst_data, write_bapst_file

from equiglass import cli
from equiglass.data import bapst
from equiglass.data.bapst import (
    BAPST_ABSENT_FIELDS,
    BAPST_KEYS,
    EXPORT_NOTE,
    bapst_propensity,
    convert_bapst,
    export_bapst,
    find_bapst_files,
    read_bapst,
    read_bapst_file,
)
from equiglass.data.format import LATER_FIELDS, OPTIONAL_FIELDS, load_dataset, write_configuration, write_manifest
from equiglass.errors import DataError
from equiglass.physics.kob_andersen import potential_energy_and_forces


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """A directory of three Bapst files (aggregated_0..2) and their dicts."""
    directory = tmp_path / "bapst"
    return directory, [write_bapst_file(directory / f"aggregated_{i}", np.random.default_rng(i)) for i in range(3)]


def propensity_by_hand(data: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """[T, N] mean |x(t) - x(0)| and mean |x(t) - x(0)|^2 with plain Python loops."""
    x0 = data["positions"]
    propensity, msd = [], []
    for trajectories in data[TARGETS]:
        distances = [[math.dist(x[i], x0[i]) for i in range(len(x0))] for x in trajectories]
        propensity.append([sum(column) / len(distances) for column in zip(*distances)])
        msd.append([sum(d * d for d in column) / len(distances) for column in zip(*distances)])
    return np.array(propensity), np.array(msd)


# ---------------------------------------------------------------- reading


@pytest.mark.parametrize("stacked", [False, True], ids=["list-velocities", "stacked-velocities"])
def test_read_file(tmp_path: Path, stacked: bool) -> None:
    data = write_bapst_file(tmp_path / "f", np.random.default_rng(0), stacked_velocities=stacked)
    config = read_bapst_file(tmp_path / "f")
    n = len(data["positions"])
    assert (config.n_particles, config.n_trajectories) == (n, 4)
    np.testing.assert_array_equal(config.positions, data["positions"])
    np.testing.assert_array_equal(config.types, data["types"])
    np.testing.assert_array_equal(config.box, data["box"])
    np.testing.assert_array_equal(config.time, data["time"])
    np.testing.assert_array_equal(config.time_indices, data["time_indices"])
    np.testing.assert_array_equal(config.times, np.array(data["time"])[data["time_indices"]])
    np.testing.assert_array_equal(config.is_values, data["is_values"])
    np.testing.assert_array_equal(config.start_velocities, np.stack(data["trajectory_start_velocities"]))
    assert config.target_positions.shape == (3, 4, n, 3)
    np.testing.assert_array_equal(config.target_positions[2, 1], data[TARGETS][2][1])
    assert config.metadata == {"temperature": 0.5, "pressure": 2.93, "fluid": "Kob Andersen"}
    assert config.types.dtype == np.int64 and config.positions.dtype == np.float64
    with pytest.raises(ValueError):
        config.positions[0, 0] = 1.0  # read-only


def test_read_without_velocities_and_stacked_targets(tmp_path: Path) -> None:
    data = make_bapst_data(np.random.default_rng(0), n_particles=64)
    del data["trajectory_start_velocities"]
    data[TARGETS] = np.array(data[TARGETS], dtype=np.float32)
    data["metadata"]["temperature"] = np.float64(0.5)  # a numpy scalar goes through numpy's 'scalar' global
    config = read_bapst_file(dump_bapst(tmp_path / "f", data))
    assert config.start_velocities is None
    np.testing.assert_array_equal(config.target_positions, data[TARGETS])
    assert config.metadata["temperature"] == 0.5 and isinstance(config.metadata["temperature"], float)


def test_read_bapst_file_dir_and_glob(tmp_path: Path, source) -> None:
    directory, _ = source
    (directory / ".hidden").write_text("ignored")
    names = ["aggregated_0", "aggregated_1", "aggregated_2"]
    assert [path.name for path, _ in read_bapst(directory)] == names
    assert [path.name for path in find_bapst_files(directory / "aggregated_[12]")] == names[1:]
    assert [path.name for path in find_bapst_files(directory / "aggregated_1")] == ["aggregated_1"]
    (tmp_path / "empty").mkdir()
    for nothing in (tmp_path / "missing", tmp_path / "missing*", tmp_path / "empty"):
        with pytest.raises(DataError, match="no Bapst files") as error:
            read_bapst(nothing)
        assert error.value.path == nothing


# ---------------------------------------------------------------- propensity


def test_propensity_of_bapst_example(tmp_path: Path) -> None:
    """The numbers of Bapst's own test of ``get_targets``."""
    data = {
        "positions": np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]),
        "types": np.array([0, 1], dtype=np.int32),
        "box": np.full(3, 10.0),
        "time": [0.0, 1.0],
        "time_indices": [1],
        "is_values": np.array([0.5]),
        "trajectory_start_velocities": [np.zeros((2, 3))] * 3,
        "trajectory_target_positions": [[
            np.array([[1.0, 0, 0], [1, 2, 4]]),
            np.array([[0.0, 1, 0], [1, 0, 3]]),
            np.array([[0.0, 0, 5], [1, 2, 3]]),
        ]],
        "metadata": {"temperature": 0.44, "pressure": 2.93, "fluid": "Kob Andersen"},
    }
    times, propensity, msd = bapst_propensity(read_bapst_file(dump_bapst(tmp_path / "f", data)))
    np.testing.assert_array_equal(times, [1.0])
    np.testing.assert_allclose(propensity, [[7 / 3, 1.0]], rtol=1e-15)
    np.testing.assert_allclose(msd, [[27 / 3, 5 / 3]], rtol=1e-15)


def test_propensity_equals_hand_computation(tmp_path: Path) -> None:
    data = write_bapst_file(tmp_path / "f", np.random.default_rng(3), n_particles=64)
    times, propensity, msd = bapst_propensity(read_bapst_file(tmp_path / "f"))
    expected_propensity, expected_msd = propensity_by_hand(data)
    np.testing.assert_array_equal(times, [data["time"][k] for k in data["time_indices"]])
    np.testing.assert_allclose(propensity, expected_propensity, rtol=1e-12)
    np.testing.assert_allclose(msd, expected_msd, rtol=1e-12)


# ---------------------------------------------------------------- bad input

N = 512
TARGETS = "trajectory_target_positions"


def set_key(key: str, value: Any) -> Callable[[dict], Any]:
    def mutate(data: dict) -> dict:
        data[key] = value
        return data

    return mutate


def edit(function: Callable[[dict], None]) -> Callable[[dict], dict]:
    def mutate(data: dict) -> dict:
        function(data)
        return data

    return mutate


BAD_DATA: dict[str, tuple[Callable[[dict], Any], str]] = {
    "not-a-dict": (lambda data: list(data.values()), "holds a dict, this one holds a list"),
    **{
        f"missing-{key}": (edit(lambda data, key=key: data.pop(key)), f"missing keys \\['{key}'\\]")
        for key in BAPST_KEYS
        if key != "trajectory_start_velocities"
    },
    "positions-shape": (edit(lambda data: data.update(positions=data["positions"][:, :2])), "'positions' has shape"),
    "types-length": (
        edit(lambda data: data.update(types=data["types"][:-1])),
        r"'types' has shape \[511\], expected \[N\] = \[512\]",
    ),
    "types-float": (edit(lambda data: data.update(types=data["types"].astype(float))), "'types' must hold integers"),
    "types-2": (edit(lambda data: data["types"].__setitem__(3, 2)), r"types must be 0 \(A\) or 1 \(B\), found \[2\]"),
    "box-shape": (set_key("box", np.ones(2)), "'box' has shape"),
    "box-negative": (edit(lambda data: data["box"].__setitem__(1, -data["box"][1])), "box sides must be positive"),
    "box-too-small": (edit(lambda data: data.update(box=data["box"] / 2)), "does not fit the positions"),
    "positions-in-other-units": (edit(lambda data: data.update(positions=data["positions"] * 3.4)), "does not fit"),
    "positions-nan": (edit(lambda data: data["positions"].__setitem__((5, 1), np.nan)), "'positions' holds 1 NaN"),
    "box-inf": (edit(lambda data: data["box"].__setitem__(0, np.inf)), "'box' holds 1 NaN or infinite"),
    "target-inf": (
        edit(lambda data: data[TARGETS][1][2].__setitem__((0, 0), np.inf)),
        "'trajectory_target_positions' holds 1 NaN or infinite",
    ),
    "velocities-partly-nan": (
        edit(lambda data: data["trajectory_start_velocities"][0].__setitem__((0, 0), np.nan)),
        "'trajectory_start_velocities' holds 1 NaN",
    ),
    "is-values-partly-nan": (edit(lambda data: data["is_values"].__setitem__(0, np.nan)), "'is_values' holds 1 NaN"),
    "time-not-increasing": (edit(lambda data: data["time"].__setitem__(3, data["time"][2])), "strictly increasing"),
    "time-negative": (edit(lambda data: data["time"].__setitem__(0, -1.0)), "non-negative"),
    "time-index-out-of-range": (edit(lambda data: data["time_indices"].__setitem__(0, 99)), "out of range"),
    "time-index-negative": (edit(lambda data: data["time_indices"].__setitem__(0, -1)), "out of range"),
    "time-index-repeated": (edit(lambda data: data["time_indices"].__setitem__(0, 3)), "repeat a time point"),
    "time-index-at-zero": (edit(lambda data: data["time_indices"].__setitem__(0, 0)), "at t = 0"),
    "time-indices-float": (set_key("time_indices", [2.0, 4.0, 3.0]), "'time_indices' must hold integers"),
    "is-values-length": (edit(lambda data: data.update(is_values=data["is_values"][:2])), "'is_values' has shape"),
    "targets-missing-a-time": (
        edit(lambda data: data[TARGETS].pop()),
        r"expected \[T, R, N, 3\]",
    ),
    "targets-ragged": (edit(lambda data: data[TARGETS][1].pop()), "ragged"),
    "targets-wrong-n": (
        edit(lambda data: data.update(trajectory_target_positions=[[x[1:] for x in row] for row in data[TARGETS]])),
        "'trajectory_target_positions' has shape",
    ),
    "velocities-wrong-r": (
        edit(lambda data: data["trajectory_start_velocities"].pop()),
        "'trajectory_start_velocities' has shape",
    ),
    "velocities-string": (set_key("trajectory_start_velocities", "none"), "must hold numbers"),
    "metadata-not-dict": (set_key("metadata", [0.5]), "'metadata' must be a dict"),
    "metadata-missing-temperature": (
        edit(lambda data: data["metadata"].pop("temperature")),
        r"lacks \['temperature'\]",
    ),
    "metadata-temperature-string": (edit(lambda data: data["metadata"].update(temperature="0.5")), "must be a number"),
    "metadata-temperature-negative": (edit(lambda data: data["metadata"].update(temperature=-0.5)), "positive"),
    "metadata-pressure-inf": (edit(lambda data: data["metadata"].update(pressure=math.inf)), "pressure must be finite"),
    "metadata-fluid-not-str": (edit(lambda data: data["metadata"].update(fluid=1)), "'fluid' must be a string"),
}


@pytest.mark.parametrize("mutate, message", BAD_DATA.values(), ids=BAD_DATA.keys())
def test_bad_content_names_the_file(tmp_path: Path, mutate: Callable[[dict], Any], message: str) -> None:
    data = mutate(make_bapst_data(np.random.default_rng(0), n_particles=N))
    path = dump_bapst(tmp_path / "aggregated_bad", data)
    with pytest.raises(DataError, match=message) as error:
        read_bapst_file(path)
    assert error.value.path == path and str(error.value).startswith(str(path))


BAD_FILES: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "truncated": (lambda content: content[: len(content) // 2], "truncated or corrupt"),
    "empty": (lambda content: b"", "truncated or corrupt"),
    "garbage": (lambda content: np.random.default_rng(0).bytes(1000), "truncated or corrupt|refused"),
    "text": (lambda content: b"positions,types\n1,2\n", "truncated or corrupt"),
}


@pytest.mark.parametrize("corrupt, message", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_unreadable_file_names_the_file(tmp_path: Path, corrupt: Callable[[bytes], bytes], message: str) -> None:
    path = tmp_path / "aggregated_bad"
    write_bapst_file(path, np.random.default_rng(0), n_particles=64)
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(DataError, match=message) as error:
        read_bapst_file(path)
    assert error.value.path == path


def test_missing_file_and_directory(tmp_path: Path) -> None:
    for path in (tmp_path / "missing", tmp_path):
        with pytest.raises(DataError, match="does not exist") as error:
            read_bapst_file(path)
        assert error.value.path == path


# ---------------------------------------------------------------- crafted pickles


def payloads(marker: Path) -> dict[str, tuple[Any, str]]:
    """Pickle payloads that would create ``marker``, with the global each references first."""
    command = f"touch {marker}"
    calls = {
        "os.system": PicklePayload(os.system, command),
        "builtins.eval": PicklePayload(builtins.eval, f"open({str(marker)!r}, 'w')"),
        "builtins.exec": PicklePayload(builtins.exec, f"open({str(marker)!r}, 'w')"),
        "builtins.open": PicklePayload(builtins.open, str(marker), "w"),
        "subprocess.call": PicklePayload(subprocess.call, ["touch", str(marker)]),
        "functools.partial": PicklePayload(functools.partial(os.system, command)),
        "numpy.savetxt": PicklePayload(np.savetxt, str(marker), np.zeros(1)),
    }
    first = {name: call.function if name != "functools.partial" else functools.partial for name, call in calls.items()}
    return {name: (call, f"{first[name].__module__}.{first[name].__qualname__}") for name, call in calls.items()}


@pytest.mark.parametrize("name", payloads(Path("x")).keys())
@pytest.mark.parametrize("where", ["top-level", "inside-a-valid-file"])
def test_crafted_pickle_is_refused_never_executed(tmp_path: Path, name: str, where: str) -> None:
    marker = tmp_path / "marker"
    payload, global_name = payloads(marker)[name]
    if where == "top-level":
        content = pickle.dumps(payload, protocol=3)
    else:
        data = make_bapst_data(np.random.default_rng(0), n_particles=64)
        data["metadata"]["fluid"] = payload
        content = pickle.dumps(data, protocol=3)
    path = tmp_path / "aggregated_evil"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"refused to load.*global '{global_name}'") as error:
        read_bapst_file(path)
    assert error.value.path == path
    assert not marker.exists()
    pickle.loads(content)  # the positive control: an unrestricted load does run the payload
    assert marker.exists()


def test_handwritten_protocol_0_payload_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil"
    path.write_bytes(f"cos\nsystem\n(Vtouch {marker}\ntR.".encode())
    with pytest.raises(DataError, match="global 'os.system'"):
        read_bapst_file(path)
    assert not marker.exists()


def test_admitted_globals_are_only_numpy_reconstruction() -> None:
    modules = {module for module, _ in bapst.ADMITTED_GLOBALS}
    assert modules == {"numpy", "numpy.core.multiarray", "numpy._core.multiarray"}
    assert {name for _, name in bapst.ADMITTED_GLOBALS} == {"_reconstruct", "scalar", "ndarray", "dtype"}


# ---------------------------------------------------------------- conversion


def test_convert(tmp_path: Path, source) -> None:
    directory, datas = source
    dest = convert_bapst(directory, tmp_path / "dataset", command="equiglass convert-bapst in out")
    dataset = load_dataset(dest)
    manifest = dataset.manifest
    assert len(dataset) == 3
    assert manifest["source"] == "bapst"
    assert manifest["command"] == "equiglass convert-bapst in out"
    assert [entry["source_file"] for entry in manifest["configurations"]] == [f"aggregated_{i}" for i in range(3)]
    assert [entry["n_trajectories"] for entry in manifest["configurations"]] == [4, 4, 4]
    assert (manifest["temperature"], manifest["pressure"], manifest["fluid"]) == (0.5, 2.93, "Kob Andersen")
    assert manifest["n_particles"] == N and manifest["density"] == pytest.approx(1.2, rel=1e-12)
    assert sorted(manifest["absent_fields"]) == sorted(BAPST_ABSENT_FIELDS)
    assert set(OPTIONAL_FIELDS) - set(LATER_FIELDS) - set(BAPST_ABSENT_FIELDS) == {"potential_energy", "msd", "propensity"}
    assert "without removing the centre-of-mass" in manifest["propensity_definition"]
    # stored points are (t2, t4, t3) in the files: sorted, with the map back to the file order
    stored_times = np.array(datas[0]["time"])[datas[0]["time_indices"]]
    np.testing.assert_array_equal(manifest["times"], np.sort(stored_times))
    assert manifest["bapst_stored_index"] == [0, 2, 1]
    assert manifest["is_values"] == pytest.approx([0.9, 0.6, 0.3])
    json.loads((dest / "manifest.json").read_text())  # strict JSON

    for data, fields in zip(datas, dataset):
        assert set(fields) == {"positions", "types", "box", "times", "propensity", "msd", "potential_energy"}
        box = data["box"]
        assert np.all((fields["positions"] >= 0) & (fields["positions"] < box))
        np.testing.assert_allclose(fields["positions"], np.mod(data["positions"], box), atol=1e-12)
        assert fields["positions"][0, 0] == pytest.approx(data["positions"][0, 0] - box[0], abs=1e-12)
        np.testing.assert_array_equal(fields["types"], data["types"])
        propensity, msd = propensity_by_hand(data)
        np.testing.assert_allclose(fields["propensity"], propensity[[0, 2, 1]], rtol=1e-12)
        np.testing.assert_allclose(fields["msd"], msd[[0, 2, 1]], rtol=1e-12)
        energy, _ = potential_energy_and_forces(data["positions"], data["types"], box)
        np.testing.assert_allclose(fields["potential_energy"], energy, rtol=1e-12)


def test_convert_resumes_and_skips_converted_files(tmp_path: Path, source, monkeypatch) -> None:
    directory, _ = source
    dest = tmp_path / "dataset"
    calls = []
    original = write_configuration

    def fail_on_second(path, fields, **checks):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(path, fields, **checks)

    monkeypatch.setattr(bapst, "write_configuration", fail_on_second)
    with pytest.raises(KeyboardInterrupt):
        convert_bapst(directory, dest)
    monkeypatch.setattr(bapst, "write_configuration", original)
    interrupted = load_dataset(dest)  # a valid dataset of what was done
    assert [entry["source_file"] for entry in interrupted.manifest["configurations"]] == ["aggregated_0"]
    assert sorted(path.name for path in dest.iterdir()) == ["configuration_00000.npz", "manifest.json"]

    (directory / "aggregated_0").write_bytes(b"corrupt: would fail if read again")
    convert_bapst(directory, dest)
    resumed = load_dataset(dest)
    assert [(entry["file"], entry["source_file"]) for entry in resumed.manifest["configurations"]] == [
        (f"configuration_0000{i}.npz", f"aggregated_{i}") for i in range(3)
    ]
    fresh = load_dataset(convert_bapst(directory / "aggregated_[12]", tmp_path / "fresh"))
    for i in (1, 2):
        np.testing.assert_array_equal(resumed.read(i)["propensity"], fresh.read(i - 1)["propensity"])


ODD_FILES: dict[str, tuple[dict[str, Any], str]] = {
    "n-particles": ({"n_particles": 729}, "n_particles 729 differs"),
    "times": ({"n_times": 4}, "times .* differs"),
    "temperature": ({"temperature": 0.6}, "temperature 0.6 differs"),
}


@pytest.mark.parametrize("options, message", ODD_FILES.values(), ids=ODD_FILES.keys())
def test_convert_names_the_odd_file(tmp_path: Path, source, options: dict[str, Any], message: str) -> None:
    directory, _ = source
    odd = directory / "aggregated_1"
    write_bapst_file(odd, np.random.default_rng(9), **options)
    with pytest.raises(DataError, match=message) as error:
        convert_bapst(directory, tmp_path / "dataset")
    assert error.value.path == odd


def test_convert_names_a_file_whose_box_is_too_small_for_the_potential(tmp_path: Path) -> None:
    path = tmp_path / "aggregated_small"
    write_bapst_file(path, np.random.default_rng(0), n_particles=64)
    with pytest.raises(DataError, match="potential energy") as error:
        convert_bapst(path, tmp_path / "dataset")
    assert error.value.path == path


def test_convert_refuses_a_dataset_of_another_source(tmp_path: Path, source) -> None:
    directory, _ = source
    dest = convert_bapst(directory / "aggregated_0", tmp_path / "dataset")
    manifest = load_dataset(dest).manifest
    write_manifest(dest, {**manifest, "source": "lammps"})
    with pytest.raises(DataError, match="not a Bapst conversion"):
        convert_bapst(directory, dest)


def test_convert_refuses_duplicate_names(tmp_path: Path) -> None:
    for split in ("train", "test"):
        write_bapst_file(tmp_path / split / "aggregated_0", np.random.default_rng(0), n_particles=64)
    with pytest.raises(DataError, match="distinct names"):
        convert_bapst(tmp_path / "*" / "aggregated_0", tmp_path / "dataset")


# ---------------------------------------------------------------- export


def test_export_round_trip_of_a_converted_dataset(tmp_path: Path, source) -> None:
    directory, datas = source
    dataset = load_dataset(convert_bapst(directory, tmp_path / "dataset"))
    paths = export_bapst(dataset.directory, tmp_path / "exported")
    assert [path.name for path in paths] == [f"configuration_0000{i}.pickle" for i in range(3)]
    for entry, path, data, fields in zip(dataset.manifest["configurations"], paths, datas, dataset):
        content = path.read_bytes()
        assert content[:2] == b"\x80\x03"  # protocol 3
        raw = bapst.RestrictedUnpickler(io.BytesIO(content), path).load()
        assert list(raw) == list(BAPST_KEYS)
        assert [type(raw[key]) for key in ("time", "time_indices", "trajectory_target_positions")] == [list] * 3
        assert raw["metadata"]["equiglass_note"] == EXPORT_NOTE
        config = read_bapst_file(path)
        times, propensity, _ = bapst_propensity(config)
        original_times, original_propensity, _ = bapst_propensity(read_bapst_file(directory / entry["source_file"]))
        # Bapst's time_index k means the same time point as in the original files
        np.testing.assert_allclose(times, original_times, rtol=1e-15)
        np.testing.assert_allclose(propensity, original_propensity, rtol=0, atol=1e-12)
        np.testing.assert_allclose(propensity, fields["propensity"][config.time_indices], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(config.is_values, data["is_values"])
        np.testing.assert_array_equal(config.positions, fields["positions"])
        assert config.start_velocities is None
        assert config.metadata["pressure"] == 2.93 and config.metadata["temperature"] == 0.5


def write_our_dataset(directory: Path, with_scattering: bool) -> list[dict[str, np.ndarray]]:
    """A two-configuration equiglass dataset (not from Bapst), with or without F_s."""
    times = np.array([0.5, 2.0, 8.0, 30.0])
    configurations = []
    for i in range(2):
        rng = np.random.default_rng(i)
        data = make_bapst_data(rng, n_particles=64)
        fields = {
            "positions": np.mod(data["positions"], data["box"]),
            "types": data["types"],
            "box": data["box"],
            "times": times,
            "propensity": rng.uniform(0, 2, size=(4, 64)),
            "msd": rng.uniform(0, 4, size=(4, 64)),
        }
        if with_scattering:
            fields["self_intermediate_scattering"] = np.array([0.9, 0.7, 0.4, 0.2])
        absent = [name for name in OPTIONAL_FIELDS if name not in fields]
        write_configuration(directory / f"c{i}.npz", fields, absent=absent)
        configurations.append(fields)
    write_manifest(directory, {
        "source": "test", "n_particles": 64, "density": 1.2, "temperature": 0.6, "times": times.tolist(),
        "configurations": [{"file": "c0.npz"}, {"file": "c1.npz"}], "absent_fields": absent,
        "propensity_definition": "mean |displacement|",
    })
    return configurations


@pytest.mark.parametrize("with_scattering", [True, False], ids=["with-F_s", "without-F_s"])
def test_export_round_trip_of_our_dataset(tmp_path: Path, with_scattering: bool) -> None:
    configurations = write_our_dataset(tmp_path / "ours", with_scattering)
    paths = export_bapst(tmp_path / "ours", tmp_path / "exported")
    assert [path.name for path in paths] == ["c0.pickle", "c1.pickle"]
    for (_, config), fields in zip(read_bapst(tmp_path / "exported"), configurations):
        times, propensity, msd = bapst_propensity(config)
        np.testing.assert_array_equal(config.time_indices, np.arange(4))
        np.testing.assert_allclose(times, fields["times"], rtol=1e-15)
        np.testing.assert_allclose(propensity, fields["propensity"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(msd, fields["propensity"] ** 2, rtol=1e-9)  # one synthetic trajectory
        if with_scattering:
            np.testing.assert_array_equal(config.is_values, fields["self_intermediate_scattering"])
        else:
            assert np.all(np.isnan(config.is_values))
        assert math.isnan(config.metadata["pressure"]) and config.metadata["fluid"] == "Kob Andersen"


# ---------------------------------------------------------------- command line


def test_cli_subcommands(tmp_path: Path, source, capsys) -> None:
    directory, _ = source
    dataset, exported = tmp_path / "dataset", tmp_path / "exported"
    assert cli.main(["convert-bapst", str(directory), str(dataset)]) == 0
    assert load_dataset(dataset).manifest["command"] == f"equiglass convert-bapst {directory} {dataset}"
    assert cli.main(["export-bapst", str(dataset), str(exported)]) == 0
    assert len(read_bapst(exported)) == 3
    assert f"{exported}: 3 Bapst files" in capsys.readouterr().out


def test_cli_reports_a_bad_file(tmp_path: Path, capsys) -> None:
    path = tmp_path / "aggregated_0"
    path.write_bytes(b"not a pickle")
    assert cli.main(["convert-bapst", str(path), str(tmp_path / "dataset")]) == cli.EXIT_USAGE
    assert capsys.readouterr().err.startswith(f"error: {path}: not a readable pickle")
