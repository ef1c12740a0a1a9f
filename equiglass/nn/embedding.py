"""Initial node features: particle type, optionally the per-particle potential energy and the
displacement from the inherent state."""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn


class NodeEmbedding(nn.Module):
    """One-hot particle type (optionally the standardised potential energy and the displacement
    ``d`` from the inherent state) -> ``channels x 0e`` (``+ channels x 1o`` with ``d``'s direction).

    The input scalars ``[one_hot(type), (e - mean) / std, |d| / scale]`` go through a bias-free
    :class:`e3nn.o3.Linear`; the one-hot part gives every type its own learned vector, which
    also acts as the bias of the other terms. With ``vector_irreps``, ``d / scale`` (one ``l = 1``
    vector) goes through a second one: every vector channel is a learned multiple of ``d``, so the
    first convolution can couple the particle's displacement to the directions of its bonds.
    ``energy_mean``, ``energy_std`` and, with ``d``, ``displacement_scale`` (the root mean square
    of ``|d|``) are buffers (saved in the state dict); set them from the training data with
    :meth:`set_energy_statistics` and :meth:`set_displacement_scale` before training. They
    default to 0, 1 and 1.

    Args:
        n_types: number of particle species (types are ``0 .. n_types - 1``).
        irreps_out: the scalar output irreps (e.g. ``"16x0e"``).
        use_potential_energy: whether :meth:`forward` takes a per-particle energy.
        use_is_displacement: whether :meth:`forward` takes the displacement from the inherent state.
        vector_irreps: irreps of the vector outputs made from it (e.g. ``"16x1o"``; ``1e`` for a
            model without parity); None: its norm only (a model of scalars, ``l_max = 0``).

    Shapes: ``types [N]`` (long), ``potential_energy [N]`` (LJ energy units), ``is_displacement
    [N, 3]`` (LJ lengths) -> ``[N, irreps_out.dim]``, :attr:`irreps_out` = scalars + vectors.
    """

    def __init__(self, n_types: int, irreps_out: o3.Irreps | str, use_potential_energy: bool = False,
                 use_is_displacement: bool = False, vector_irreps: o3.Irreps | str | None = None) -> None:
        super().__init__()
        scalars = o3.Irreps(irreps_out)
        if scalars.lmax != 0:
            raise ValueError(f"NodeEmbedding's irreps_out are scalars only, got {scalars}")
        vectors = o3.Irreps(vector_irreps or "")
        if vectors and (not use_is_displacement or {ir.l for _, ir in vectors} != {1}):
            raise ValueError(f"vector_irreps must be l = 1 irreps, made from use_is_displacement; got {vectors}")
        self.n_types = int(n_types)
        self.use_potential_energy = bool(use_potential_energy)
        self.use_is_displacement = bool(use_is_displacement)
        n_scalars = self.n_types + self.use_potential_energy + self.use_is_displacement
        self.irreps_in = o3.Irreps(f"{n_scalars}x0e")
        self.irreps_out = scalars + vectors
        self.linear = o3.Linear(self.irreps_in, scalars)
        # one input vector, d itself, of the vectors' parity (1o, or 1e without parity)
        self.vector_linear = o3.Linear(o3.Irreps([(1, vectors[0].ir)]), vectors) if vectors else None
        self.register_buffer("energy_mean", torch.zeros(()))
        self.register_buffer("energy_std", torch.ones(()))
        if self.use_is_displacement:  # only then: the state dicts of models without it keep their keys
            self.register_buffer("displacement_scale", torch.ones(()))

    @torch.no_grad()
    def set_energy_statistics(self, mean: float, std: float) -> None:
        """Store the mean and standard deviation used to standardise the potential energy."""
        if not std > 0:
            raise ValueError(f"energy std must be positive, got {std}")
        self.energy_mean.fill_(float(mean))
        self.energy_std.fill_(float(std))

    @torch.no_grad()
    def set_displacement_scale(self, scale: float) -> None:
        """Store the length (the training data's root mean square ``|d|``) the displacement is divided by."""
        if not scale > 0:
            raise ValueError(f"displacement scale must be positive, got {scale}")
        self.displacement_scale.fill_(float(scale))

    def forward(self, types: torch.Tensor, potential_energy: torch.Tensor | None = None,
                is_displacement: torch.Tensor | None = None) -> torch.Tensor:
        """``types [N]``, ``potential_energy [N]`` or None, ``is_displacement [N, 3]`` or None -> ``[N, irreps_out.dim]``."""
        dtype = self.energy_mean.dtype
        scalars = [nn.functional.one_hot(types, self.n_types).to(dtype)]
        if self.use_potential_energy:
            if potential_energy is None:
                raise ValueError(
                    "the model was built with use_potential_energy=True but the graph has no potential_energy"
                )
            scalars.append(((potential_energy.to(dtype) - self.energy_mean) / self.energy_std).unsqueeze(-1))
        if not self.use_is_displacement:
            return self.linear(torch.cat(scalars, dim=-1))
        if is_displacement is None:
            raise ValueError("the model was built with use_is_displacement=True but the graph has no is_displacement")
        displacement = is_displacement.to(dtype) / self.displacement_scale
        scalars.append(displacement.norm(dim=-1, keepdim=True))
        out = self.linear(torch.cat(scalars, dim=-1))
        if self.vector_linear is None:
            return out
        return torch.cat([out, self.vector_linear(displacement)], dim=-1)
