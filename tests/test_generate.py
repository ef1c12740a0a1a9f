"""End-to-end tests of the iso-configurational generator on a tiny protocol (N = 500, T = 1)."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from equiglass.cli import main
from equiglass.data.format import configuration_filename, load_dataset
from equiglass.errors import DataError
from equiglass.simulate.generate import PROPENSITY_DEFINITION, GenerationProtocol, generate
from equiglass.simulate.lammps import lammps_version

# tau_alpha ~ 1.25 at T = 1: 500 steps of equilibration, 250 between configurations, 500 per trajectory.
TINY = GenerationProtocol(
    n_particles=500,
    temperature=1.0,
    tau_alpha_estimate=1.25,
    equilibration_tau=2.0,
    sampling_interval_tau=1.0,
    n_configurations=4,
    configurations_per_chain=2,
    replicas=2,
    n_times=5,
    time_max_tau=2.0,
    minimizer="cg",
)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny dataset generated in one unsharded, in-process run."""
    directory = tmp_path_factory.mktemp("reference")
    report = generate(directory, TINY, workers=0, command="equiglass generate reference")
    assert report.written == [0, 1, 2, 3] and report.skipped == [] and report.complete
    return directory


def copy_of(reference: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(reference, tmp_path / "dataset"))


def assert_same_configurations(a: Path, b: Path, indices: range = range(TINY.n_configurations)) -> None:
    for i in indices:
        with np.load(a / configuration_filename(i)) as left, np.load(b / configuration_filename(i)) as right:
            assert sorted(left.files) == sorted(right.files)
            for name in left.files:
                np.testing.assert_array_equal(left[name], right[name], err_msg=f"configuration {i}, field {name}")


def test_manifest_and_configurations(reference: Path) -> None:
    dataset = load_dataset(reference)
    manifest = dataset.manifest
    assert len(dataset) == TINY.n_configurations and manifest["absent_fields"] == []
    assert manifest["protocol"] == TINY.to_json()
    assert manifest["engine"] == {"name": "LAMMPS", "version": lammps_version()}
    assert manifest["n_particles"] == 500 and manifest["temperature"] == 1.0 and manifest["density"] == 1.2
    assert manifest["q"] == 7.25 and manifest["propensity_definition"] == PROPENSITY_DEFINITION
    assert manifest["command"] == "equiglass generate reference"
    # times are log-spaced, rounded to whole steps of 0.005, up to 2 tau_alpha_estimate
    np.testing.assert_allclose(manifest["times"], [0.05, 0.135, 0.355, 0.94, 2.5], rtol=1e-12)
    assert [entry["chain"] for entry in manifest["configurations"]] == [0, 0, 1, 1]
    assert len({seed for entry in manifest["configurations"] for seed in entry["velocity_seeds"]}) == 8
    # tau_alpha is known at T = 1 to be about 1.25 (N = 1000); the tiny runs measure it roughly
    assert 0.8 < manifest["tau_alpha"] < 2.5
    assert len(manifest["tau_alpha_per_configuration"]) == 4

    for fields in dataset:
        types = fields["types"]
        assert np.count_nonzero(types == 0) == 400
        assert fields["is_potential_energy"].mean() < fields["potential_energy"].mean() - 1.0
        assert -6.5 < fields["potential_energy"].mean() < -5.5  # u ~ -6.0 at T = 1
        assert np.all(np.diff(fields["propensity"].mean(axis=1)) > 0)  # particles move away on average
        assert np.all(fields["propensity"] ** 2 <= fields["msd"] * (1 + 1e-12))  # mean(|d|)^2 <= mean(|d|^2)
        fs = fields["self_intermediate_scattering"]
        assert 0.9 < fs[0] <= 1.0 and fs[-1] < 0.5 and np.all(np.diff(fs) < 0)


def test_workers_give_bit_identical_results(reference: Path, tmp_path: Path) -> None:
    report = generate(tmp_path, TINY, workers=2)
    assert report.complete
    assert_same_configurations(reference, tmp_path)
    assert load_dataset(tmp_path).manifest["tau_alpha"] == load_dataset(reference).manifest["tau_alpha"]


def test_langevin_workers_give_bit_identical_results(tmp_path: Path) -> None:
    protocol = dataclasses.replace(TINY, thermostat="langevin", n_configurations=2, configurations_per_chain=1)
    generate(tmp_path / "inline", protocol, workers=0)
    generate(tmp_path / "pool", protocol, workers=2)
    assert_same_configurations(tmp_path / "inline", tmp_path / "pool", range(2))


def command_line(protocol: GenerationProtocol) -> list[str]:
    """The ``equiglass generate`` options that give `protocol`."""
    options = dataclasses.asdict(protocol).items()
    return [text for name, value in options for text in ("--" + name.replace("_", "-"), str(value))]


def test_resume_from_the_command_line_skips_present_configurations(
    reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    directory = copy_of(reference, tmp_path)
    (directory / configuration_filename(1)).unlink()
    assert main(["generate", str(directory), *command_line(TINY), "--workers", "0"]) == 0
    assert "1 configurations written, 3 already present; dataset complete" in capsys.readouterr().out
    assert_same_configurations(reference, directory)
    report = generate(directory, TINY, workers=0)
    assert report.skipped == [0, 1, 2, 3] and report.written == [] and report.complete


def test_shards_together_equal_one_run(reference: Path, tmp_path: Path) -> None:
    first = generate(tmp_path, TINY, workers=0, shard=(1, 2))
    assert first.written == [2, 3] and not first.complete
    assert json.loads((tmp_path / "manifest.json").read_text())["tau_alpha"] is None
    assert len(load_dataset(tmp_path, require_complete=False)) == 2
    second = generate(tmp_path, TINY, workers=0, shard=(0, 2))
    assert second.written == [0, 1] and second.complete
    assert_same_configurations(reference, tmp_path)
    assert second.tau_alpha == load_dataset(reference).manifest["tau_alpha"]


def test_corrupt_configuration_is_reported_and_regenerated(
    reference: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = copy_of(reference, tmp_path)
    path = directory / configuration_filename(2)
    path.write_bytes(path.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING):
        report = generate(directory, TINY, workers=0)
    assert report.corrupt == [2] and report.written == [2]
    assert any(configuration_filename(2) in message and "regenerated" in message for message in caplog.messages)
    assert_same_configurations(reference, directory)


def test_different_protocol_is_refused(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    directory = copy_of(reference, tmp_path)
    with pytest.raises(DataError, match="temperature: 1.0 in the manifest, 0.9 now"):
        generate(directory, dataclasses.replace(TINY, temperature=0.9), workers=0)
    code = main(["generate", str(directory), "--n-particles", "500", "--workers", "0"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "different protocol" in err and "Traceback" not in err


def test_protocol_validation() -> None:
    with pytest.raises(ValueError, match="sampling_interval_tau"):
        dataclasses.replace(TINY, sampling_interval_tau=0.5)
    with pytest.raises(ValueError, match="repeated numbers of time steps"):
        dataclasses.replace(TINY, n_times=50, time_min=0.005)
    with pytest.raises(ValueError, match="500 particles"):
        dataclasses.replace(TINY, n_particles=100)
    assert TINY.n_chains == 2 and list(TINY.chain_configurations(1)) == [2, 3]
    assert dataclasses.replace(TINY, n_configurations=5).n_chains == 3


def test_command_line_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "equiglass", "generate", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "--tau-alpha-estimate" in result.stdout and "--shard" in result.stdout
