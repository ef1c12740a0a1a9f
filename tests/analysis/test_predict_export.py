"""``equiglass predict --format extxyz / lammps-dump``: files OVITO colours by, equal to the ``.npz`` predictions."""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
from factories import write_config

from equiglass.cli import main
from equiglass.data.ase_io import configuration_atoms, import_configurations, write_view
from equiglass.data.format import load_dataset
from equiglass.training.loop import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory, dataset) -> Path:
    """A one-epoch ridge run on the synthetic dataset."""
    directory = tmp_path_factory.mktemp("run")
    return train(write_config(directory / "configs", dataset, "ridge"), directory / "ridge", progress=False).run_dir


def read_dump(path: Path) -> dict[str, np.ndarray]:
    """Column name -> values of a one-frame LAMMPS text dump, rows in file order."""
    lines = path.read_text().splitlines()
    header = next(index for index, line in enumerate(lines) if line.startswith("ITEM: ATOMS"))
    names = lines[header].split()[2:]
    table = np.loadtxt(lines[header + 1:], ndmin=2)
    return dict(zip(names, table.T))


def test_extxyz_columns_equal_the_npz_predictions(tmp_path, run, dataset):
    out = tmp_path / "view"
    assert main(["predict", str(run), str(dataset), "--out", str(out), "--format", "extxyz"]) == 0
    opened = load_dataset(dataset)
    for index, path in enumerate(opened.files):
        fields = opened.read(index)
        atoms = ase.io.read(out / f"{path.stem}.extxyz")
        with np.load(out / path.name) as archive:
            np.testing.assert_allclose(atoms.arrays["predicted_propensity"], archive["prediction"].T, rtol=0, atol=5.1e-9)
            np.testing.assert_allclose(atoms.info["times"], archive["times"])
        np.testing.assert_allclose(atoms.arrays["propensity"], fields["propensity"].T, rtol=0, atol=5.1e-9)
        np.testing.assert_allclose(atoms.arrays["potential_energy"], fields["potential_energy"], rtol=0, atol=5.1e-9)
        np.testing.assert_array_equal(atoms.arrays["type"], fields["types"] + 1)
        np.testing.assert_allclose(atoms.positions, fields["positions"], rtol=0, atol=5.1e-9)
        np.testing.assert_allclose(atoms.cell.lengths(), fields["box"])


def test_lammps_dump_columns_equal_the_npz_predictions_exactly(tmp_path, run, dataset):
    out = tmp_path / "view"
    assert main(["predict", str(run), str(dataset), "--out", str(out), "--format", "lammps-dump"]) == 0
    path = load_dataset(dataset).files[0]
    columns = read_dump(out / f"{path.stem}.dump")
    with np.load(out / path.name) as archive:
        prediction = archive["prediction"]
        times = archive["times"]
    for k, row in enumerate(prediction):
        np.testing.assert_array_equal(columns[f"predicted_propensity_{k}"], row)
    assert json.loads((out / f"{path.stem}.dump.json").read_text())["times"] == times.tolist()
    np.testing.assert_array_equal(columns["type"], load_dataset(dataset).read(0)["types"] + 1)


def test_views_are_added_to_existing_predictions_without_recomputing_them(tmp_path, run, dataset):
    out = tmp_path / "view"
    assert main(["predict", str(run), str(dataset), "--out", str(out)]) == 0
    first = load_dataset(dataset).files[0]
    with np.load(out / first.name) as archive:
        shifted = {name: archive[name] for name in archive.files}
    shifted["prediction"] = shifted["prediction"] + 1.0  # a marker: a recomputation would lose it
    np.savez_compressed(out / first.name, **shifted)
    assert main(["predict", str(run), str(dataset), "--out", str(out), "--format", "extxyz"]) == 0
    atoms = ase.io.read(out / f"{first.stem}.extxyz")
    np.testing.assert_allclose(atoms.arrays["predicted_propensity"], shifted["prediction"].T, atol=5.1e-9)


def test_a_prediction_only_import_is_predicted_and_viewed_without_measured_columns(tmp_path, run, dataset):
    fields = load_dataset(dataset).read(0)
    write_view(tmp_path / "dumps" / "mine", configuration_atoms(fields, {}), "lammps-dump")
    import_configurations([tmp_path / "dumps"], tmp_path / "imported", temperature=0.5)
    out = tmp_path / "view"
    assert main(["predict", str(run), str(tmp_path / "imported"), "--out", str(out), "--format", "extxyz"]) == 0
    atoms = ase.io.read(out / "configuration_00000.extxyz")
    assert "propensity" not in atoms.arrays and "potential_energy" not in atoms.arrays
    assert main(["predict", str(run), str(dataset), "--out", str(tmp_path / "original")]) == 0
    with np.load(out / "configuration_00000.npz") as imported, np.load(tmp_path / "original" / "configuration_00000.npz") as original:
        np.testing.assert_allclose(atoms.arrays["predicted_propensity"], imported["prediction"].T, atol=5.1e-9)
        np.testing.assert_allclose(imported["prediction"], original["prediction"], rtol=1e-6)
