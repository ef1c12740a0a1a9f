"""Initial node features: particle type, optionally the per-particle potential energy."""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn


class NodeEmbedding(nn.Module):
    """One-hot particle type (and optionally the standardised potential energy) -> ``channels x 0e``.

    The input scalars ``[one_hot(type), (e - mean) / std]`` go through a bias-free
    :class:`e3nn.o3.Linear`; the one-hot part gives every type its own learned vector,
    which also acts as the bias of the energy term. ``energy_mean`` / ``energy_std`` are
    buffers (saved in the state dict); set them from the training data with
    :meth:`set_energy_statistics` before training. They default to 0 / 1.

    Args:
        n_types: number of particle species (types are ``0 .. n_types - 1``).
        irreps_out: output irreps, scalars only (e.g. ``"16x0e"``).
        use_potential_energy: whether :meth:`forward` takes a per-particle energy.

    Shapes: ``types [N]`` (long), ``potential_energy [N]`` (LJ energy units) -> ``[N, irreps_out.dim]``.
    """

    def __init__(self, n_types: int, irreps_out: o3.Irreps | str, use_potential_energy: bool = False) -> None:
        super().__init__()
        self.irreps_out = o3.Irreps(irreps_out)
        if self.irreps_out.lmax != 0:
            raise ValueError(f"NodeEmbedding produces scalars only, got irreps_out={self.irreps_out}")
        self.n_types = int(n_types)
        self.use_potential_energy = bool(use_potential_energy)
        self.irreps_in = o3.Irreps(f"{self.n_types + self.use_potential_energy}x0e")
        self.linear = o3.Linear(self.irreps_in, self.irreps_out)
        self.register_buffer("energy_mean", torch.zeros(()))
        self.register_buffer("energy_std", torch.ones(()))

    @torch.no_grad()
    def set_energy_statistics(self, mean: float, std: float) -> None:
        """Store the mean and standard deviation used to standardise the potential energy."""
        if not std > 0:
            raise ValueError(f"energy std must be positive, got {std}")
        self.energy_mean.fill_(float(mean))
        self.energy_std.fill_(float(std))

    def forward(self, types: torch.Tensor, potential_energy: torch.Tensor | None = None) -> torch.Tensor:
        """``types [N]``, ``potential_energy [N]`` or None -> ``[N, irreps_out.dim]``."""
        dtype = self.energy_mean.dtype
        scalars = nn.functional.one_hot(types, self.n_types).to(dtype)
        if self.use_potential_energy:
            if potential_energy is None:
                raise ValueError(
                    "the model was built with use_potential_energy=True but the graph has no potential_energy"
                )
            energy = (potential_energy.to(dtype) - self.energy_mean) / self.energy_std
            scalars = torch.cat([scalars, energy.unsqueeze(-1)], dim=-1)
        return self.linear(scalars)
