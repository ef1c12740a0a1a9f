"""The equivariant point convolution and the interaction block built on it.

Edge convention (see :mod:`equiglass.data.graphs`): ``edge_index[0] = j`` is the neighbour
(source), ``edge_index[1] = i`` the centre (target), and the edge vector points from
``i`` to ``j``. Messages flow ``j -> i`` and are summed at ``i``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from e3nn import o3
from e3nn.nn import BatchNorm, FullyConnectedNet, Gate
from torch import nn

from equiglass.nn.cuequivariance import CuEquivarianceTensorProduct
from equiglass.nn.message_sum import DTYPES, Neighbourhoods, PathTable, kernel_available, message_sum, to_channels_first, to_channels_last


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


#: A tensor-product path's coupling of the spherical harmonics: ``(l1, l2, l3)``.
Triple = tuple[int, int, int]
#: Names of the implementations of the convolution's tensor product (see :data:`TENSOR_PRODUCTS`).
TensorProductKind = Literal["fused", "e3nn", "cuequivariance"]


class SphericalCouplings(nn.Module):
    r"""Per-edge Clebsch-Gordan couplings of the spherical harmonics, for the fused tensor product.

    For each path ``(l1, l2, l3)``, :math:`C_e[i, k] = \sum_j W^{l_1 l_2 l_3}_{ijk} Y^{l_2}_j(\hat r_e)`
    (``W`` e3nn's :func:`~e3nn.o3.wigner_3j`), so that the uvu tensor product of a feature
    ``x[u, i]`` of order ``l1`` with ``Y^{l2}`` is the small matrix product ``x @ C_e``. They
    depend on the edges only: the model computes them once per forward and every layer
    uses them. The Wigner 3j tables are float64 buffers (not saved in the state dict),
    cast to the dtype of the harmonics at use.

    Args:
        irreps_sh: the spherical harmonics (one copy of each order).
        triples: the ``(l1, l2, l3)`` paths wanted.

    Shapes: ``edge_sh [E, irreps_sh.dim]`` -> ``{(l1, l2, l3): [E, 2 l1 + 1, 2 l3 + 1]}``.
    """

    def __init__(self, irreps_sh: o3.Irreps | str, triples: set[Triple] | list[Triple]) -> None:
        super().__init__()
        self.irreps_sh = o3.Irreps(irreps_sh)
        orders = [ir.l for _, ir in self.irreps_sh]
        if any(mul != 1 for mul, _ in self.irreps_sh) or len(set(orders)) != len(orders):
            raise ValueError(f"irreps_sh must hold one copy of each order, got {self.irreps_sh}")
        self.sh_slices = {ir.l: s for (_, ir), s in zip(self.irreps_sh, self.irreps_sh.slices())}
        self.triples = sorted(set(triples))
        for l1, l2, l3 in self.triples:
            self.register_buffer(_w3j_name((l1, l2, l3)), o3.wigner_3j(l1, l2, l3, dtype=torch.float64), persistent=False)

    def forward(self, edge_sh: torch.Tensor) -> dict[Triple, torch.Tensor]:
        """``edge_sh [E, irreps_sh.dim]`` -> the coupling matrices of every path (see the class docstring)."""
        out = {}
        for triple in self.triples:
            w3j = getattr(self, _w3j_name(triple)).to(edge_sh.dtype)
            out[triple] = torch.einsum("ijk,ej->eik", w3j, edge_sh[:, self.sh_slices[triple[1]]])
        return out


def _w3j_name(triple: Triple) -> str:
    return "w3j_{}_{}_{}".format(*triple)


@dataclass(frozen=True)
class SharedEdges:
    """What the fused convolutions compute from the edges once per forward and every layer shares.

    ``couplings``: :class:`SphericalCouplings` of the edges. ``neighbourhoods``: the edges
    grouped by centre for the compiled CPU kernel
    (:class:`~equiglass.nn.message_sum.Neighbourhoods`), None where it is not used.
    """

    couplings: dict[Triple, torch.Tensor]
    neighbourhoods: Neighbourhoods | None

    @classmethod
    def of(cls, spherical_couplings: SphericalCouplings, edge_sh: torch.Tensor, edge_index: torch.Tensor, n_nodes: int) -> SharedEdges:
        """``edge_sh [E, irreps_sh.dim]``, ``edge_index [2, E]`` of a graph of ``n_nodes`` -> the shared terms.

        The kernel runs in eager mode on CPUs; under :func:`torch.compile` the PyTorch operators
        are traced instead (the compiler fuses them itself, and the kernel is opaque to it)."""
        on_kernel = not torch.compiler.is_compiling() and edge_sh.device.type == "cpu" and kernel_available()
        return cls(spherical_couplings(edge_sh), Neighbourhoods.of(edge_index, n_nodes) if on_kernel else None)


def _edge_autocast(device_type: str, edge_precision: torch.dtype | None) -> torch.autocast:
    """:func:`torch.autocast` to ``edge_precision``, or autocast disabled when it is None."""
    return torch.autocast(device_type, dtype=edge_precision, enabled=edge_precision is not None)


class EquivariantConvolution(nn.Module):
    r"""Point convolution, :math:`h_i = W_2 \frac{1}{\bar n}\sum_j R(r_{ij}) (W_1 x_j \otimes Y(\hat r_{ij}))`.

    ``W_1`` and ``W_2`` are :class:`e3nn.o3.Linear`; ``⊗`` is a channel-wise ("uvu")
    :class:`e3nn.o3.TensorProduct` with ``shared_weights=False`` whose per-edge, per-path
    weights ``R`` come from a bias-free :class:`e3nn.nn.FullyConnectedNet` of the radial
    embedding (so they vanish where the embedding does, at the cutoff). The sum over
    neighbours is divided by the fixed ``avg_num_neighbours`` :math:`\bar n`
    (not by the actual neighbour count, which would jump when a neighbour crosses the cutoff).
    Dividing by :math:`\bar n` rather than :math:`\sqrt{\bar n}`: in a dense liquid the
    messages of the ~40 neighbours are strongly correlated (the ``l = 0`` part is a local
    density), so their sum grows like :math:`\bar n`.

    This base class holds what every implementation of ``⊗`` shares (the linear maps, the
    radial MLP and the e3nn module, which defines the paths, their weights' layout and the
    output layout, and holds no weights of its own); a subclass per implementation computes
    the message sum (:meth:`message_sum`). All have the same parameters, so the same
    checkpoints, and equal outputs to float rounding (tests/nn/test_nn_equivariant.py). Build one
    by name with :func:`build_convolution`; the implementations are :data:`TENSOR_PRODUCTS`.

    Args:
        irreps_in: node features in.
        irreps_sh: spherical harmonics of the edge direction.
        irreps_out: node features out.
        num_basis: size of the radial embedding.
        radial_hidden: hidden layer sizes of the radial MLP.
        avg_num_neighbours: the normaliser :math:`\bar n`.

    Shapes: ``x [N, irreps_in.dim]``, ``edge_index [2, E]``, ``edge_sh [E, irreps_sh.dim]``,
    ``edge_radial [E, num_basis]``, optional ``edges`` (:class:`SharedEdges`)
    -> ``[N, irreps_out.dim]``.
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
        self.build_backend()

    def build_backend(self) -> None:
        """Build what the implementation needs beyond the shared parts (called last by
        ``__init__``; e3nn's module, shared by all, needs nothing more)."""

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        edge_sh: torch.Tensor,
        edge_radial: torch.Tensor,
        edges: SharedEdges | None = None,
        edge_precision: torch.dtype | None = None,
    ) -> torch.Tensor:
        """``x [N, irreps_in.dim]`` -> ``[N, irreps_out.dim]``; see the class docstring.

        ``edge_precision`` (mixed precision, e.g. ``torch.bfloat16``): run the edge-wise work
        under :func:`torch.autocast` to that dtype: the radial MLP, and the fused tensor product's
        matrix products (e3nn's and cuEquivariance's modules do not support autocast and keep
        the dtype of ``x``). Messages are summed, and node features kept, in the dtype of ``x``.
        """
        x = self.linear_in(x)
        with _edge_autocast(x.device.type, edge_precision):
            weights = self.radial(edge_radial)
        summed = self.message_sum(x, edge_index, edge_sh, weights, edges, edge_precision)
        return self.linear_out(summed / self.avg_num_neighbours)

    def message_sum(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        edge_sh: torch.Tensor,
        weights: torch.Tensor,
        edges: SharedEdges | None,
        edge_precision: torch.dtype | None,
    ) -> torch.Tensor:
        """Sum over each node's incoming edges of :attr:`tensor_product` ``(x[source], edge_sh, weights)``.

        ``x [N, irreps_in.dim]``, ``edge_index [2, E]``, ``edge_sh [E, irreps_sh.dim]``,
        ``weights [E, weight_numel]`` (e3nn instruction order; in ``edge_precision`` under
        mixed precision) -> ``[N, irreps_mid.dim]`` in the dtype of ``x`` (the layout of the
        e3nn module's output). ``edges`` and ``edge_precision``: see :class:`FusedConvolution`.
        """
        raise NotImplementedError


class E3nnConvolution(EquivariantConvolution):
    """:class:`EquivariantConvolution` whose tensor product is the :class:`e3nn.o3.TensorProduct` module itself.

    Messages ``[E, irreps_mid.dim]`` are computed per edge, then summed at the centres
    (``index_add``), in the dtype of ``x`` (no autocast).
    """

    def message_sum(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        edge_sh: torch.Tensor,
        weights: torch.Tensor,
        edges: SharedEdges | None,
        edge_precision: torch.dtype | None,
    ) -> torch.Tensor:
        """See :meth:`EquivariantConvolution.message_sum`."""
        source, target = edge_index
        messages = self.tensor_product(x[source], edge_sh, weights.to(x.dtype))
        return messages.new_zeros(x.shape[0], messages.shape[1]).index_add(0, target, messages)


class FusedConvolution(EquivariantConvolution):
    """:class:`EquivariantConvolution` with a fused tensor product (the default, faster: see benchmarks/README.md).

    The per-edge couplings ``C_e`` of :class:`SphericalCouplings` (computed once per forward
    and shared by all layers when the model passes ``edges``, :class:`SharedEdges`; their
    triples a superset of :attr:`triples`) turn each path into a small matrix product
    ``(w_e[u] x_j[u, :]) @ C_e``. It uses the instructions, path weights and output layout of
    the e3nn module. Two implementations of the neighbour sum, equal to float rounding:

    * on CPUs, the compiled kernel of :mod:`equiglass.nn.message_sum` (one pass over each
      centre's edges, no per-edge message stored), in the dtype of ``x``
      (``edge_precision`` then applies to the radial MLP only);
    * elsewhere (GPUs, under :func:`torch.compile`, or where no C compiler works), PyTorch operators: one batched matrix
      product per path, summed at the nodes path by path, so the ``[E, irreps_mid.dim]``
      messages are never concatenated; under mixed precision (``edge_precision``) the
      couplings and products run under autocast and the node sums in the dtype of ``x``.
    """

    def build_backend(self) -> None:
        """The couplings and path layout of the fused products."""
        irreps_mid = self.tensor_product.irreps_out
        # per path: its input irrep, (l1, l2, l3), output slot and path weight
        order = lambda irreps, index: irreps[index].ir.l  # noqa: E731
        self.paths = [
            (
                ins.i_in1,
                (order(self.irreps_in, ins.i_in1), order(self.irreps_sh, ins.i_in2), order(irreps_mid, ins.i_out)),
                ins.i_out,
                ins.path_weight,
            )
            for ins in self.tensor_product.instructions
        ]
        if sorted(path[2] for path in self.paths) != list(range(len(irreps_mid))):
            raise AssertionError("every tensor-product path must have its own output slot")
        self.path_sizes = [self.irreps_in[ins.i_in1].mul for ins in self.tensor_product.instructions]
        self.input_shapes = [(mul, ir.dim) for mul, ir in self.irreps_in]  # plain ints: no e3nn objects in forward
        self.output_shapes = [(mul, ir.dim) for mul, ir in irreps_mid]
        self.triples = sorted({path[1] for path in self.paths})
        self.spherical_couplings = SphericalCouplings(self.irreps_sh, self.triples)
        self.path_table = PathTable.build(
            self.input_shapes,
            [(i_in, self.triples.index(triple), i_out, weight) for i_in, triple, i_out, weight in self.paths],
            self.output_shapes,
        )

    def message_sum(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        edge_sh: torch.Tensor,
        weights: torch.Tensor,
        edges: SharedEdges | None,
        edge_precision: torch.dtype | None,
    ) -> torch.Tensor:
        """See :meth:`EquivariantConvolution.message_sum`; ``edges`` computed here when None."""
        if edges is None:
            edges = SharedEdges.of(self.spherical_couplings, edge_sh, edge_index, x.shape[0])
        if edges.neighbourhoods is not None and x.dtype in DTYPES:
            summed = message_sum(
                to_channels_last(x, self.input_shapes),
                weights.to(x.dtype),
                [edges.couplings[triple].to(x.dtype) for triple in self.triples],
                self.path_table,
                edges.neighbourhoods,
            )
            return to_channels_first(summed, self.output_shapes)
        with _edge_autocast(x.device.type, edge_precision):
            source, target = edge_index
            n_edges, n_nodes = source.shape[0], x.shape[0]
            sources = x[source].split([mul * dim for mul, dim in self.input_shapes], dim=1)
            features = [part.reshape(n_edges, mul, dim) for part, (mul, dim) in zip(sources, self.input_shapes)]
            sums: list[torch.Tensor] = [x] * len(self.paths)
            for (i_in, triple, i_out, path_weight), weight in zip(self.paths, weights.split(self.path_sizes, dim=1)):
                feature, coupling = features[i_in], edges.couplings[triple]
                if coupling.shape[2] < coupling.shape[1]:
                    message = torch.bmm(feature, coupling) * weight.unsqueeze(-1)
                else:
                    message = torch.bmm(feature * weight.unsqueeze(-1), coupling)
                message = message.reshape(n_edges, -1).to(x.dtype)  # summed in x's precision under autocast too
                sums[i_out] = path_weight * message.new_zeros(n_nodes, message.shape[1]).index_add_(0, target, message)
            return torch.cat(sums, dim=1)


class CuEquivarianceConvolution(EquivariantConvolution):
    """:class:`EquivariantConvolution` whose message sum is NVIDIA's cuEquivariance, for GPUs.

    Optional package; see :class:`~equiglass.nn.cuequivariance.CuEquivarianceTensorProduct`
    (the gather of the neighbours' features and the sum at the centres fused into one call),
    in the dtype of ``x`` (no autocast).
    """

    def build_backend(self) -> None:
        """NVIDIA's module for this convolution's tensor product."""
        self.cuequivariance = CuEquivarianceTensorProduct(self.tensor_product)

    def message_sum(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        edge_sh: torch.Tensor,
        weights: torch.Tensor,
        edges: SharedEdges | None,
        edge_precision: torch.dtype | None,
    ) -> torch.Tensor:
        """See :meth:`EquivariantConvolution.message_sum`."""
        return self.cuequivariance(x, edge_index, edge_sh, weights.to(x.dtype))


#: The implementations of the convolution's tensor product, by the name of ``[model] tensor_product``.
TENSOR_PRODUCTS: dict[str, type[EquivariantConvolution]] = {
    "fused": FusedConvolution,
    "e3nn": E3nnConvolution,
    "cuequivariance": CuEquivarianceConvolution,
}


def build_convolution(
    tensor_product: TensorProductKind,
    irreps_in: o3.Irreps | str,
    irreps_sh: o3.Irreps | str,
    irreps_out: o3.Irreps | str,
    num_basis: int,
    radial_hidden: tuple[int, ...],
    avg_num_neighbours: float,
) -> EquivariantConvolution:
    """The convolution of :data:`TENSOR_PRODUCTS` named ``tensor_product``; other arguments: see :class:`EquivariantConvolution`."""
    if tensor_product not in TENSOR_PRODUCTS:
        raise ValueError(f"tensor_product must be one of {list(TENSOR_PRODUCTS)}, got {tensor_product!r}")
    return TENSOR_PRODUCTS[tensor_product](irreps_in, irreps_sh, irreps_out, num_basis, radial_hidden, avg_num_neighbours)


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
        tensor_product: the implementation, a name of :data:`TENSOR_PRODUCTS`.
        batch_norm: use :class:`e3nn.nn.BatchNorm` (True) or nothing.

    Shapes: ``x [N, irreps_in.dim]``, ``edge_index [2, E]``, ``edge_sh [E, irreps_sh.dim]``,
    ``edge_radial [E, num_basis]``, optional ``edges`` and ``edge_precision`` (see
    :class:`EquivariantConvolution`) -> ``[N, irreps_out.dim]``.
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
        tensor_product: TensorProductKind = "fused",
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
        self.convolution = build_convolution(
            tensor_product, self.irreps_in, irreps_sh, irreps_pre, num_basis, radial_hidden, avg_num_neighbours
        )
        self.self_interaction = o3.Linear(self.irreps_in, irreps_pre)
        self.norm = BatchNorm(irreps_pre) if batch_norm else nn.Identity()
        self.residual = self.irreps_in == self.irreps_out

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        edge_sh: torch.Tensor,
        edge_radial: torch.Tensor,
        edges: SharedEdges | None = None,
        edge_precision: torch.dtype | None = None,
    ) -> torch.Tensor:
        """``x [N, irreps_in.dim]`` -> ``[N, irreps_out.dim]``; see the class docstring."""
        h = self.convolution(x, edge_index, edge_sh, edge_radial, edges, edge_precision) + self.self_interaction(x)
        h = self.gate(self.norm(h))
        return x + h if self.residual else h
