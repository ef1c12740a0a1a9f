"""The noise ceiling of iso-configurational targets: the highest Pearson correlation any model can reach.

A propensity target is a mean over R iso-configurational trajectories, not the infinite-replica
expectation, so even a perfect model's Pearson correlation with it is below 1. The ceiling is the
Pearson correlation between the expectation and the R-replica mean, √reliability, where the
reliability is the fraction of the target's variance over particles that is not replica noise.
Two estimators, per configuration, per particle type, per time:

* **replica variance** (:func:`variance_reliability`; needs ``msd`` and R): particle i's
  displacement variance over replicas, unbiased, is s_i² = (msd_i − propensity_i²) R / (R − 1), the
  noise variance of its mean s_i² / R, and reliability = 1 − ⟨s_i² / R⟩_i / Var_i(propensity);
* **split halves** (:func:`split_half_reliability`; needs ``propensity_halves``, the means over the
  first and the second half of the replicas): r = Pearson(half 1, half 2), and by Spearman–Brown the
  reliability of the mean over both halves is 2r / (1 + r).

:func:`ceiling` takes √ of the reliability clipped at 0; :func:`dataset_ceiling` averages the
per-configuration ceilings over configurations, using split halves where a configuration stores
them and the replica variance otherwise. Where neither can be computed (no ``msd``, R unknown or
below 2) the ceiling is NaN: unknown, never guessed.

On ``data/demo`` (type A, R = 16) this gives 0.73, 0.92, 0.94, 0.93, 0.92, 0.90, 0.88, 0.84, 0.77,
0.64 at its ten times; the earlier reference values (0.75 ... 0.67) used s_i² without R / (R − 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from equiglass.data.format import Dataset
from equiglass.metrics import pearson_per_timescale

#: Particle species as stored in ``types``: 0 = A, 1 = B (the ceiling's first axis).
TYPE_CODES = (0, 1)
SPLIT_HALVES = "split halves (Spearman-Brown)"
REPLICA_VARIANCE = "replica variance"
UNKNOWN = "unknown (no propensity_halves, and msd or the number of replicas missing)"


def variance_reliability(
    propensity: np.ndarray, msd: np.ndarray, replicas: int, mask: np.ndarray | None = None
) -> np.ndarray:
    """Reliability of R-replica propensities from the per-particle variance over replicas.

    Args:
        propensity: [T, N] mean over the replicas of |displacement| (LJ lengths).
        msd: [T, N] mean over the same replicas of |displacement|² (LJ lengths squared).
        replicas: R, the number of replicas both means were taken over (at least 2).
        mask: [N] bool, the particles to use (one type of one configuration); None: all.

    Returns:
        [T] float64, 1 − ⟨s_i² / R⟩ / Var_i(propensity) with s_i² = (msd_i − propensity_i²) R / (R − 1)
        (rounding below 0 clipped) and Var_i unbiased over the particles (dimensionless, may be
        negative: see :func:`ceiling`); NaN where the propensity is
        constant over the particles or fewer than two are selected.
    """
    if replicas < 2:
        raise ValueError(f"a variance over replicas needs at least 2 replicas, got {replicas}")
    p, m = _selected(propensity, mask), _selected(msd, mask)
    if p.shape[1] < 2:
        return np.full(p.shape[0], np.nan)
    noise = (np.clip(m - p**2, 0, None) / (replicas - 1)).mean(axis=1)  # ⟨s_i² / R⟩
    spread = p.var(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(spread > 0, 1 - noise / spread, np.nan)


def _selected(values: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """[T, N] ``values`` as float64, restricted to the particles of ``mask`` ([N] bool; None: all)."""
    values = np.asarray(values, dtype=np.float64)
    return values if mask is None else values[:, np.asarray(mask, dtype=bool)]


def split_half_reliability(halves: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Reliability of the mean over both halves of the replicas, from their correlation (Spearman–Brown).

    Args:
        halves: [2, T, N] means of |displacement| over the first and the second half of the
            replicas (LJ lengths), as the dataset field ``propensity_halves``.
        mask: [N] bool, the particles to use; None: all.

    Returns:
        [T] float64, 2r / (1 + r) with r the Pearson correlation of the halves over the selected
        particles (dimensionless; NaN where r is undefined or r = −1).
    """
    if halves.ndim != 3 or halves.shape[0] != 2:
        raise ValueError(f"halves must be [2, T, N], got {list(halves.shape)}")
    first, second = (torch.from_numpy(np.ascontiguousarray(half.T)) for half in halves)
    r = pearson_per_timescale(first, second, None if mask is None else torch.from_numpy(np.asarray(mask, bool)))
    r = r.numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r > -1, 2 * r / (1 + r), np.nan)


def ceiling(reliability: np.ndarray) -> np.ndarray:
    """The noise ceiling √reliability, the reliability clipped at 0 first; NaN stays NaN (same shape)."""
    reliability = np.asarray(reliability, dtype=np.float64)
    return np.sqrt(np.where(np.isnan(reliability), np.nan, np.clip(reliability, 0, None)))


def configuration_ceiling(fields: Mapping[str, np.ndarray], replicas: int | None) -> tuple[np.ndarray, str]:
    """Ceiling of one configuration for each type of :data:`TYPE_CODES`, and the estimator used.

    Args:
        fields: a configuration's arrays (``types`` [N], ``propensity`` [T, N], and
            ``propensity_halves`` [2, T, N] or ``msd`` [T, N]).
        replicas: R, the number of replicas of the targets; None where unknown.

    Returns:
        ``(ceiling [2, T], method)``: split halves where ``propensity_halves`` is stored, else the
        replica variance where ``msd`` is stored and R ≥ 2, else NaN and :data:`UNKNOWN`.
    """
    masks = [fields["types"] == code for code in TYPE_CODES]
    if "propensity_halves" in fields:
        return ceiling(np.stack([split_half_reliability(fields["propensity_halves"], mask) for mask in masks])), SPLIT_HALVES
    if "msd" in fields and replicas is not None and replicas >= 2:
        reliabilities = [variance_reliability(fields["propensity"], fields["msd"], replicas, mask) for mask in masks]
        return ceiling(np.stack(reliabilities)), REPLICA_VARIANCE
    return np.full((len(TYPE_CODES), len(fields["times"])), np.nan), UNKNOWN


def replicas_per_configuration(manifest: Mapping[str, Any]) -> list[int | None]:
    """R of every configuration a manifest lists: the generator's ``protocol.replicas``, else the
    configuration entry's ``n_trajectories`` (converted Bapst et al. files), else None (unknown)."""
    protocol = manifest.get("protocol")
    replicas = protocol.get("replicas") if isinstance(protocol, Mapping) else None
    return [replicas if replicas is not None else entry.get("n_trajectories") for entry in manifest["configurations"]]


@dataclass(frozen=True)
class NoiseCeiling:
    """The noise ceiling of a dataset's targets over some of its configurations.

    Attributes:
        values: [2, T] mean over the configurations of the per-configuration ceiling, for type
            A (row 0) and B (row 1) (dimensionless); NaN where unknown for some configuration.
        method: the estimator(s) used, e.g. :data:`SPLIT_HALVES` or :data:`REPLICA_VARIANCE`.
        n_configurations: the number of configurations averaged over.
    """

    values: np.ndarray
    method: str
    n_configurations: int


def dataset_ceiling(dataset: Dataset, indices: Sequence[int] | np.ndarray | None = None) -> NoiseCeiling:
    """The noise ceiling of ``dataset``'s configurations ``indices`` (None: all), per type and time.

    Each configuration's ceiling comes from :func:`configuration_ceiling`; the mean over
    configurations propagates NaN, so an unknown ceiling is reported unknown, never averaged away.
    """
    chosen = range(len(dataset)) if indices is None else [int(i) for i in indices]
    replicas = replicas_per_configuration(dataset.manifest)
    results = [configuration_ceiling(dataset.read(i), replicas[i]) for i in chosen]
    methods = list(dict.fromkeys(method for _, method in results))
    return NoiseCeiling(np.mean([values for values, _ in results], axis=0), " and ".join(methods), len(results))
