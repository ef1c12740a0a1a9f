"""Rotation invariants of equivariant node features: the scalars as they are, the norms of the rest."""

from __future__ import annotations

import torch
from e3nn import o3


def invariants(features: torch.Tensor, irreps: o3.Irreps) -> torch.Tensor:
    """Every ``l = 0`` channel as it is and the norm of every ``l > 0`` channel (over its
    ``2l + 1`` components): for the first layer, a radially weighted ``|Σ_j Y_lm(r̂_ij)|``, the
    form of a bond-orientational order q_l (and, for ``l = 1``, of a pair-force sum).

    Args:
        features: ``[N, irreps.dim]`` in e3nn layout.
        irreps: their irreps.

    Returns:
        ``[N, irreps.num_irreps]``, in the order of ``irreps``.
    """
    columns = []
    for (multiplicity, irrep), part in zip(irreps, irreps.slices()):
        block = features[:, part].reshape(-1, multiplicity, irrep.dim)
        columns.append(block[:, :, 0] if irrep.l == 0 else torch.linalg.vector_norm(block, dim=-1))
    return torch.cat(columns, dim=1)
