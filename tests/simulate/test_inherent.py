"""Inherent states added to a dataset that lacks them (equiglass.simulate.inherent): the demo
dataset's first configurations with their inherent states taken out, as converted Bapst or
Shiba files come, get them back as the generator made them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from equiglass.cli import main
from equiglass.data.format import MANIFEST_NAME, load_dataset
from equiglass.physics.kob_andersen import potential_energy_and_forces
from equiglass.resources import DEMO_DATASET
from equiglass.simulate.inherent import INHERENT_FIELDS, add_inherent_states

#: Fields the generator wrote that a converted Bapst file lacks.
TAKEN_OUT = ("is_positions", "is_potential_energy")


def without_inherent_states(directory: Path, count: int = 2, keep: tuple[int, ...] = ()) -> Path:
    """The first ``count`` demo configurations in ``directory``, those not in ``keep`` without
    their inherent state; the manifest declares it absent (as after an interrupted run when
    ``keep`` is given)."""
    directory.mkdir()
    manifest = json.loads((DEMO_DATASET / MANIFEST_NAME).read_text())
    manifest["configurations"] = manifest["configurations"][:count]
    manifest["absent_fields"] = sorted({*manifest["absent_fields"], *TAKEN_OUT})
    for index, entry in enumerate(manifest["configurations"]):
        with np.load(DEMO_DATASET / entry["file"]) as archive:
            fields = {name: archive[name] for name in archive.files if index in keep or name not in TAKEN_OUT}
        np.savez_compressed(directory / entry["file"], **fields)
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))
    return directory


def test_the_generators_inherent_states_are_recomputed_and_declared(tmp_path):
    directory = without_inherent_states(tmp_path / "dataset")
    assert "is_positions" not in load_dataset(directory).read(0)
    report = add_inherent_states(directory, command="equiglass inherent-states dataset")
    assert report.minimised == [0, 1] and report.present == []

    dataset, demo = load_dataset(directory), load_dataset(DEMO_DATASET)
    assert not set(INHERENT_FIELDS) & set(dataset.absent_fields)
    assert dataset.manifest["inherent_states"].startswith("fire minimisation to max_i |F_i| < 1e-06 with LAMMPS")
    for index in range(2):
        added, made = dataset.read(index), demo.read(index)
        assert sorted(added) == sorted(made)
        for name in TAKEN_OUT:  # the same minimiser from the same positions: the generator's minimum
            np.testing.assert_allclose(added[name], made[name], rtol=0, atol=1e-9, err_msg=name)
        for name in set(made) - set(TAKEN_OUT):  # the rest untouched
            np.testing.assert_array_equal(added[name], made[name], err_msg=name)
        # a minimum of the Kob-Andersen energy by the engine-independent numpy reference
        energy, forces = potential_energy_and_forces(added["is_positions"], added["types"], added["box"])
        assert np.abs(forces).max() < 1e-5
        np.testing.assert_allclose(energy, added["is_potential_energy"], rtol=0, atol=1e-9)


def test_a_rerun_minimises_only_what_is_missing(tmp_path):
    directory = without_inherent_states(tmp_path / "dataset", keep=(0,))
    kept = (directory / "configuration_00000.npz").read_bytes()
    assert "is_positions" in load_dataset(directory).absent_fields
    report = add_inherent_states(directory)
    assert report.minimised == [1] and report.present == [0]
    assert (directory / "configuration_00000.npz").read_bytes() == kept
    assert "is_positions" not in load_dataset(directory).absent_fields
    again = add_inherent_states(directory)
    assert again.minimised == [] and again.present == [0, 1]


def test_inherent_positions_without_their_energies_stay_as_they_are(tmp_path):
    """GlassBench's files hold inherent positions but no energies: nothing is minimised, and the
    manifest keeps declaring the energies absent (the files still lack them)."""
    directory = without_inherent_states(tmp_path / "dataset", keep=(0, 1))
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    manifest["absent_fields"] = sorted({*manifest["absent_fields"], "potential_energy", "is_potential_energy"} - {"is_positions"})
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))
    for entry in manifest["configurations"]:
        with np.load(directory / entry["file"]) as archive:
            fields = {name: archive[name] for name in archive.files if name not in ("potential_energy", "is_potential_energy")}
        np.savez_compressed(directory / entry["file"], **fields)
    report = add_inherent_states(directory)
    assert report.minimised == [] and report.present == [0, 1]
    dataset = load_dataset(directory)
    assert {"potential_energy", "is_potential_energy"} <= set(dataset.absent_fields)
    assert "potential_energy" not in dataset.read(1)  # the dataset still reads


def test_a_box_that_is_not_one_cube_is_refused_before_anything_is_written(tmp_path, capsys):
    directory = without_inherent_states(tmp_path / "dataset")
    path = directory / "configuration_00001.npz"
    with np.load(path) as archive:
        fields = {name: archive[name] for name in archive.files}
    fields["box"] = fields["box"] * np.array([1.0, 1.0, 1.0 + 1e-5])  # within the density check, not a cube
    np.savez_compressed(path, **fields)
    before = {file.name: file.read_bytes() for file in directory.iterdir()}
    assert main(["inherent-states", str(directory), "--workers", "0"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: {path}: box ") and "cube" in error and "\n" not in error
    assert {file.name: file.read_bytes() for file in directory.iterdir()} == before
