"""``equiglass import``: configurations from LAMMPS dumps and extended XYZ through ASE, prediction-only
datasets, and iso-configurational targets from replica trajectories (equiglass.data.ase_io)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import ase
import ase.io
import numpy as np
import pytest
from factories import direct_targets, replica_trajectories, synthetic_configuration, write_config, write_lammps_dump

from equiglass.cli import EXIT_USAGE, main
from equiglass.data.ase_io import configuration_atoms, import_configurations, write_view
from equiglass.data.format import load_dataset
from equiglass.data.graphs import PropensityDataset
from equiglass.errors import DataError


def export(directory: Path, seeds: range, format: str, grid: float | None = None) -> list[dict[str, np.ndarray]]:
    """Write synthetic configurations ``seeds`` as files of ``format`` in ``directory``; return their fields
    (positions rounded to multiples of ``grid`` when given)."""
    configurations = []
    for seed in seeds:
        fields = synthetic_configuration(seed)
        if grid is not None:
            fields["positions"] = np.round(fields["positions"] / grid) * grid % fields["box"]
        write_view(directory / f"frame_{seed}", configuration_atoms(fields, {}), format)
        configurations.append(fields)
    return configurations


def assert_same_configurations(dataset: Path, configurations: list[dict[str, np.ndarray]], atol: float) -> None:
    opened = load_dataset(dataset)
    assert len(opened) == len(configurations)
    for index, expected in enumerate(configurations):
        fields = opened.read(index)
        np.testing.assert_allclose(fields["positions"], expected["positions"], rtol=0, atol=atol)
        np.testing.assert_array_equal(fields["types"], expected["types"])
        np.testing.assert_allclose(fields["box"], expected["box"], rtol=1e-12, atol=0)


def test_a_lammps_dump_round_trip_keeps_positions_types_and_box(tmp_path):
    configurations = export(tmp_path / "dumps", range(2), "lammps-dump")
    assert main(["import", str(tmp_path / "dumps"), str(tmp_path / "dataset"), "--temperature", "0.5"]) == 0
    assert_same_configurations(tmp_path / "dataset", configurations, atol=1e-12)
    opened = load_dataset(tmp_path / "dataset")
    assert not opened.has_targets and opened.times.size == 0
    assert {"propensity", "msd", "propensity_halves"} <= set(opened.absent_fields)


def test_an_extxyz_round_trip_keeps_positions_types_and_box(tmp_path):
    # ASE writes 8 decimals: exact on a grid of 2^-8, within 5e-9 elsewhere
    exact = export(tmp_path / "exact", range(2), "extxyz", grid=2.0**-8)
    rounded = export(tmp_path / "rounded", range(2, 3), "extxyz")
    for name, configurations, atol in (("exact", exact, 1e-12), ("rounded", rounded, 5.1e-9)):
        assert main(["import", str(tmp_path / name), str(tmp_path / f"{name}.dataset"), "--temperature", "0.5"]) == 0
        assert_same_configurations(tmp_path / f"{name}.dataset", configurations, atol=atol)


def test_a_dump_with_its_origin_off_zero_and_rows_out_of_order_is_read_by_id(tmp_path):
    rng = np.random.default_rng(3)
    trajectories, types, box = replica_trajectories(rng, n_replicas=1, n_frames=2)
    path = write_lammps_dump(tmp_path / "shifted.dump", trajectories[0], types, box, origin=-box[0] / 2,
                             order=rng.permutation(types.size))
    import_configurations([path], tmp_path / "dataset", temperature=0.5)
    fields = load_dataset(tmp_path / "dataset").read(0)
    np.testing.assert_allclose(fields["positions"], trajectories[0, 0] % box, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(fields["types"], types)


@pytest.mark.parametrize("columns, unwrapping", [("x ix", "image_flags"), ("xu", "unwrapped"), ("x", "minimum_displacement")])
def test_replica_targets_equal_a_direct_computation(tmp_path, caplog, columns, unwrapping):
    trajectories, types, box = replica_trajectories(np.random.default_rng(5), n_replicas=3)  # odd: unequal halves
    assert np.ptp(trajectories[..., 0], axis=1).max() > 2 * box[0]  # particles cross the box several times
    for replica, path in enumerate(trajectories):
        write_lammps_dump(tmp_path / "config_0" / f"replica_{replica}.dump", path, types, box, columns=columns,
                          steps=range(0, 50 * len(path), 50))
    with caplog.at_level(logging.INFO, logger="equiglass.data.ase_io"):
        code = main(["import", str(tmp_path / "config_0"), str(tmp_path / "dataset"), "--temperature", "0.5",
                     "--replicas", "--timestep", "0.002"])
    assert code == 0
    dataset = load_dataset(tmp_path / "dataset")
    fields = dataset.read(0)
    for name, expected in direct_targets(trajectories).items():
        np.testing.assert_allclose(fields[name], expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fields["times"], 0.1 * np.arange(1, trajectories.shape[1]), rtol=1e-12)
    np.testing.assert_allclose(fields["positions"], trajectories[0, 0] % box, rtol=0, atol=1e-12)
    assert dataset.manifest["configurations"][0]["unwrapping"] == unwrapping
    assert list(dataset.manifest["unwrapping"]) == [unwrapping]
    assert unwrapping.replace("_", " ").split()[0] in caplog.text.replace("_", " ").lower()


def test_image_flags_unwrap_jumps_that_minimum_displacement_cannot(tmp_path):
    trajectories, types, box = replica_trajectories(np.random.default_rng(6), n_frames=4, step=2.5)  # > box / 2
    for replica, path in enumerate(trajectories):
        write_lammps_dump(tmp_path / "flags" / f"{replica}.dump", path, types, box, columns="x ix")
        write_lammps_dump(tmp_path / "plain" / f"{replica}.dump", path, types, box, columns="x")
    expected = direct_targets(trajectories)["propensity"]
    for name in ("flags", "plain"):
        import_configurations([tmp_path / name], tmp_path / f"{name}.dataset", temperature=0.5, replicas=True, timestep=0.01)
    np.testing.assert_allclose(load_dataset(tmp_path / "flags.dataset").read(0)["propensity"], expected, rtol=1e-12)
    assert not np.allclose(load_dataset(tmp_path / "plain.dataset").read(0)["propensity"], expected)


def test_extxyz_replicas_use_their_frame_times(tmp_path):
    trajectories, types, box = replica_trajectories(np.random.default_rng(7), n_replicas=2, n_frames=5)
    times = [0.0, 0.5, 1.0, 2.0, 4.0]
    (tmp_path / "config").mkdir()
    for replica, path in enumerate(trajectories):
        frames = [configuration_atoms({"positions": positions % box, "types": types, "box": box}, {}, {"time": time})
                  for positions, time in zip(path, times)]
        write_xyz(tmp_path / "config" / f"{replica}.extxyz", frames)
    import_configurations([tmp_path / "config"], tmp_path / "dataset", temperature=0.5, replicas=True)
    fields = load_dataset(tmp_path / "dataset").read(0)
    np.testing.assert_allclose(fields["times"], times[1:])
    np.testing.assert_allclose(fields["propensity"], direct_targets(trajectories)["propensity"], atol=2e-8)


def error_line(capsys, argv: list[str]) -> str:
    """Run the command line, check it fails with exit 2, return its one error line."""
    assert main(argv) == EXIT_USAGE
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: ")
    return lines[-1]


def write_xyz(path: Path, atoms: list[ase.Atoms]) -> Path:
    ase.io.write(path, atoms, format="extxyz")
    return path


def test_species_without_a_type_map_are_refused_naming_the_file(tmp_path, capsys):
    atoms = ase.Atoms("Ni3P", positions=np.eye(4, 3), cell=[3.0, 3.0, 3.0], pbc=True)
    path = write_xyz(tmp_path / "nip.extxyz", [atoms])
    assert f"{path}: has species ['Ni', 'P']" in error_line(capsys, ["import", str(path), str(tmp_path / "d"),
                                                                     "--temperature", "1"])
    assert not (tmp_path / "d").exists()
    assert main(["import", str(path), str(tmp_path / "d"), "--temperature", "1", "--types", "Ni=0,P=1"]) == 0
    np.testing.assert_array_equal(load_dataset(tmp_path / "d").read(0)["types"], [0, 0, 0, 1])


def test_a_type_outside_the_map_is_refused(tmp_path, capsys):
    trajectories, types, box = replica_trajectories(np.random.default_rng(8), n_replicas=1, n_frames=1)
    path = write_lammps_dump(tmp_path / "three.dump", trajectories[0], np.where(types == 1, 2, 0), box)
    assert f"{path}: particle types ['3']" in error_line(capsys, ["import", str(path), str(tmp_path / "d"),
                                                                  "--temperature", "1"])


def test_a_file_without_a_box_needs_one_and_must_agree_with_it(tmp_path, capsys):
    path = write_xyz(tmp_path / "nobox.extxyz", [ase.Atoms("H2", positions=[[0.5, 0.5, 0.5], [1.0, 1.5, 2.0]])])
    assert f"{path}: holds no box" in error_line(capsys, ["import", str(path), str(tmp_path / "d"),
                                                          "--temperature", "1", "--types", "H=0"])
    assert main(["import", str(path), str(tmp_path / "d"), "--temperature", "1", "--types", "H=0",
                 "--box", "3,3,3"]) == 0
    np.testing.assert_array_equal(load_dataset(tmp_path / "d").read(0)["box"], [3.0, 3.0, 3.0])
    boxed = write_xyz(tmp_path / "boxed.extxyz", [ase.Atoms("H", cell=[4.0, 4.0, 4.0], pbc=True)])
    assert "differs from the one given" in error_line(capsys, ["import", str(boxed), str(tmp_path / "e"),
                                                               "--temperature", "1", "--types", "H=0", "--box", "3,3,3"])


def test_frames_whose_types_or_boxes_change_are_refused(tmp_path, capsys):
    first = ase.Atoms("HHe", positions=[[0.5, 0.5, 0.5], [1.0, 1.5, 2.0]], cell=[3.0, 3.0, 3.0], pbc=True)
    swapped = ase.Atoms("HeH", positions=first.positions, cell=first.cell, pbc=True)
    grown = ase.Atoms("HHe", positions=first.positions, cell=[3.5, 3.0, 3.0], pbc=True)
    argv = ["--temperature", "1", "--types", "H=0,He=1"]
    path = write_xyz(tmp_path / "types.extxyz", [first, swapped])
    assert f"{path}: particle types change" in error_line(capsys, ["import", str(path), str(tmp_path / "d"), *argv])
    path = write_xyz(tmp_path / "box.extxyz", [first, grown])
    assert f"{path}: the box changes" in error_line(capsys, ["import", str(path), str(tmp_path / "d"), *argv])


def test_a_triclinic_box_is_refused(tmp_path, capsys):
    trajectories, types, box = replica_trajectories(np.random.default_rng(9), n_replicas=1, n_frames=1)
    path = write_lammps_dump(tmp_path / "tilted.dump", trajectories[0], types, box, tilt=(0.5, 0.0, 0.0))
    assert f"{path}: has a triclinic box" in error_line(capsys, ["import", str(path), str(tmp_path / "d"),
                                                                 "--temperature", "1"])


def test_replicas_from_different_initial_configurations_are_refused(tmp_path, capsys):
    trajectories, types, box = replica_trajectories(np.random.default_rng(10), n_replicas=2, n_frames=3)
    trajectories[1, 0, 0] += 0.3
    for replica, path in enumerate(trajectories):
        write_lammps_dump(tmp_path / "config" / f"{replica}.dump", path, types, box, columns="x ix")
    line = error_line(capsys, ["import", str(tmp_path / "config"), str(tmp_path / "d"), "--temperature", "1",
                               "--replicas", "--timestep", "0.005"])
    assert f"{tmp_path / 'config' / '1.dump'}: frame 0 is not the initial configuration" in line
    line = error_line(capsys, ["import", str(tmp_path / "config"), str(tmp_path / "d"), "--temperature", "1", "--replicas"])
    assert "--timestep" in line


def test_an_existing_directory_with_files_is_never_touched(tmp_path, capsys):
    export(tmp_path / "dumps", range(1), "lammps-dump")
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep")
    assert "is not an empty directory" in error_line(capsys, ["import", str(tmp_path / "dumps"), str(dest),
                                                              "--temperature", "1"])
    assert [path.name for path in dest.iterdir()] == ["notes.txt"]


def test_a_failed_import_leaves_nothing(tmp_path, capsys):
    export(tmp_path / "dumps", range(1), "lammps-dump")
    (tmp_path / "dumps" / "zz_broken.dump").write_text("ITEM: TIMESTEP\n0\nnot a dump\n")
    error_line(capsys, ["import", str(tmp_path / "dumps"), str(tmp_path / "d"), "--temperature", "1"])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dumps"]


def test_training_refuses_a_prediction_only_dataset(tmp_path, capsys):
    export(tmp_path / "dumps", range(8), "lammps-dump")
    import_configurations([tmp_path / "dumps"], tmp_path / "dataset", temperature=0.5)
    assert json.loads((tmp_path / "dataset" / "manifest.json").read_text())["times"] == []
    with pytest.raises(DataError, match="prediction-only dataset"):
        PropensityDataset(tmp_path / "dataset")
    config = write_config(tmp_path / "configs", tmp_path / "dataset", "ridge")
    line = error_line(capsys, ["train", str(config), "--run-dir", str(tmp_path / "run")])
    assert f"{tmp_path / 'dataset' / 'manifest.json'}: is a prediction-only dataset" in line


@pytest.mark.parametrize("option, problem", [(["--box", "1,2"], "--box expects three positive sides"),
                                             (["--types", "1=0,2=3"], "--types expects NAME=INDEX")])
def test_malformed_options_are_refused(tmp_path, capsys, option, problem):
    export(tmp_path / "dumps", range(1), "lammps-dump")
    assert problem in error_line(capsys, ["import", str(tmp_path / "dumps"), str(tmp_path / "d"), "--temperature", "1", *option])
    assert not (tmp_path / "d").exists()
