"""Small geometric helpers shared by the readers, the graphs and the checks: periodic
wrapping, minimum-image displacements and particle-type selection.

Positions are in box units (LJ σ); ``box`` holds the side lengths of an orthorhombic box.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def wrap(positions: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Positions wrapped into ``[0, box)``.

    Args:
        positions: [N, 3] float, box units.
        box: [3] float, the side lengths.

    Returns:
        [N, 3] float, every coordinate in ``[0, box)`` (``np.mod`` can round a tiny negative
        up to exactly ``box``; that case is mapped to 0).
    """
    wrapped = np.mod(positions, box)
    return np.where(wrapped >= box, wrapped - box, wrapped)


def minimum_image(vectors: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Each vector replaced by its periodic image nearest the origin.

    Args:
        vectors: [..., 3] float, box units (differences of positions).
        box: [3] float, the side lengths.

    Returns:
        [..., 3] float, every coordinate in ``[-box/2, box/2]``.
    """
    return vectors - box * np.round(vectors / box)


def particles_of_types(types: torch.Tensor, particle_types: Sequence[int]) -> torch.Tensor:
    """[N] bool: the particles whose type is one of ``particle_types``.

    Args:
        types: [N] int, 0 = A, 1 = B.
        particle_types: the species to select, e.g. ``(0,)`` for A.
    """
    return torch.isin(types, torch.as_tensor(tuple(particle_types), device=types.device))
