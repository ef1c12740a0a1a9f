"""Tests of equiglass.physics.kob_andersen: constants, composition, starts, and the numpy energies/forces."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from equiglass.physics import kob_andersen as ka


def test_constants() -> None:
    assert ka.EPSILON.shape == ka.SIGMA.shape == (2, 2)
    np.testing.assert_array_equal(ka.EPSILON, [[1.0, 1.5], [1.5, 0.5]])
    np.testing.assert_array_equal(ka.SIGMA, [[1.0, 0.8], [0.8, 0.88]])
    np.testing.assert_allclose(ka.CUTOFF, [[2.5, 2.0], [2.0, 2.2]])
    assert (ka.CUTOFF_RATIO, ka.FRACTION_A, ka.DENSITY, ka.MASS, ka.MAX_CUTOFF) == (2.5, 0.8, 1.2, 1.0, 2.5)


@pytest.mark.parametrize(
    ("n", "expected"), [(500, (400, 100)), (1000, (800, 200)), (4096, (3277, 819)), (7, (6, 1)), (8, (6, 2))]
)
def test_composition(n: int, expected: tuple[int, int]) -> None:
    assert ka.composition(n) == expected
    assert ka.composition(n)[0] == round(0.8 * n)


def test_composition_rejects_bad_sizes() -> None:
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError):
            ka.composition(bad)


def test_box_length() -> None:
    assert ka.box_length(4096, 1.2) == pytest.approx(15.0566, abs=1e-4)
    assert ka.box_length(1000) ** 3 * ka.DENSITY == pytest.approx(1000)
    # The minimum-image limit L >= 2 r_c = 5 holds from N = 150 at density 1.2.
    assert ka.box_length(151) > 2 * ka.MAX_CUTOFF > ka.box_length(149)


@pytest.mark.parametrize("start", ["random", "lattice"])
def test_initial_positions(start: str) -> None:
    n = 500
    box = np.full(3, ka.box_length(n))
    positions, types = ka.initial_positions(n, box, np.random.default_rng(0), start=start)
    assert positions.shape == (n, 3) and positions.dtype == np.float64
    assert types.shape == (n,) and np.issubdtype(types.dtype, np.integer)
    assert ((positions >= 0) & (positions < box)).all()
    assert (np.bincount(types, minlength=2) == ka.composition(n)).all()
    assert 0 < types[: ka.composition(n)[0]].sum()  # shuffled, not all A first
    again = ka.initial_positions(n, box, np.random.default_rng(0), start=start)
    np.testing.assert_array_equal(positions, again[0])
    np.testing.assert_array_equal(types, again[1])
    if start == "lattice":
        spacing = box[0] / 8  # 8^3 = 512 >= 500 sites
        delta = positions[:, None] - positions[None]
        delta -= box * np.round(delta / box)
        distance = np.linalg.norm(delta, axis=-1) + np.eye(n) * 1e9
        assert distance.min() == pytest.approx(spacing)
    with pytest.raises(ValueError):
        ka.initial_positions(n, box, np.random.default_rng(0), start="fcc")  # type: ignore[arg-type]


def brute_force(positions: np.ndarray, types: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pair by pair, over explicit periodic images: an independent check of the vectorised code."""
    n = len(positions)
    positions = np.mod(positions, box)
    energy, forces = np.zeros(n), np.zeros((n, 3))
    images = np.array(list(itertools.product((-1, 0, 1), repeat=3))) * box
    for i in range(n):
        for j in range(i + 1, n):
            a, b = types[i], types[j]
            eps, sig, rc = ka.EPSILON[a, b], ka.SIGMA[a, b], ka.CUTOFF[a, b]
            shift = 4 * eps * ((sig / rc) ** 12 - (sig / rc) ** 6)
            for image in images:
                d = positions[i] - positions[j] + image
                r = float(np.sqrt(d @ d))
                if r < rc:
                    e = 4 * eps * ((sig / r) ** 12 - (sig / r) ** 6) - shift
                    f = 24 * eps * (2 * (sig / r) ** 12 - (sig / r) ** 6) / r**2 * d
                    energy[i] += e / 2
                    energy[j] += e / 2
                    forces[i] += f
                    forces[j] -= f
    return energy, forces


def test_energy_and_forces_match_brute_force() -> None:
    rng = np.random.default_rng(1)
    box = np.array([5.2, 5.5, 6.0])  # orthorhombic, just above 2 r_c
    n = 60
    positions, types = ka.initial_positions(n, box, rng, start="lattice")
    positions += rng.normal(scale=0.05, size=positions.shape) + rng.integers(-2, 3, size=positions.shape) * box
    energy, forces = ka.potential_energy_and_forces(positions, types, box)
    expected_energy, expected_forces = brute_force(positions, types, box)
    np.testing.assert_allclose(energy, expected_energy, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(forces, expected_forces, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(forces.sum(axis=0), 0, atol=1e-9)  # Newton's third law


def test_forces_are_minus_the_energy_gradient() -> None:
    rng = np.random.default_rng(2)
    box = np.full(3, ka.box_length(500))
    positions, types = ka.initial_positions(500, box, rng, start="lattice")
    positions += rng.normal(scale=0.03, size=positions.shape)
    _, forces = ka.potential_energy_and_forces(positions, types, box)
    h = 1e-6
    for i, k in [(0, 0), (17, 1), (333, 2)]:
        plus, minus = positions.copy(), positions.copy()
        plus[i, k] += h
        minus[i, k] -= h
        gradient = (
            ka.potential_energy_and_forces(plus, types, box)[0].sum()
            - ka.potential_energy_and_forces(minus, types, box)[0].sum()
        ) / (2 * h)
        assert -gradient == pytest.approx(forces[i, k], rel=1e-5, abs=1e-6)


def test_pair_energy_at_and_beyond_the_cutoff() -> None:
    box = np.full(3, 10.0)
    for a, b in [(0, 0), (0, 1), (1, 1)]:
        rc = ka.CUTOFF[a, b]
        types = np.array([a, b])
        # Minimum of 4 eps [(s/r)^12 - (s/r)^6] at r = 2^(1/6) s, value -eps, shifted.
        r_min = 2 ** (1 / 6) * ka.SIGMA[a, b]
        shift = 4 * ka.EPSILON[a, b] * ((ka.SIGMA[a, b] / rc) ** 12 - (ka.SIGMA[a, b] / rc) ** 6)
        energy, forces = ka.potential_energy_and_forces(np.array([[1.0, 1, 1], [1 + r_min, 1, 1]]), types, box)
        assert energy.sum() == pytest.approx(-ka.EPSILON[a, b] - shift, rel=1e-12)
        np.testing.assert_allclose(energy, energy.sum() / 2)
        np.testing.assert_allclose(forces, 0, atol=1e-12)
        inside = ka.potential_energy_and_forces(np.array([[1.0, 1, 1], [1 + rc - 1e-9, 1, 1]]), types, box)
        assert abs(inside[0].sum()) < 1e-9 and inside[1][0, 0] > 0  # ~0 energy; attraction pulls particle 0 to +x
        outside = ka.potential_energy_and_forces(np.array([[1.0, 1, 1], [1 + rc + 1e-9, 1, 1]]), types, box)
        assert (outside[0] == 0).all() and (outside[1] == 0).all()


def test_large_system_runs_in_chunks() -> None:
    n = 4096
    box = np.full(3, ka.box_length(n))
    positions, types = ka.initial_positions(n, box, np.random.default_rng(3), start="lattice")
    energy, forces = ka.potential_energy_and_forces(positions, types, box)
    assert energy.shape == (n,) and forces.shape == (n, 3)
    assert np.isfinite(energy).all() and np.isfinite(forces).all()


def test_rejects_small_boxes_and_bad_input() -> None:
    positions = np.zeros((2, 3))
    positions[1] = 1.0
    types = np.array([0, 1])
    with pytest.raises(ValueError, match="twice the largest cutoff"):
        ka.potential_energy_and_forces(positions, types, np.full(3, ka.box_length(149)))
    ka.potential_energy_and_forces(positions, types, np.full(3, ka.box_length(151)))
    with pytest.raises(ValueError):
        ka.potential_energy_and_forces(positions, np.array([0, 2]), np.full(3, 6.0))
    with pytest.raises(ValueError):
        ka.potential_energy_and_forces(positions[:, :2], types, np.full(3, 6.0))
    with pytest.raises(ValueError):
        ka.potential_energy_and_forces(positions * np.nan, types, np.full(3, 6.0))
    with pytest.raises(ValueError):
        ka.potential_energy_and_forces(positions, types, np.full(2, 6.0))
