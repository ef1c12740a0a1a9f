"""Encodings of the edge length: a Bessel basis, a smooth cutoff envelope, and their product.

Lengths are in LJ units (σ_AA = 1). Every module maps edge lengths ``r`` of shape
``[E]`` to ``[E, ...]``; they are invariant scalars, so they are irreps ``0e``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class BesselBasis(nn.Module):
    r"""Radial Bessel basis of nequip, :math:`B_n(r) = \frac{2}{r_c}\,\frac{\sin(n\pi r/r_c)}{r}`, ``n = 1..num_basis``.

    Written with ``torch.sinc`` (:math:`\frac{\sin(n\pi r/r_c)}{r} = \frac{n\pi}{r_c}\operatorname{sinc}(n r/r_c)`),
    so it is finite and smooth down to and including ``r = 0`` (limit :math:`2 n\pi / r_c^2`).
    The frequencies are fixed (a buffer), not trained.

    Args:
        cutoff: :math:`r_c`, LJ length units.
        num_basis: number of basis functions.

    Shapes: ``r [E]`` -> ``[E, num_basis]``.
    """

    def __init__(self, cutoff: float, num_basis: int = 8) -> None:
        super().__init__()
        if cutoff <= 0 or num_basis < 1:
            raise ValueError(f"need cutoff > 0 and num_basis >= 1, got {cutoff=}, {num_basis=}")
        self.cutoff = float(cutoff)
        self.num_basis = int(num_basis)
        self.register_buffer("frequencies", torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype()))

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """``r [E]`` -> ``[E, num_basis]``."""
        n = self.frequencies.to(r.dtype)
        x = r.unsqueeze(-1) / self.cutoff
        return (2.0 * math.pi / self.cutoff**2) * n * torch.sinc(n * x)

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff}, num_basis={self.num_basis}"


class PolynomialCutoff(nn.Module):
    r"""Smooth envelope of nequip (Klicpera et al. 2020) with exponent ``p`` (default 6).

    .. math::
        f(x) = 1 - \tfrac{(p+1)(p+2)}{2} x^p + p(p+2) x^{p+1} - \tfrac{p(p+1)}{2} x^{p+2},
        \quad x = r / r_c,

    for ``r < r_c`` and exactly 0 beyond. ``f(0) = 1``; ``f``, ``f'`` and ``f''`` vanish at
    ``r_c``, so a neighbour crossing the cutoff changes nothing discontinuously.

    Shapes: ``r [E]`` -> ``[E]``.
    """

    def __init__(self, cutoff: float, p: int = 6) -> None:
        super().__init__()
        if cutoff <= 0 or p < 1:
            raise ValueError(f"need cutoff > 0 and p >= 1, got {cutoff=}, {p=}")
        self.cutoff = float(cutoff)
        self.p = int(p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """``r [E]`` -> ``[E]``, in [0, 1]."""
        p = self.p
        x = r / self.cutoff
        envelope = (
            1.0
            - 0.5 * (p + 1) * (p + 2) * x.pow(p)
            + p * (p + 2) * x.pow(p + 1)
            - 0.5 * p * (p + 1) * x.pow(p + 2)
        )
        return envelope * (x < 1.0)

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff}, p={self.p}"


class RadialEmbedding(nn.Module):
    """Edge-length features fed to the convolution weights: ``BesselBasis(r) * PolynomialCutoff(r)``.

    Every feature, and therefore every message weight computed from it by a bias-free
    MLP, goes smoothly to 0 at the cutoff.

    Shapes: ``r [E]`` -> ``[E, num_basis]``.
    """

    def __init__(self, cutoff: float, num_basis: int = 8, p: int = 6) -> None:
        super().__init__()
        self.basis = BesselBasis(cutoff, num_basis)
        self.envelope = PolynomialCutoff(cutoff, p)
        self.num_basis = self.basis.num_basis

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """``r [E]`` -> ``[E, num_basis]``."""
        return self.basis(r) * self.envelope(r).unsqueeze(-1)
