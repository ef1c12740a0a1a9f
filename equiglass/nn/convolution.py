"""The equivariant point convolution and the interaction block built on it.

Edge convention (see :mod:`equiglass.graphs`): ``edge_index[0] = j`` is the neighbour
(source), ``edge_index[1] = i`` the centre (target), and the edge vector points from
``i`` to ``j``. Messages flow ``j -> i`` and are summed at ``i``.
"""

from __future__ import annotations

import torch
from e3nn import o3
from e3nn.nn import BatchNorm, FullyConnectedNet, Gate
from torch import nn


def _uvu_instructions(
    irreps_in: o3.Irreps, irreps_sh: o3.Irreps, irreps_out: o3.Irreps
) -> tuple[o3.Irreps, list[tuple[int, int, int, str, bool]]]:
    """Paths of a channel-wise ("uvu") tensor product ``irreps_in ⊗ irreps_sh``, as in nequip/MACE.

    Every input irrep is coupled with every spherical harmonic to every product irrep
    present (at any multiplicity) in ``irreps_out``; each path keeps the input
    multiplicity. Returns the sorted intermediate irreps and the matching instructions.
    """
    wanted = {ir for _, ir in irreps_out}
    irreps_mid = []
    instructions = []
    for i, (mul, ir_in) in enumerate(irreps_in):
        for j, (_, ir_sh) in enumerate(irreps_sh):
            for ir_out in ir_in * ir_sh:
                if ir_out in wanted:
                    instructions.append((i, j, len(irreps_mid), "uvu", True))
                    irreps_mid.append((mul, ir_out))
    irreps_mid, permutation, _ = o3.Irreps(irreps_mid).sort()
    instructions = [(i, j, permutation[k], mode, train) for i, j, k, mode, train in instructions]
    return irreps_mid, instructions


class EquivariantConvolution(nn.Module):
    r"""Point convolution, :math:`h_i = W_2 \frac{1}{\bar n}\sum_j R(r_{ij}) (W_1 x_j \otimes Y(\hat r_{ij}))`.

    ``W_1`` and ``W_2`` are :class:`e3nn.o3.Linear`; ``⊗`` is a channel-wise ("uvu")
    :class:`e3nn.o3.TensorProduct` with ``shared_weights=False`` whose per-edge, per-path
    weights ``R`` come from a bias-free :class:`e3nn.nn.FullyConnectedNet` of the radial
    embedding (so they vanish where the embedding does, at the cutoff). The sum over
    neighbours (``index_add``) is divided by the fixed ``avg_num_neighbours`` :math:`\bar n`
    (not by the actual neighbour count, which would jump when a neighbour crosses the cutoff).
    Dividing by :math:`\bar n` rather than :math:`\sqrt{\bar n}`: in a dense liquid the
    messages of the ~40 neighbours are strongly correlated (the ``l = 0`` part is a local
    density), so their sum grows like :math:`\bar n`.

    Args:
        irreps_in: node features in.
        irreps_sh: spherical harmonics of the edge direction.
        irreps_out: node features out.
        num_basis: size of the radial embedding.
        radial_hidden: hidden layer sizes of the radial MLP.
        avg_num_neighbours: the normaliser :math:`\bar n`.

    Shapes: ``x [N, irreps_in.dim]``, ``edge_index [2, E]``, ``edge_sh [E, irreps_sh.dim]``,
    ``edge_radial [E, num_basis]`` -> ``[N, irreps_out.dim]``.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps | str,
        irreps_sh: o3.Irreps | str,
        irreps_out: o3.Irreps | str,
        num_basis: int,
        radial_hidden: tuple[int, ...],
        avg_num_neighbours: float,
    ) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_sh = o3.Irreps(irreps_sh)
        self.irreps_out = o3.Irreps(irreps_out)
        if avg_num_neighbours <= 0:
            raise ValueError(f"avg_num_neighbours must be positive, got {avg_num_neighbours}")
        self.avg_num_neighbours = float(avg_num_neighbours)

        irreps_mid, instructions = _uvu_instructions(self.irreps_in, self.irreps_sh, self.irreps_out)
        missing = {ir for _, ir in self.irreps_out} - {ir for _, ir in irreps_mid}
        if missing:
            raise ValueError(
                f"no tensor-product path {self.irreps_in} x {self.irreps_sh} "
                f"reaches {sorted(missing)} of {self.irreps_out}"
            )
        self.linear_in = o3.Linear(self.irreps_in, self.irreps_in)
        self.tensor_product = o3.TensorProduct(
            self.irreps_in,
            self.irreps_sh,
            irreps_mid,
            instructions,
            shared_weights=False,
            internal_weights=False,
        )
        self.radial = FullyConnectedNet(
            [num_basis, *radial_hidden, self.tensor_product.weight_numel], nn.functional.silu
        )
        self.linear_out = o3.Linear(irreps_mid.simplify(), self.irreps_out)

    def forward(
        self, x: torch.Tensor, edge_index: torch.Tensor, edge_sh: torch.Tensor, edge_radial: torch.Tensor
    ) -> torch.Tensor:
        """``x [N, irreps_in.dim]`` -> ``[N, irreps_out.dim]``; see the class docstring."""
        source, target = edge_index
        x = self.linear_in(x)
        messages = self.tensor_product(x[source], edge_sh, self.radial(edge_radial))
        summed = messages.new_zeros(x.shape[0], messages.shape[1]).index_add(0, target, messages)
        return self.linear_out(summed / self.avg_num_neighbours)


class InteractionBlock(nn.Module):
    """One layer: convolution + linear self-interaction -> normalisation -> gate -> residual.

    ``h = Gate(Norm(Conv(x) + Linear(x)))``, and ``x + h`` when ``irreps_in == irreps_out``.

    The gate (:class:`e3nn.nn.Gate`) applies SiLU to the ``l = 0`` channels of ``irreps_out``
    and multiplies each ``l > 0`` channel by the sigmoid of an extra scalar produced by the
    same convolution, so the pre-activation irreps are ``irreps_out`` plus one ``0e`` gate per
    ``l > 0`` channel.

    Normalisation: :class:`e3nn.nn.BatchNorm` on the pre-activations (scalars centred and
    scaled per channel, ``l > 0`` channels scaled by their mean squared norm), not a per-particle
    (layer) norm. A per-particle norm would divide each particle's features by their own
    magnitude and so erase what we want to learn from: the contrast between particles in local
    density (``l = 0``) and in bond-orientational order (the norms of the ``l > 0`` channels).
    Batch statistics keep those contrasts. In training mode the statistics couple the particles
    of a batch (with one ~4k-particle configuration per batch they are stable); in eval mode
    the running statistics make it a fixed per-channel affine map, so each prediction depends
    only on its own neighbourhood. ``batch_norm=False`` replaces it with the identity.

    Args:
        irreps_in: node features in.
        irreps_out: node features out; sorted, ``l = 0`` channels first.
        irreps_sh, num_basis, radial_hidden, avg_num_neighbours: see :class:`EquivariantConvolution`.
        batch_norm: use :class:`e3nn.nn.BatchNorm` (True) or nothing.

    Shapes: ``x [N, irreps_in.dim]``, ``edge_index [2, E]``, ``edge_sh [E, irreps_sh.dim]``,
    ``edge_radial [E, num_basis]`` -> ``[N, irreps_out.dim]``.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps | str,
        irreps_out: o3.Irreps | str,
        irreps_sh: o3.Irreps | str,
        num_basis: int,
        radial_hidden: tuple[int, ...],
        avg_num_neighbours: float,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)
        scalars = o3.Irreps([(mul, ir) for mul, ir in self.irreps_out if ir.l == 0])
        gated = o3.Irreps([(mul, ir) for mul, ir in self.irreps_out if ir.l > 0])
        if scalars + gated != self.irreps_out:
            raise ValueError(f"irreps_out must be sorted with the scalars first, got {self.irreps_out}")
        self.gate = Gate(
            scalars,
            [nn.functional.silu] * len(scalars),
            o3.Irreps(f"{gated.num_irreps}x0e") if gated else o3.Irreps(""),
            [torch.sigmoid] if gated else [],
            gated,
        )
        irreps_pre = self.gate.irreps_in
        self.convolution = EquivariantConvolution(
            self.irreps_in, irreps_sh, irreps_pre, num_basis, radial_hidden, avg_num_neighbours
        )
        self.self_interaction = o3.Linear(self.irreps_in, irreps_pre)
        self.norm = BatchNorm(irreps_pre) if batch_norm else nn.Identity()
        self.residual = self.irreps_in == self.irreps_out

    def forward(
        self, x: torch.Tensor, edge_index: torch.Tensor, edge_sh: torch.Tensor, edge_radial: torch.Tensor
    ) -> torch.Tensor:
        """``x [N, irreps_in.dim]`` -> ``[N, irreps_out.dim]``; see the class docstring."""
        h = self.convolution(x, edge_index, edge_sh, edge_radial) + self.self_interaction(x)
        h = self.gate(self.norm(h))
        return x + h if self.residual else h
