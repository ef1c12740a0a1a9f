"""The embedded demo dataset (data/demo) is complete, valid and physically sound.

It was made by `equiglass generate` (the command is in its manifest); the
reference values come from ../shared/reference/kob_andersen.md (KA at rho = 1.2,
T = 0.6: u = -6.71 per particle, tau_alpha = 13.4).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from equiglass.data import load_dataset
from equiglass.physics import kob_andersen

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"  # tests/data/ -> the repository


@pytest.fixture(scope="module")
def demo():
    return load_dataset(DEMO)


@pytest.fixture(scope="module")
def configurations(demo):
    return [demo.read(path) for path in demo.files]


def test_demo_is_complete_and_records_its_command(demo, configurations):
    assert len(configurations) == len(demo) >= 20
    assert demo.manifest["command"].startswith("equiglass generate data/demo")
    assert demo.manifest["absent_fields"] == []
    assert demo.manifest["engine"]["name"] == "LAMMPS"
    assert all(c["positions"].shape == (demo.manifest["n_particles"], 3) for c in configurations)


def test_composition_and_density(demo, configurations):
    n_a, n_b = kob_andersen.composition(demo.manifest["n_particles"])
    for fields in configurations:
        assert np.count_nonzero(fields["types"] == 0) == n_a
        assert np.count_nonzero(fields["types"] == 1) == n_b
        assert fields["types"].size / np.prod(fields["box"]) == pytest.approx(1.2, rel=1e-9)


def test_potential_energy_matches_reference_and_the_numpy_potential(demo, configurations):
    energies = np.array([c["potential_energy"].mean() for c in configurations])
    assert energies.mean() == pytest.approx(-6.71, abs=0.03)
    fields = configurations[0]
    energy, _ = kob_andersen.potential_energy_and_forces(fields["positions"], fields["types"], fields["box"])
    np.testing.assert_allclose(energy, fields["potential_energy"], rtol=0, atol=1e-9)


def test_inherent_states_are_minima_below_the_thermal_energy(demo, configurations):
    tolerance = demo.manifest["protocol"]["force_tolerance"]
    for fields in configurations[:3]:
        energy, forces = kob_andersen.potential_energy_and_forces(fields["is_positions"], fields["types"], fields["box"])
        assert np.linalg.norm(forces, axis=1).max() < tolerance
        np.testing.assert_allclose(energy, fields["is_potential_energy"], rtol=0, atol=1e-9)
        assert fields["is_potential_energy"].mean() < fields["potential_energy"].mean() - 0.5


def test_dynamics_relaxes_on_the_expected_timescale(demo, configurations):
    """F_s decays from ~1 through 1/e; tau_alpha near the reference 13.4; propensity grows with time."""
    tau_alpha = demo.manifest["tau_alpha"]
    assert 8.0 < tau_alpha < 20.0
    fs = np.mean([c["self_intermediate_scattering"] for c in configurations], axis=0)
    assert fs[0] > 0.95 and fs[-1] < np.exp(-1)
    assert np.all(np.diff(fs) < 0)
    mean_propensity = np.mean([c["propensity"].mean(axis=1) for c in configurations], axis=0)
    assert np.all(np.diff(mean_propensity) > 0)
    for fields in configurations:
        # Jensen: mean |d| squared never exceeds mean |d|^2.
        assert np.all(fields["propensity"] ** 2 <= fields["msd"] * (1 + 1e-12))


def test_propensity_is_heterogeneous(demo, configurations):
    """Near tau_alpha, propensities spread far more than replica noise around one value would give.

    If every A particle had the same Gaussian displacement distribution, |d| would follow a
    Maxwell distribution (coefficient of variation sqrt(3 pi - 8) / (2 sqrt 2) = 0.422) and the
    mean over R replicas would vary by 0.422 / sqrt(R) between particles. Dynamic heterogeneity
    must show as a clearly larger spread.
    """
    replicas = demo.manifest["protocol"]["replicas"]
    homogeneous = np.sqrt(3 * np.pi - 8) / (2 * np.sqrt(2)) / np.sqrt(replicas)
    for fields in configurations:
        column = int(np.searchsorted(fields["times"], demo.manifest["tau_alpha"]))
        propensity_a = fields["propensity"][column, fields["types"] == 0]
        assert propensity_a.std() / propensity_a.mean() > 1.5 * homogeneous
