"""Dynamical observables of iso-configurational trajectories (plain numpy).

All lengths in LJ units (sigma_AA), times in LJ time units, wave numbers in
1 / sigma_AA. Shapes use R = replicas (iso-configurational trajectories),
T = stored time points, N = particles. Every function takes and returns
arrays and leaves its inputs untouched.
"""

from __future__ import annotations

import numpy as np


def unwrap(positions: np.ndarray, image_flags: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Unwrapped positions from wrapped ones and integer image flags.

    Args:
        positions: [..., N, 3] positions wrapped into the box (LJ lengths).
        image_flags: [..., N, 3] integers: how many box lengths each
            coordinate has crossed (LAMMPS's ``ix iy iz``).
        box: [3] box sides (LJ lengths).

    Returns:
        [..., N, 3] float64 unwrapped positions, positions + image_flags * box.
    """
    positions = np.asarray(positions, dtype=np.float64)
    image_flags = np.asarray(image_flags)
    if positions.shape != image_flags.shape or positions.shape[-1:] != (3,):
        raise ValueError(f"positions {positions.shape} and image_flags {image_flags.shape} must both be [..., N, 3]")
    return positions + image_flags * np.asarray(box, dtype=np.float64)


def unwrap_trajectory(wrapped: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Reconstruct unwrapped paths from successive wrapped frames (no image flags needed).

    Between consecutive frames each particle is assumed to have moved by the
    minimum image of its apparent displacement, i.e. by less than half a box
    side along every axis; frames must be close enough in time for that to
    hold. The image shifts are counted as integers, so the result equals
    ``wrapped + k * box`` exactly with integer ``k``, and frame 0 is returned
    unchanged.

    Args:
        wrapped: [T, N, 3] wrapped positions (LJ lengths), in time order.
        box: [3] box sides (LJ lengths).

    Returns:
        [T, N, 3] float64 unwrapped positions, continuous from frame 0.
    """
    wrapped = np.asarray(wrapped, dtype=np.float64)
    if wrapped.ndim != 3 or wrapped.shape[-1] != 3:
        raise ValueError(f"wrapped must have shape [T, N, 3], got {wrapped.shape}")
    box = np.asarray(box, dtype=np.float64)
    jumps = np.rint(np.diff(wrapped, axis=0) / box)  # [T-1, N, 3] boundary crossings, sign opposite to motion
    shifts = np.concatenate([np.zeros_like(wrapped[:1]), -np.cumsum(jumps, axis=0)], axis=0)
    return wrapped + shifts * box


def displacements(
    trajectories: np.ndarray, initial: np.ndarray, remove_centre_of_mass: bool = True
) -> np.ndarray:
    """Displacements from the common starting positions of iso-configurational trajectories.

    Args:
        trajectories: [R, T, N, 3] unwrapped positions (LJ lengths).
        initial: [N, 3] positions at time 0, in the same unwrapped frame
            (the positions every trajectory started from).
        remove_centre_of_mass: subtract, for each replica and frame, the
            centre-of-mass displacement (the mean over particles: all masses
            are equal), so that a drift of the whole system does not count
            as motion.

    Returns:
        [R, T, N, 3] float64 displacements r_i(t) - r_i(0) (LJ lengths).
    """
    trajectories = np.asarray(trajectories, dtype=np.float64)
    initial = np.asarray(initial, dtype=np.float64)
    if trajectories.ndim != 4 or trajectories.shape[-2:] != initial.shape or initial.shape[-1:] != (3,):
        raise ValueError(
            f"trajectories {trajectories.shape} must be [R, T, N, 3] with initial {initial.shape} = [N, 3]"
        )
    delta = trajectories - initial
    if remove_centre_of_mass:
        delta -= delta.mean(axis=-2, keepdims=True)
    return delta


def propensity(displacements: np.ndarray) -> np.ndarray:
    """Bapst et al.'s propensity: the mean over replicas of the displacement norm.

    Args:
        displacements: [R, T, N, 3] (LJ lengths), e.g. from `displacements`.

    Returns:
        [T, N] float64, mean over r of |Δr_i^(r)(t)| (LJ lengths).
    """
    return np.linalg.norm(_check_displacements(displacements), axis=-1).mean(axis=0)


def mean_squared_displacement(displacements: np.ndarray) -> np.ndarray:
    """Per-particle iso-configurational mean squared displacement.

    Args:
        displacements: [R, T, N, 3] (LJ lengths).

    Returns:
        [T, N] float64, mean over r of |Δr_i^(r)(t)|² (LJ lengths squared).
    """
    delta = _check_displacements(displacements)
    return np.einsum("rtnk,rtnk->tn", delta, delta) / delta.shape[0]


def propensity_halves(displacements: np.ndarray) -> np.ndarray:
    """The propensity of each half of the replicas, for split-half reliability (the noise ceiling).

    Args:
        displacements: [R, T, N, 3] (LJ lengths), R >= 2.

    Returns:
        [2, T, N] float64: `propensity` over the first and over the second half of the replicas
        (``np.array_split``: for odd R the first half holds one replica more).
    """
    delta = _check_displacements(displacements)
    if delta.shape[0] < 2:
        raise ValueError("split halves need at least 2 replicas")
    return np.stack([propensity(half) for half in np.array_split(delta, 2)])


def iso_configurational_targets(displacements: np.ndarray) -> dict[str, np.ndarray]:
    """The per-particle targets of a dataset configuration from its replicas' displacements.

    Args:
        displacements: [R, T, N, 3] (LJ lengths), R >= 2, e.g. from `displacements`.

    Returns:
        ``propensity`` [T, N], ``msd`` [T, N] and ``propensity_halves`` [2, T, N], float64
        (see `propensity`, `mean_squared_displacement`, `propensity_halves`).
    """
    return {
        "propensity": propensity(displacements),
        "msd": mean_squared_displacement(displacements),
        "propensity_halves": propensity_halves(displacements),
    }


def self_intermediate_scattering(displacements: np.ndarray, q: float, mask: np.ndarray) -> np.ndarray:
    """Isotropic self-intermediate scattering function F_s(q, t) of a subset of particles.

    The orientational average of exp(i q·Δr) over all directions of q is
    sin(q |Δr|) / (q |Δr|), which is 1 at Δr = 0.

    Args:
        displacements: [R, T, N, 3] (LJ lengths).
        q: wave number |q| (1 / LJ length), e.g. 7.25 near the first peak of
            the KA structure factor at density 1.2.
        mask: [N] bool, the particles to average over (e.g. types == 0 for A).

    Returns:
        [T] float64, mean over replicas and masked particles of sin(q|Δr|) / (q|Δr|).
    """
    delta = _check_displacements(displacements)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != delta.shape[2:3] or not mask.any():
        raise ValueError(f"mask must be a bool array of shape [N] = [{delta.shape[2]}] selecting at least one particle")
    qr = q * np.linalg.norm(delta[:, :, mask], axis=-1)  # [R, T, M]
    return np.sinc(qr / np.pi).mean(axis=(0, 2))  # numpy's sinc(x) = sin(pi x) / (pi x)


def relaxation_time(times: np.ndarray, fs: np.ndarray, threshold: float = float(np.exp(-1.0))) -> float:
    """The time at which a decaying F_s(t) first drops to `threshold` (τ_α for 1/e).

    Takes the first time point k with fs[k] <= threshold and interpolates
    linearly in (log t, F_s) between points k - 1 and k.

    Args:
        times: [T] positive, strictly increasing times (LJ units).
        fs: [T] F_s at those times.
        threshold: the level defining the relaxation time (default 1/e).

    Returns:
        The relaxation time (LJ units), or NaN when it cannot be bracketed:
        F_s stays above `threshold` at every time point (the runs are too
        short), or is already at or below it at the first time point (no
        earlier point to interpolate from in log t).
    """
    times = np.asarray(times, dtype=np.float64)
    fs = np.asarray(fs, dtype=np.float64)
    if times.ndim != 1 or times.shape != fs.shape:
        raise ValueError(f"times {times.shape} and fs {fs.shape} must be 1-D of equal length")
    if np.any(times <= 0) or np.any(np.diff(times) <= 0):
        raise ValueError("times must be positive and strictly increasing")
    below = np.flatnonzero(fs <= threshold)
    if below.size == 0 or below[0] == 0:
        return float("nan")
    k = int(below[0])
    if fs[k] == threshold:
        return float(times[k])
    fraction = (fs[k - 1] - threshold) / (fs[k - 1] - fs[k])
    log_t = np.log(times[k - 1]) + fraction * (np.log(times[k]) - np.log(times[k - 1]))
    return float(np.exp(log_t))


def _check_displacements(displacements: np.ndarray) -> np.ndarray:
    delta = np.asarray(displacements, dtype=np.float64)
    if delta.ndim != 4 or delta.shape[-1] != 3 or delta.shape[0] < 1:
        raise ValueError(f"displacements must have shape [R, T, N, 3] with R >= 1, got {delta.shape}")
    return delta
