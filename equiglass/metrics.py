"""Pearson correlation between predicted and measured propensities.

Two conventions exist in the literature and give different numbers at long times:

* **per configuration** (:data:`PER_CONFIGURATION`; Bapst et al. 2020, PCL22, the GlassBench
  tables): Pearson over the selected particles of one configuration, then mean ± std over
  configurations (:func:`pearson_per_timescale` for each configuration, then :func:`summarise`);
* **pooled** (:data:`POOLED`): Pearson over the selected particles of all configurations at
  once (:func:`pooled_pearson_per_timescale`); higher at long times, where the spread of
  mean mobility between configurations adds to the correlation.

Every function says which one it computes; equiglass reports per-configuration values
unless a number is labelled pooled. Correlations are computed in float64.

**Undefined values.** The Pearson correlation of a constant vector (or of fewer than two
particles) is undefined: these functions return NaN for it rather than 0 or an error, and
:func:`summarise` propagates NaN, so an undefined configuration is never silently averaged away.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: Label of numbers averaged over configurations of per-configuration correlations.
PER_CONFIGURATION = "per-configuration"
#: Label of numbers correlated over the particles of all configurations pooled.
POOLED = "pooled"


def pearson_per_timescale(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Pearson correlation at every timescale over the particles selected by ``mask``.

    The one Pearson correlation of equiglass: evaluation, training validation, the ridge
    model's choice of α and :func:`pooled_pearson_per_timescale` all compute it here.

    Args:
        prediction: [N, T] predicted propensities.
        target: [N, T] measured propensities.
        mask: [N] bool, the particles to include (e.g. ``types == 0`` for A); None: all.

    Returns:
        [T] float64 correlations (on the device of ``prediction``); NaN where the prediction
        or the target is constant over the selected particles, or fewer than two are selected.
    """
    if prediction.shape != target.shape or prediction.ndim != 2:
        raise ValueError(f"prediction {list(prediction.shape)} and target {list(target.shape)} must both be [N, T]")
    if mask is not None and mask.shape != prediction.shape[:1]:
        raise ValueError(f"mask must have shape [{prediction.shape[0]}], got {list(mask.shape)}")
    x = prediction.detach().to(torch.float64)
    y = target.detach().to(device=x.device, dtype=torch.float64)
    if mask is not None:
        mask = mask.to(device=x.device, dtype=torch.bool)
        x, y = x[mask], y[mask]
    if x.shape[0] < 2:
        return torch.full(x.shape[1:], float("nan"), dtype=torch.float64, device=x.device)
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    denominator = torch.sqrt((x * x).sum(dim=0) * (y * y).sum(dim=0))
    correlation = (x * y).sum(dim=0) / denominator
    return torch.where(denominator > 0, correlation, torch.full_like(correlation, float("nan")))


def pearson_within_types(
    prediction: torch.Tensor, target: torch.Tensor, types: torch.Tensor, species: Sequence[int],
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """[T] float64 :func:`pearson_per_timescale` over the particles of each of ``species`` (and of
    ``mask``) on its own, averaged over the species: the score of one configuration whose loss
    covers several species, as :mod:`equiglass.analysis.evaluate` reports each of them. A
    correlation over the species together would also reward the offset between their mean
    mobilities (B moves further than A), which no per-type Pearson sees.

    Args:
        prediction: [N, T] predicted propensities of one configuration.
        target: [N, T] measured propensities of the same particles.
        types: [N] int species of the particles.
        species: the species to score.
        mask: [N] bool further selection (e.g. particles with a target); None: all.
    """
    chosen = torch.ones_like(types, dtype=torch.bool) if mask is None else mask.to(device=types.device, dtype=torch.bool)
    return torch.stack([pearson_per_timescale(prediction, target, chosen & (types == code)) for code in species]).mean(dim=0)


def summarise(per_configuration: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-configuration convention: ``[C, T]`` correlations -> ``(mean [T], std [T])`` over configurations.

    The std is the spread between configurations (population std, 0 for one configuration),
    not an error of the mean. A NaN (undefined) correlation makes that timescale's mean and
    std NaN.
    """
    values = torch.as_tensor(per_configuration, dtype=torch.float64)
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError(f"per_configuration must be [C, T] with C >= 1, got {list(values.shape)}")
    return values.mean(dim=0), values.std(dim=0, correction=0)


def pooled_pearson_per_timescale(
    predictions: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Pooled convention: ``[T]`` Pearson over the selected particles of all configurations together.

    Args:
        predictions: one ``[N_c, T]`` tensor per configuration.
        targets: one ``[N_c, T]`` tensor per configuration.
        masks: one ``[N_c]`` bool tensor per configuration; None: every particle.
    """
    if len(predictions) != len(targets) or (masks is not None and len(masks) != len(predictions)):
        raise ValueError("predictions, targets and masks must list the same configurations")
    mask = None if masks is None else torch.cat(list(masks))
    return pearson_per_timescale(torch.cat(list(predictions)), torch.cat(list(targets)), mask)
