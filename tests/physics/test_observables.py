"""Observables of iso-configurational trajectories, checked against numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from equiglass.physics import observables as obs


def hand_made_displacements() -> np.ndarray:
    """[R=2, T=1, N=2, 3] displacements with 3-4-5 and 0-0-2 / 6-8-0 / 1-2-2 norms."""
    return np.array(
        [
            [[[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]]],  # replica 0: |d| = 5, 2
            [[[0.0, 0.0, 1.0], [6.0, 8.0, 0.0]]],  # replica 1: |d| = 1, 10
        ]
    )


def test_propensity_and_msd_by_hand() -> None:
    delta = hand_made_displacements()
    # particle 0: (5 + 1) / 2 = 3, (25 + 1) / 2 = 13; particle 1: (2 + 10) / 2 = 6, (4 + 100) / 2 = 52
    np.testing.assert_allclose(obs.propensity(delta), [[3.0, 6.0]], rtol=1e-15)
    np.testing.assert_allclose(obs.mean_squared_displacement(delta), [[13.0, 52.0]], rtol=1e-15)


def test_displacements_with_and_without_centre_of_mass() -> None:
    initial = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    # one replica, two frames: frame 0 at rest; frame 1 particle 0 moved by (2, 0, 0), particle 1 by (0, 0, 0)
    trajectories = np.array([[initial, initial + [[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]])
    raw = obs.displacements(trajectories, initial, remove_centre_of_mass=False)
    np.testing.assert_array_equal(raw[0, 1], [[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    relative = obs.displacements(trajectories, initial)
    # centre of mass moved (1, 0, 0): the particles moved +1 and -1 relative to it
    np.testing.assert_array_equal(relative[0, 1], [[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    np.testing.assert_array_equal(relative[0, 0], np.zeros((2, 3)))
    # a rigid translation of everything is no motion at all
    shifted = np.array([[initial + [0.3, -7.0, 12.0]]])
    np.testing.assert_allclose(obs.displacements(shifted, initial), 0.0, atol=1e-14)


def test_unwrap_with_image_flags_over_several_boxes() -> None:
    box = np.array([2.0, 3.0, 4.0])
    wrapped = np.array([[[0.5, 2.9, 0.1]], [[1.5, 0.2, 3.9]]])  # [T=2, N=1, 3]
    flags = np.array([[[3, -2, 0]], [[-5, 7, -1]]])
    expected = np.array([[[6.5, -3.1, 0.1]], [[-8.5, 21.2, -0.1]]])
    np.testing.assert_allclose(obs.unwrap(wrapped, flags, box), expected, rtol=0, atol=1e-14)


def test_unwrap_trajectory_follows_a_particle_around_the_box_many_times() -> None:
    box = np.array([2.0, 2.0, 2.0])
    steps = np.arange(40)
    # particle 0 runs +0.7 per frame in x (14 box lengths in all), particle 1 -0.9 per frame in y, z fixed
    true = np.zeros((40, 2, 3))
    true[:, 0, 0] = 0.1 + 0.7 * steps
    true[:, 1, 1] = 1.9 - 0.9 * steps
    true[:, :, 2] = 1.0
    wrapped = np.mod(true, box)
    unwrapped = obs.unwrap_trajectory(wrapped, box)
    np.testing.assert_allclose(unwrapped, true, rtol=0, atol=1e-12)
    assert true[-1, 0, 0] > 13 * box[0] and true[-1, 1, 1] < -16 * box[1]
    # and the image-flag route agrees
    flags = np.floor(true / box).astype(int)
    np.testing.assert_allclose(obs.unwrap(wrapped, flags, box), true, rtol=0, atol=1e-12)


def test_self_intermediate_scattering() -> None:
    mask = np.array([True, True, False])
    at_rest = np.zeros((3, 2, 3, 3))
    np.testing.assert_array_equal(obs.self_intermediate_scattering(at_rest, 7.25, mask), [1.0, 1.0])
    # every masked particle displaced by 0.5 in some direction, at q = pi: sin(pi/2) / (pi/2) = 2 / pi
    delta = np.zeros((2, 1, 3, 3))
    delta[0, 0, 0] = [0.5, 0.0, 0.0]
    delta[0, 0, 1] = [0.0, -0.3, 0.4]
    delta[1, 0, 0] = [0.0, 0.0, -0.5]
    delta[1, 0, 1] = [0.3, 0.4, 0.0]
    delta[:, 0, 2] = [9.0, 9.0, 9.0]  # masked out: must not count
    np.testing.assert_allclose(obs.self_intermediate_scattering(delta, np.pi, mask), [2.0 / np.pi], rtol=1e-14)
    # half the particles at rest, half at q|d| = pi (sin = 0): F_s = 1/2
    delta[:, 0, 1] = 0.0
    delta[:, 0, 0] = [1.0, 0.0, 0.0]
    np.testing.assert_allclose(obs.self_intermediate_scattering(delta, np.pi, mask), [0.5], atol=1e-15)


def test_relaxation_time_on_an_exponential() -> None:
    tau = 3.7
    times = np.geomspace(0.01, 100.0, 200)
    fs = np.exp(-times / tau)
    assert obs.relaxation_time(times, fs) == pytest.approx(tau, rel=2e-3)
    # two points bracketing 1/e: exact linear interpolation in log t
    times2 = np.array([1.0, 10.0])
    fs2 = np.array([np.exp(-1.0) + 0.1, np.exp(-1.0) - 0.3])  # crosses a quarter of the way
    assert obs.relaxation_time(times2, fs2) == pytest.approx(10.0**0.25, rel=1e-12)


def test_relaxation_time_is_nan_when_not_bracketed() -> None:
    times = np.array([0.1, 1.0, 10.0])
    assert np.isnan(obs.relaxation_time(times, np.array([0.99, 0.9, 0.5])))  # never decays to 1/e
    assert np.isnan(obs.relaxation_time(times, np.array([0.2, 0.1, 0.05])))  # already below at the first point


def test_malformed_input_is_rejected() -> None:
    with pytest.raises(ValueError):
        obs.propensity(np.zeros((2, 3, 3)))
    with pytest.raises(ValueError):
        obs.self_intermediate_scattering(np.zeros((1, 1, 2, 3)), 7.25, np.array([False, False]))
    with pytest.raises(ValueError):
        obs.relaxation_time(np.array([1.0, 0.5]), np.array([1.0, 0.0]))
