"""Shiba et al. (2023) iso-configurational files: reading, targets, conversion, command line.

Real files: ``tests/data/shiba_public/`` (two public files of h3-Open-BDEC/pyg_botan, 8 of their
32 trajectories, exact; see its README). Synthetic ones come from ``factories.make_shiba_data``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from factories import PUBLISHED_TIMES, PicklePayload, make_shiba_data, write_npz

import equiglass.data.shiba as shiba
from equiglass.cli import main
from equiglass.data.format import load_dataset
from equiglass.data.shiba import convert_shiba, read_shiba_file
from equiglass.errors import DataError

PUBLIC = Path(__file__).parent / "shiba_public"
PUBLIC_FILES = sorted(PUBLIC.glob("*.npz"))
PUBLIC_TIMES_TC07 = PUBLISHED_TIMES[6]  # tc07: the 7th time point, 4120 = tau_alpha at T = 0.44


def shiba_name(index: int, tc: int = 7, n: int = 64, temperature: str = "0.44") -> str:
    return f"isoconfig_N{n}T{temperature}_{index}_tc{tc:02d}.npz"


def direct_propensity(initial: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """[N] Shiba's own formula (their load_data.py), written out."""
    return np.mean([np.linalg.norm(trajectory - initial, axis=-1) for trajectory in positions], axis=0)


def write_shiba(directory: Path, index: int, tc: int = 7, seed: int | None = None, **changes) -> dict:
    data = {**make_shiba_data(np.random.default_rng(index * 100 + tc if seed is None else seed)), **changes}
    write_npz(directory / shiba_name(index, tc), **data)
    return data


# ------------------------------------------------------------------ real public files


@pytest.fixture(scope="module")
def public_dataset(tmp_path_factory) -> Path:
    return convert_shiba([PUBLIC], tmp_path_factory.mktemp("shiba") / "dataset")


def test_public_files_give_shibas_propensity_msd_halves_and_fs(public_dataset):
    dataset = load_dataset(public_dataset)
    assert [entry["source_files"] for entry in dataset.manifest["configurations"]] == [[p.name] for p in PUBLIC_FILES]
    assert dataset.times.tolist() == [PUBLIC_TIMES_TC07] and dataset.manifest["temperature"] == 0.44
    for path, fields in zip(PUBLIC_FILES, dataset):
        with np.load(path) as raw:
            initial, positions, types = raw["initial_positions"], raw["positions"], raw["types"]
        distance = np.linalg.norm(positions - initial, axis=-1)  # [8, N]
        np.testing.assert_allclose(fields["propensity"][0], direct_propensity(initial, positions), rtol=1e-13)
        np.testing.assert_allclose(fields["msd"][0], (distance**2).mean(axis=0), rtol=1e-13)
        np.testing.assert_allclose(fields["propensity_halves"][:, 0], [distance[:4].mean(0), distance[4:].mean(0)], rtol=1e-13)
        qr = 7.25 * distance[:, types == 0]
        np.testing.assert_allclose(fields["self_intermediate_scattering"], [np.mean(np.sin(qr) / qr)], rtol=1e-12)
        np.testing.assert_array_equal(fields["positions"], initial)  # already in [0, L): stored as is
        np.testing.assert_allclose(fields["box"], 15.05658, atol=5e-6)
        assert fields["types"].tolist() == types.tolist()


def test_public_trajectories_start_from_the_stored_wrapped_positions():
    """The fact the reader rests on: no image offset between initial_positions and the trajectories
    (one particle off by L would move the centre of mass of the displacements by L / N = 4e-3)."""
    for path in PUBLIC_FILES:
        with np.load(path) as raw:
            drift = (raw["positions"] - raw["initial_positions"]).mean(axis=1)  # [R, 3]
        assert np.abs(drift).max() < 1e-9
        assert read_shiba_file(path).positions.shape == (8, 4096, 3)


# ------------------------------------------------------------------ synthetic files: targets and wrapping


def test_trajectories_crossing_the_box_several_times_count_in_full(tmp_path):
    data = write_shiba(tmp_path, 1)
    fields = load_dataset(convert_shiba([tmp_path / shiba_name(1)], tmp_path / "out")).read(0)
    box = fields["box"][0]
    x = data["positions"][:, 0, 0]
    assert np.all((x[::2] > 3 * box) & (x[1::2] < -2 * box))  # particle 0 crosses the box 3 times, both ways
    expected = direct_propensity(data["initial_positions"], data["positions"])
    np.testing.assert_allclose(fields["propensity"][0], expected, rtol=1e-13)
    assert fields["propensity"][0, 0] > 3 * box  # no minimum image, no wrapping of the trajectories
    assert np.all((fields["positions"] >= 0) & (fields["positions"] < box))


def test_files_of_several_time_indices_make_one_configuration(tmp_path):
    raw = tmp_path / "raw"
    written = {}
    for index in (1, 2):
        base = make_shiba_data(np.random.default_rng(index))
        for tc, scale in ((10, 3.0), (3, 1.0), (7, 2.0)):
            moved = base["initial_positions"] + scale * (base["positions"] - base["initial_positions"])
            moved[:, 0] = base["positions"][:, 0]  # keep particle 0's crossings
            written[index, tc] = moved
            write_npz(raw / shiba_name(index, tc), **{**base, "positions": moved})
    dataset = load_dataset(convert_shiba([raw], tmp_path / "out"))
    assert dataset.times.tolist() == [PUBLISHED_TIMES[2], PUBLISHED_TIMES[6], PUBLISHED_TIMES[9]]
    assert len(dataset) == 2
    for index, fields in zip((1, 2), dataset):
        initial = make_shiba_data(np.random.default_rng(index))["initial_positions"]
        for row, tc in enumerate((3, 7, 10)):
            np.testing.assert_allclose(fields["propensity"][row], direct_propensity(initial, written[index, tc]), rtol=1e-13)


def test_configurations_with_different_time_indices_are_refused(tmp_path):
    write_shiba(tmp_path, 1, tc=7)
    write_shiba(tmp_path, 2, tc=8)
    with pytest.raises(DataError, match=r"_2_tc08\.npz: times \[13000\.0\] differs"):
        convert_shiba([tmp_path], tmp_path / "out")


def test_frame_mismatch_is_refused(tmp_path):
    """Initial positions wrapped but trajectories unwrapped from an unwrapped start (one box away)."""
    data = make_shiba_data(np.random.default_rng(0))
    data["positions"][:, 5, 1] += (64 / 1.2) ** (1 / 3)
    write_npz(tmp_path / shiba_name(1), **data)
    with pytest.raises(DataError, match="not unwrapped from the stored initial positions"):
        read_shiba_file(tmp_path / shiba_name(1))


def test_temperature_without_a_bundled_table_needs_the_times(tmp_path):
    data = make_shiba_data(np.random.default_rng(0))
    write_npz(tmp_path / shiba_name(1, tc=2, temperature="0.50"), **data)
    with pytest.raises(DataError, match="no bundled time table for T = 0.5"):
        convert_shiba([tmp_path], tmp_path / "out")
    dataset = load_dataset(convert_shiba([tmp_path], tmp_path / "out", times=[0.1, 1.0, 10.0]))
    assert dataset.times.tolist() == [1.0] and dataset.manifest["temperature"] == 0.5


# ------------------------------------------------------------------ bad input


def _box_length(n: int = 64) -> float:
    return (n / 1.2) ** (1 / 3)


BAD_FILES = {
    "missing key": (lambda d: {k: v for k, v in d.items() if k != "initial_positions"}, r"missing keys \['initial_positions'\]"),
    "positions in 2D": (lambda d: {**d, "positions": d["positions"][..., :2]}, r"'positions' has shape \[6, 64, 2\]"),
    "N differs from the name": (lambda d: {**d, "types": d["types"][:60]}, r"'types' has shape \[60\]"),
    "float types": (lambda d: {**d, "types": d["types"].astype(float)}, "'types' must hold integers"),
    "NaN": (lambda d: {**d, "positions": np.where(np.arange(3) == 1, np.nan, d["positions"])}, "NaN or infinite"),
    "type 2": (lambda d: {**d, "types": np.where(np.arange(64) == 3, 2, d["types"]).astype(np.int8)}, r"found \[2\]"),
    "box too large for N and rho": (
        lambda d: {**d, "initial_positions": d["initial_positions"] * 1.25, "positions": d["positions"] * 1.25},
        "the box does not match N and the density",
    ),
    "box too small for N and rho": (
        lambda d: {**d, "initial_positions": d["initial_positions"] * 0.7, "positions": d["positions"] * 0.7},
        "spans only .* the box does not match N and the density",
    ),
    "centred positions": (
        lambda d: {**d, "initial_positions": d["initial_positions"] - _box_length() / 2, "positions": d["positions"] - _box_length() / 2},
        r"outside \[0.0, 1.0\) x L",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_are_refused_naming_file_and_problem(tmp_path, case):
    change, message = BAD_FILES[case]
    path = write_npz(tmp_path / shiba_name(1), **change(make_shiba_data(np.random.default_rng(0))))
    with pytest.raises(DataError, match=message) as error:
        read_shiba_file(path)
    assert str(error.value).startswith(str(path))


def test_truncated_file_is_refused(tmp_path):
    path = write_npz(tmp_path / shiba_name(1), **make_shiba_data(np.random.default_rng(0)))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_shiba_file(path)


def test_object_array_is_refused_without_running_anything(tmp_path):
    marker = tmp_path / "ran"
    data = make_shiba_data(np.random.default_rng(0))
    data["positions"] = np.array([PicklePayload(os.mkdir, str(marker))], dtype=object)
    path = write_npz(tmp_path / shiba_name(1), **data)
    with pytest.raises(DataError, match="object array, refused unread"):
        read_shiba_file(path)
    assert not marker.exists()


def test_bad_file_names_are_refused(tmp_path):
    path = write_npz(tmp_path / "isoconfig_1.npz", **make_shiba_data(np.random.default_rng(0)))
    with pytest.raises(DataError, match="not a Shiba et al. file name"):
        convert_shiba([path], tmp_path / "out")


# ------------------------------------------------------------------ resumability and the command line


def test_interrupted_conversion_resumes_with_only_the_missing_configurations(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    for index in (1, 2, 3):
        write_shiba(raw, index)
    reads: list[str] = []
    real_read = shiba.read_shiba_file

    def interrupt_at_second(path):
        reads.append(Path(path).name)
        if len(reads) == 2:
            raise KeyboardInterrupt
        return real_read(path)

    monkeypatch.setattr(shiba, "read_shiba_file", interrupt_at_second)
    with pytest.raises(KeyboardInterrupt):
        convert_shiba([raw], tmp_path / "out")
    first = load_dataset(tmp_path / "out")
    assert len(first) == 1 and not list((tmp_path / "out").glob(".*.tmp"))
    before = first.files[0].read_bytes()

    monkeypatch.setattr(shiba, "read_shiba_file", lambda path: reads.append(Path(path).name) or real_read(path))
    reads.clear()
    dataset = load_dataset(convert_shiba([raw], tmp_path / "out"))
    assert reads == [shiba_name(2), shiba_name(3)]
    assert [entry["source_key"] for entry in dataset.manifest["configurations"]] == [f"N64T0.44_{i}" for i in (1, 2, 3)]
    assert dataset.files[0].read_bytes() == before


def test_cli_converts_and_reports_bad_input_in_one_line_keeping_what_was_written(tmp_path, capsys):
    raw = tmp_path / "raw"
    for index in (1, 2):
        write_shiba(raw, index)
    assert main(["convert-shiba", str(raw), str(tmp_path / "out")]) == 0
    assert "2 configurations" in capsys.readouterr().out

    bad = write_npz(raw / shiba_name(3), **{**make_shiba_data(np.random.default_rng(3)), "types": np.full(64, 5, np.int8)})
    assert main(["convert-shiba", str(raw), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err  # the progress bar's lines, then the error
    assert err.count("error") == 1
    assert err.strip().splitlines()[-1] == f"error: {bad}: types must be 0 (A) or 1 (B), found [5]"
    assert len(load_dataset(tmp_path / "out")) == 2
