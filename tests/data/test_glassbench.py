"""GlassBench KA 3D files: reading, conversion of every kept field, wrapping, bad input, resuming, CLI.

The real files are not reachable from here: the tests write files in GlassBench's layout
(``factories.write_glassbench_tree``), N = 64 instead of 4096.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from factories import PUBLISHED_TIMES, PicklePayload, make_glassbench_data, make_shiba_data, write_glassbench_tree, write_npz

import equiglass.data.glassbench as glassbench
from equiglass.cli import main
from equiglass.data.format import load_dataset
from equiglass.data.glassbench import convert_glassbench, read_glassbench_file
from equiglass.data.shiba import convert_shiba
from equiglass.errors import DataError

L = (64 / 1.2) ** (1 / 3)
N_TIMES = len(PUBLISHED_TIMES)


def convert(root: Path, dest: Path, split: str = "test", **options) -> Path:
    return convert_glassbench(root, dest, temperature=0.44, split=split, **options)


def test_test_files_keep_every_field_and_published_prediction(tmp_path):
    written = write_glassbench_tree(tmp_path / "KA_models", np.random.default_rng(0), "test", (401, 402))
    dataset = load_dataset(convert(tmp_path / "KA_models", tmp_path / "out"))
    assert dataset.times.tolist() == list(PUBLISHED_TIMES)
    assert [entry["index"] for entry in dataset.manifest["configurations"]] == [401, 402]
    assert "published_SE3" not in dataset.absent_fields and "bond_breaking" not in dataset.absent_fields
    for index, fields in zip((401, 402), dataset):
        data = written[index]
        assert data["initial_positions"].min() < 0  # the factory writes GlassBench's [-L/2, L/2)
        np.testing.assert_allclose(fields["positions"], np.mod(data["initial_positions"], L), rtol=0, atol=1e-13)
        for ours, theirs in (("is_positions", "initial_positions_inherent"), ("cage_positions", "initial_positions_cage")):
            np.testing.assert_allclose(fields[ours], np.mod(data[theirs], L), rtol=0, atol=1e-13)
            assert np.all((fields[ours] >= 0) & (fields[ours] < L))
        np.testing.assert_array_equal(fields["propensity"], data["md_prop"])
        np.testing.assert_array_equal(fields["bond_breaking"], data["bb_prop"])
        for model in ("BOTAN", "CAGE", "GlassMLP", "SE3"):
            np.testing.assert_array_equal(fields[f"published_{model}"], data[model])
        np.testing.assert_array_equal(fields["descriptor_SBO"], np.tile(data["SBO"], (N_TIMES, 1)))
        np.testing.assert_array_equal(fields["descriptor_DEN"], data["DEN"])
        assert "descriptor_PSI6" not in fields
        np.testing.assert_allclose(fields["box"], L, rtol=1e-15)


def test_inherent_positions_across_the_boundary_are_wrapped_not_refused(tmp_path):
    data = make_glassbench_data(np.random.default_rng(1), test=True)
    corner = np.argmin(data["initial_positions"].sum(axis=1))  # the particle nearest (-L/2, -L/2, -L/2)
    data["initial_positions_inherent"][corner] = data["initial_positions"][corner] - 0.3  # outside [-L/2, L/2)
    path = write_npz(tmp_path / "N64T0.44_401.npz", **data)
    fields = read_glassbench_file(path, N_TIMES, "test")
    np.testing.assert_allclose(fields["is_positions"][corner], data["initial_positions"][corner] - 0.3 + L, atol=1e-13)


def test_train_files_record_which_have_cage_positions(tmp_path):
    write_glassbench_tree(tmp_path / "KA_models", np.random.default_rng(0), "train", (99, 100, 101, 102))
    dataset = load_dataset(convert(tmp_path / "KA_models", tmp_path / "out", split="train"))
    entries = dataset.manifest["configurations"]
    assert [entry["index"] for entry in entries] == [99, 100, 101, 102]
    assert ["cage_positions" in entry["absent_fields"] for entry in entries] == [False, False, True, True]
    assert ["cage_positions" in fields for fields in dataset] == [True, True, False, False]
    assert {"published_BOTAN", "published_SE3"} <= set(dataset.absent_fields)


def test_both_wrapping_conventions_give_the_same_dataset(tmp_path):
    data = make_glassbench_data(np.random.default_rng(2), test=True)
    keys = ("initial_positions", "initial_positions_inherent", "initial_positions_cage")
    centred = write_npz(tmp_path / "a" / "N64T0.44_401.npz", **data)
    in_box = write_npz(tmp_path / "b" / "N64T0.44_401.npz", **{**data, **{key: np.mod(data[key], L) for key in keys}})
    a, b = (read_glassbench_file(path, N_TIMES, "test") for path in (centred, in_box))
    for name in ("positions", "is_positions", "cage_positions"):
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-13)
    outside = write_npz(tmp_path / "c" / "N64T0.44_401.npz", **{**data, "initial_positions": data["initial_positions"] + 0.25 * L})
    with pytest.raises(DataError, match=r"outside \[0.0, 1.0\) x L or \[-0.5, 0.5\) x L"):
        read_glassbench_file(outside, N_TIMES, "test")


def _without(key):
    return lambda d: {k: v for k, v in d.items() if k != key}


BAD_FILES = {
    "missing md_prop": (_without("md_prop"), r"missing keys \['md_prop'\]"),
    "test file without SE3": (_without("SE3"), r"missing keys \['SE3'\]"),
    "md_prop at 9 times": (lambda d: {**d, "md_prop": d["md_prop"][:9]}, r"'md_prop' has shape \[9, 64\], expected \[T, N\] = \[10, 64\]"),
    "positions of 63 particles": (
        lambda d: {**d, "initial_positions": d["initial_positions"][:63]}, r"'initial_positions' has shape \[63, 3\]"
    ),
    "NaN in bb_prop": (lambda d: {**d, "bb_prop": np.where(np.arange(64) == 7, np.nan, d["bb_prop"])}, "'bb_prop' holds 10 NaN"),
    "type -1": (lambda d: {**d, "types": np.where(np.arange(64) == 0, -1, d["types"])}, r"found \[-1\]"),
    "negative md_prop": (lambda d: {**d, "md_prop": -d["md_prop"]}, "negative propensities"),
    "box too large for N and rho": (
        lambda d: {**d, **{k: d[k] * 1.3 for k in ("initial_positions", "initial_positions_inherent", "initial_positions_cage")}},
        "the box does not match N and the density",
    ),
    "box too small for N and rho": (
        lambda d: {**d, **{k: d[k] * 0.7 for k in ("initial_positions", "initial_positions_inherent", "initial_positions_cage")}},
        "spans only",
    ),
    "inherent positions of another configuration": (
        lambda d: {**d, "initial_positions_inherent": d["initial_positions_inherent"][::-1]},
        "'initial_positions_inherent' lies a median",
    ),
    "string descriptor": (lambda d: {**d, "SBO": np.array(["x"] * 64)}, "'SBO' must hold numbers"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_are_refused_naming_file_and_problem(tmp_path, case):
    change, message = BAD_FILES[case]
    path = write_npz(tmp_path / "N64T0.44_401.npz", **change(make_glassbench_data(np.random.default_rng(3), test=True)))
    with pytest.raises(DataError, match=message) as error:
        read_glassbench_file(path, N_TIMES, "test")
    assert str(error.value).startswith(str(path))


def test_truncated_file_is_refused(tmp_path):
    path = write_npz(tmp_path / "N64T0.44_401.npz", **make_glassbench_data(np.random.default_rng(0), test=True))
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_glassbench_file(path, N_TIMES, "test")


def test_object_array_is_refused_without_running_anything(tmp_path):
    marker = tmp_path / "ran"
    payload = np.array([PicklePayload(os.mkdir, str(marker))], dtype=object)
    data = {**make_glassbench_data(np.random.default_rng(0), test=True), "SE3": payload}
    path = write_npz(tmp_path / "N64T0.44_401.npz", **data)
    with pytest.raises(DataError, match="object array, refused unread"):
        read_glassbench_file(path, N_TIMES, "test")
    assert not marker.exists()


def test_interrupted_conversion_resumes_with_only_the_missing_files(tmp_path, monkeypatch):
    write_glassbench_tree(tmp_path / "KA_models", np.random.default_rng(4), "test", (401, 402, 403))
    reads: list[str] = []
    real_read = glassbench.read_glassbench_file

    def interrupt_at_third(path, n_times, split):
        reads.append(Path(path).name)
        if len(reads) == 3:
            raise KeyboardInterrupt
        return real_read(path, n_times, split)

    monkeypatch.setattr(glassbench, "read_glassbench_file", interrupt_at_third)
    with pytest.raises(KeyboardInterrupt):
        convert(tmp_path / "KA_models", tmp_path / "out")
    assert len(load_dataset(tmp_path / "out")) == 2
    reads.clear()
    monkeypatch.setattr(glassbench, "read_glassbench_file", lambda *args: reads.append(Path(args[0]).name) or real_read(*args))
    dataset = load_dataset(convert(tmp_path / "KA_models", tmp_path / "out"))
    assert reads == ["N64T0.44_403.npz"]
    assert [entry["index"] for entry in dataset.manifest["configurations"]] == [401, 402, 403]


def test_cli_needs_times_for_an_unbundled_temperature_and_reports_one_line(tmp_path, capsys):
    root = tmp_path / "KA_models"
    write_glassbench_tree(root, np.random.default_rng(5), "train", (1, 2))
    (root / "T0.44").rename(root / "T0.50")
    for path in (root / "T0.50" / "train").iterdir():
        path.rename(path.with_name(path.name.replace("T0.44", "T0.50")))
    command = ["convert-glassbench", str(root), str(tmp_path / "out"), "--temperature", "0.5", "--split", "train"]
    assert main(command) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no bundled time table for T = 0.5" in err[0]
    times = ",".join(str(0.1 * 2**k) for k in range(N_TIMES))
    assert main([*command, "--times", times]) == 0
    assert load_dataset(tmp_path / "out").times.tolist() == [float(t) for t in times.split(",")]


def test_cli_bad_file_exits_2_and_keeps_the_converted_ones(tmp_path, capsys):
    root = tmp_path / "KA_models"
    written = write_glassbench_tree(root, np.random.default_rng(6), "test", (401, 402, 403))
    bad = write_npz(root / "T0.44/test/N64T0.44_403.npz", **{**written[403], "md_prop": written[403]["md_prop"][:, :10]})
    assert main(["convert-glassbench", str(root), str(tmp_path / "out"), "--temperature", "0.44", "--split", "test"]) == 2
    err = capsys.readouterr().err
    assert err.count("error") == 1
    assert err.strip().splitlines()[-1] == f"error: {bad}: 'md_prop' has shape [10, 10], expected [T, N] = [10, 64]"
    assert [entry["index"] for entry in load_dataset(tmp_path / "out").manifest["configurations"]] == [401, 402]


def test_refuses_to_add_to_a_dataset_of_another_source(tmp_path):
    write_glassbench_tree(tmp_path / "KA_models", np.random.default_rng(7), "test", (401,))
    before = convert(tmp_path / "KA_models", tmp_path / "out") / "manifest.json"
    text = before.read_text()
    shiba_file = write_npz(tmp_path / "isoconfig_N64T0.44_1_tc07.npz", **make_shiba_data(np.random.default_rng(8)))
    with pytest.raises(DataError, match="not a 'shiba' conversion"):
        convert_shiba([shiba_file], tmp_path / "out")
    assert before.read_text() == text
