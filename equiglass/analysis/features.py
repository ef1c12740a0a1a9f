"""What the equivariant network's first layer encodes: its rotation-invariant features against
the classic structural descriptors (:mod:`equiglass.data.descriptors`).

The invariants of a layer's node features are its l = 0 channels and the norms of its l > 0
channels (:func:`~equiglass.nn.invariants.invariants`); for every descriptor, :func:`explained_variance` is the
out-of-sample R² of its linear regression on them, and :func:`family_summary` averages it over
the shells of one density or order.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from equiglass.nn.invariants import invariants

if TYPE_CHECKING:
    from torch_geometric.data import Data

    from equiglass.nn.equivariant import EquivariantPropensityModel


def first_layer_invariants(model: EquivariantPropensityModel, graphs: Sequence[Data]) -> list[torch.Tensor]:
    """The :func:`~equiglass.nn.invariants.invariants` of the first interaction block's node features, per graph.

    Returns:
        per graph ``[N, model.config.layer_irreps[0].num_irreps]`` float64.
    """
    irreps = model.config.layer_irreps[0]
    with torch.no_grad():
        return [invariants(model.node_features(data)[0], irreps).double() for data in graphs]


def explained_variance(
    features: Sequence[torch.Tensor], descriptors: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]
) -> np.ndarray:
    """R² of each descriptor's least-squares fit (with intercept) on the features, out of sample.

    Args:
        features: per configuration ``[N, F]`` float64.
        descriptors: per configuration ``[N, D]`` float64.
        masks: per configuration ``[N]`` bool, the particles used.

    The fit uses the first half of the configurations (rounded up) and is scored on the rest.

    Returns:
        ``[D]`` R² (1 - residual variance / variance on the scoring half); NaN for a constant descriptor.
    """
    half = math.ceil(len(features) / 2)

    def stack(part: slice) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([f[m] for f, m in zip(features[part], masks[part])])
        y = torch.cat([d[m] for d, m in zip(descriptors[part], masks[part])])
        return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1), y

    (x_fit, y_fit), (x_score, y_score) = stack(slice(0, half)), stack(slice(half, None))
    coefficients = torch.linalg.lstsq(x_fit, y_fit, driver="gelsd").solution
    residual = (y_score - x_score @ coefficients).var(dim=0)
    variance = y_score.var(dim=0)
    r2 = 1 - residual / variance
    return torch.where(variance > 1e-12 * y_score.abs().amax(dim=0).clamp_min(1e-300), r2, torch.nan).numpy()


def family_summary(analysis: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Mean R² (trained, untrained) per descriptor family: the name without its shell radius, e.g.
    ``rho_A(r=0.9)|L=0`` -> ``rho_A|L=0`` (every shell of one density or order, at one
    coarse-graining length); NaNs ignored.

    Args:
        analysis: ``descriptors`` (names), ``r2_trained`` and ``r2_untrained`` (one R² per name).

    Returns:
        family -> ``trained``, ``untrained`` (mean R²) and ``count`` (descriptors in the family).
    """
    families: dict[str, dict[str, list[float]]] = {}
    for name, trained, untrained in zip(analysis["descriptors"], analysis["r2_trained"], analysis["r2_untrained"]):
        entry = families.setdefault(re.sub(r"\(r=[^)]*\)", "", name), {"trained": [], "untrained": []})
        entry["trained"].append(trained)
        entry["untrained"].append(untrained)
    return {
        family: {key: float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
                 for key, values in entry.items()} | {"count": len(entry["trained"])}
        for family, entry in families.items()
    }
