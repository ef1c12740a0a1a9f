"""The PCL22 rotation-equivariant propensity model (Pezzicoli, Charpiat & Landes 2022/2024).

Pipeline (nequip/MACE style; irreps are declared once, in :class:`EquivariantConfig`):

    types (+ potential energy, + displacement d from the inherent state) --NodeEmbedding-->
        ``C x 0e`` (``+ C x 1o`` from d)
    edge vectors --SphericalHarmonics--> ``Y(r̂)`` (once per forward, shared by all layers;
        so are its Clebsch-Gordan couplings and, on CPUs, the edges grouped by node, for the
        fused tensor product: SharedEdges)
    edge lengths --RadialEmbedding--> Bessel basis × polynomial cutoff
    n_layers × InteractionBlock --> ``C x 0e + C x 1o + ... + C x l_max``, last layer ``C x 0e``
        (all of them with readout_norms)
    l = 0 channels (+ norms of the l > 0 channels: readout_norms; last layer, or all layers
    concatenated) --MLP decoder--> ``[N, n_timescales]``

Units: lengths in LJ units (σ_AA), energies in LJ units (ε_AA).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from e3nn import o3
from torch import nn
from torch_geometric.data import Data

from equiglass.data.graphs import DEFAULT_CUTOFF, edge_vectors
from equiglass.nn.convolution import (
    TENSOR_PRODUCTS,
    FusedConvolution,
    InteractionBlock,
    SharedEdges,
    SphericalCouplings,
    TensorProductKind,
)
from equiglass.nn.embedding import NodeEmbedding
from equiglass.nn.invariants import invariants
from equiglass.nn.radial import RadialEmbedding

#: Largest ``l_max``: the highest order of e3nn's spherical harmonics.
MAX_L_MAX = 12


@dataclass(frozen=True)
class EquivariantConfig:
    """Hyper-parameters of :class:`EquivariantPropensityModel`.

    The defaults give 51,018 trainable parameters (PCL22 report about 50k).

    Attributes:
        n_timescales: T, number of propensity timescales predicted at once.
        n_types: number of particle species (KA: 2).
        l_max: largest angular order of the spherical harmonics and of the hidden
            features. 0 gives the invariant ablation (distances only) with the same code.
        channels: multiplicity of every irrep of the hidden features (see :attr:`hidden_irreps`).
        n_layers: number of interaction blocks.
        num_basis: number of Bessel functions of the edge length.
        cutoff: radius of the convolution (LJ units); the graph must be built with at
            least this cutoff. Edges longer than it contribute exactly nothing.
        cutoff_p: exponent of the polynomial cutoff envelope.
        radial_hidden: hidden layer sizes of the per-layer MLP that maps the radial
            embedding to tensor-product weights.
        avg_num_neighbours: fixed normaliser of the neighbour sum (KA at density 1.2 and
            r_c = 2.0: about 40).
        use_potential_energy: feed the standardised per-particle potential energy as an
            extra input scalar (``data.potential_energy`` is then required).
        use_is_displacement: feed every particle's displacement ``d`` from its inherent state
            (``data.is_displacement`` is then required): ``|d|`` as an input scalar and, for
            ``l_max >= 1``, ``d`` itself as ``channels`` input vectors of the first layer.
        decoder_hidden: hidden layer sizes of the invariant decoder MLP (SiLU).
        readout_all_layers: decode the ``l = 0`` channels of every layer, concatenated,
            instead of those of the last layer only.
        readout_norms: decode, beside the ``l = 0`` channels, the norm of every ``l > 0``
            channel (:func:`~equiglass.nn.invariants.invariants`; the last layer then keeps its
            ``l > 0`` outputs). These are invariants of a particle's *own* equivariant features,
            such as the magnitude of a force-like ``l = 1`` sum over its neighbours or a
            bond-orientational q_l, which the convolutions cannot form: they are linear in the
            centre's own features (its neighbours' enter through the tensor product). Default
            (None): on wherever there are ``l > 0`` channels (``l_max >= 1``), the training recipe.
        type_heads: one output head per particle type: the decoder's last layer gives
            ``n_types x n_timescales`` outputs and each particle reads those of its own type,
            so that a loss on several species does not ask one head to fit both (default:
            one head for every type).
        parity: True (default): O(3) irreps, ``l``-th order features have parity ``(-1)^l``
            (``0e + 1o + 2e + ...``), so predictions are invariant under rotations *and*
            reflections. This is an exact symmetry of the target: the KA Hamiltonian and
            the Maxwell-Boltzmann momenta of the iso-configurational ensemble are
            reflection-invariant, so a mirrored configuration has the same propensities.
            False: SO(3) only ("SE(3)" as in the title of PCL22 v1): the edge direction is
            treated as a pseudovector, all irreps are even, every Clebsch-Gordan path
            ``l1 ⊗ l2 -> l3`` is allowed (cross products included), predictions are
            rotation-invariant but can tell a configuration from its mirror image.
        batch_norm: :class:`e3nn.nn.BatchNorm` in every block (see
            :class:`~equiglass.nn.convolution.InteractionBlock` for why).
        tensor_product: implementation of the convolutions' tensor products, ``"fused"``
            (default, fastest on CPU), ``"e3nn"`` (the plain e3nn module) or ``"cuequivariance"``
            (NVIDIA's cuEquivariance, for GPUs; optional package); same parameters, same
            outputs to float rounding (see :data:`~equiglass.nn.convolution.TENSOR_PRODUCTS`).
    """

    n_timescales: int = 10
    n_types: int = 2
    l_max: int = 2
    channels: int = 16
    n_layers: int = 5
    num_basis: int = 8
    cutoff: float = DEFAULT_CUTOFF
    cutoff_p: int = 6
    radial_hidden: tuple[int, ...] = (32,)
    avg_num_neighbours: float = 40.0
    use_potential_energy: bool = False
    use_is_displacement: bool = False
    decoder_hidden: tuple[int, ...] = (64, 64)
    readout_all_layers: bool = False
    readout_norms: bool | None = None
    type_heads: bool = False
    parity: bool = True
    batch_norm: bool = True
    tensor_product: TensorProductKind = "fused"

    def __post_init__(self) -> None:
        positive = {
            "n_timescales": self.n_timescales,
            "n_types": self.n_types,
            "channels": self.channels,
            "n_layers": self.n_layers,
            "num_basis": self.num_basis,
            "cutoff": self.cutoff,
            "cutoff_p": self.cutoff_p,
            "avg_num_neighbours": self.avg_num_neighbours,
        }
        bad = {name: value for name, value in positive.items() if not value > 0}
        if bad:
            raise ValueError(f"EquivariantConfig: these must be positive: {bad}")
        if self.l_max < 0:
            raise ValueError(f"EquivariantConfig: l_max must be >= 0, got {self.l_max}")
        if self.l_max > MAX_L_MAX:
            raise ValueError(f"EquivariantConfig: l_max must be at most {MAX_L_MAX} (e3nn's largest "
                             f"spherical harmonics), got {self.l_max}")
        if self.tensor_product not in TENSOR_PRODUCTS:
            raise ValueError(f"EquivariantConfig: tensor_product must be one of {list(TENSOR_PRODUCTS)}, got {self.tensor_product!r}")
        if self.readout_norms is None:
            object.__setattr__(self, "readout_norms", self.l_max > 0)
        object.__setattr__(self, "radial_hidden", tuple(int(h) for h in self.radial_hidden))
        object.__setattr__(self, "decoder_hidden", tuple(int(h) for h in self.decoder_hidden))

    def _parity(self, l: int) -> int:
        """Parity of the order-``l`` irreps: ``(-1)^l`` (O(3)) or ``+1`` for all (SO(3) only)."""
        return (-1) ** l if self.parity else 1

    @property
    def irreps_sh(self) -> o3.Irreps:
        """Spherical harmonics of the edge direction: ``1x0e + 1x1o + 1x2e`` (l_max = 2, parity)."""
        return o3.Irreps([(1, (l, self._parity(l))) for l in range(self.l_max + 1)])

    @property
    def hidden_irreps(self) -> o3.Irreps:
        """Features of the inner layers: ``16x0e + 16x1o + 16x2e`` (defaults)."""
        return o3.Irreps([(self.channels, (l, self._parity(l))) for l in range(self.l_max + 1)])

    @property
    def layer_irreps(self) -> list[o3.Irreps]:
        """Output irreps of each layer: :attr:`hidden_irreps`, and ``channels x 0e`` for the last
        unless ``readout_norms`` (only its scalars are decoded, so its ``l > 0`` outputs would be
        unused parameters)."""
        last = self.hidden_irreps if self.readout_norms else o3.Irreps(f"{self.channels}x0e")
        return [self.hidden_irreps] * (self.n_layers - 1) + [last]

    @property
    def decoded_irreps(self) -> list[o3.Irreps]:
        """Irreps of the layers the decoder reads: every layer (``readout_all_layers``) or the last."""
        return self.layer_irreps if self.readout_all_layers else self.layer_irreps[-1:]


class EquivariantPropensityModel(nn.Module):
    """Rotation-equivariant GNN predicting every particle's propensity at every timescale at once.

    See the module docstring for the pipeline and :class:`EquivariantConfig` for the
    hyper-parameters. The layers' features are equivariant (``l > 0`` channels rotate with
    the Wigner D matrices of :attr:`EquivariantConfig.layer_irreps`); the predictions are
    invariant under rotations (of positions, lattice and ``is_displacement`` together), translations,
    periodic images and particle permutations.

    Input: a PyG ``Data`` / ``Batch`` following :mod:`equiglass.data.graphs`: ``pos [N, 3]``,
    ``types [N]`` (long), ``box [B, 3]`` sides or ``[B, 3, 3]`` cells, ``edge_index [2, E]``
    (neighbour j, centre i), ``edge_shift [E, 3]``, ``batch [N]`` (absent for one graph),
    ``potential_energy [N]`` when ``config.use_potential_energy`` and ``is_displacement [N, 3]``
    when ``config.use_is_displacement``. The model computes in
    the dtype of its parameters. For float64 work, build it while the default dtype is
    float64: e3nn computes its Clebsch-Gordan buffers in the default dtype at construction,
    so ``.double()`` on a model built in float32 keeps coefficients accurate to ~1e-7 only.
    """

    def __init__(self, config: EquivariantConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or EquivariantConfig()
        scalars = o3.Irreps(f"{config.channels}x0e")
        vectors = o3.Irreps([(config.channels, (1, config._parity(1)))]) if config.l_max >= 1 else None
        self.embedding = NodeEmbedding(config.n_types, scalars, config.use_potential_energy, config.use_is_displacement,
                                       vectors if config.use_is_displacement else None)
        self.spherical_harmonics = o3.SphericalHarmonics(
            config.irreps_sh, normalize=True, normalization="component", irreps_in="1o" if config.parity else "1e"
        )
        self.radial_embedding = RadialEmbedding(config.cutoff, config.num_basis, config.cutoff_p)

        blocks = []
        irreps_in = self.embedding.irreps_out
        for irreps_out in config.layer_irreps:
            blocks.append(
                InteractionBlock(
                    irreps_in,
                    irreps_out,
                    config.irreps_sh,
                    config.num_basis,
                    config.radial_hidden,
                    config.avg_num_neighbours,
                    config.batch_norm,
                    config.tensor_product,
                )
            )
            irreps_in = irreps_out
        self.blocks = nn.ModuleList(blocks)
        fused = [block.convolution for block in blocks if isinstance(block.convolution, FusedConvolution)]
        self.spherical_couplings = (
            SphericalCouplings(config.irreps_sh, set().union(*(conv.triples for conv in fused))) if fused else None
        )

        n_decoded = sum(irreps.num_irreps if config.readout_norms else config.channels for irreps in config.decoded_irreps)
        n_heads = config.n_types if config.type_heads else 1
        sizes = [n_decoded, *config.decoder_hidden, n_heads * config.n_timescales]
        layers: list[nn.Module] = []
        for size_in, size_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(size_in, size_out), nn.SiLU()]
        self.decoder = nn.Sequential(*layers[:-1])

    def node_features(self, data: Data) -> list[torch.Tensor]:
        """Equivariant node features after every interaction block.

        Under :func:`torch.autocast` (mixed-precision training) only the convolutions' edge-wise
        work runs in the lower precision (see :class:`~equiglass.nn.convolution.EquivariantConvolution`):
        e3nn's linear maps do not support autocast, and the node features, normalisation and
        neighbour sums stay in the parameters' dtype.

        Returns:
            ``n_layers`` tensors, the k-th ``[N, config.layer_irreps[k].dim]`` with irreps
            ``config.layer_irreps[k]`` (e3nn layout, ``l = 0`` channels first).
        """
        device_type = data.pos.device.type
        edge_precision = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
        with torch.autocast(device_type, enabled=False):
            dtype = next(self.parameters()).dtype
            vectors = edge_vectors(data.pos.to(dtype), data.edge_index, data.edge_shift, data.box, data.batch)
            edge_sh = self.spherical_harmonics(vectors)
            edge_radial = self.radial_embedding(vectors.norm(dim=-1))
            energy = data.potential_energy if self.config.use_potential_energy and "potential_energy" in data else None
            edges = None
            if self.spherical_couplings is not None:
                edges = SharedEdges.of(self.spherical_couplings, edge_sh, data.edge_index, data.pos.shape[0])
            displacement = data.is_displacement if self.config.use_is_displacement and "is_displacement" in data else None
            x = self.embedding(data.types, energy, displacement)
            features = []
            for block in self.blocks:
                x = block(x, data.edge_index, edge_sh, edge_radial, edges, edge_precision)
                features.append(x)
        return features

    def forward(self, data: Data) -> torch.Tensor:
        """Propensities ``[N, n_timescales]`` of every particle of ``data`` (with ``type_heads``, each
        from the head of its type)."""
        config = self.config
        features = self.node_features(data)
        decoded = features if config.readout_all_layers else features[-1:]
        if config.readout_norms:
            inputs = [invariants(x, irreps) for x, irreps in zip(decoded, config.decoded_irreps)]
        else:
            inputs = [x[:, :config.channels] for x in decoded]
        out = self.decoder(torch.cat(inputs, dim=-1))
        n_timescales = config.n_timescales
        if not config.type_heads:
            return out
        heads = out.view(-1, config.n_types, n_timescales)  # [N, n_types, T]
        return heads.gather(1, data.types.view(-1, 1, 1).expand(-1, 1, n_timescales)).squeeze(1)

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
