"""The invariant-baseline graph network of Bapst et al. (2020), in PyTorch.

Port of ``glassy_dynamics/graph_model.py`` (google-deepmind/deepmind-research, TF1 +
graph_nets + sonnet), extended to predict every timescale at once:

    one-hot type --node MLP-->  x0 [N, W]        edge vector (3 numbers) --edge MLP--> e0 [E, W]
    n_steps × (one graph-network block, the *same* weights at every step):
        x_in = [x, x0], e_in = [e, e0]                                  (skip connection)
        e <- φ_e([e_in, x_in[sender], x_in[receiver]])                  (edge update)
        x <- φ_v([x_in, Σ_{edges e -> i} e])                            (node update, sum of incoming)
    x --decoder MLP (last layer linear)--> [N, n_timescales]

Every MLP has hidden sizes ``mlp_hidden`` (64, 64) with ReLU after every layer except the
decoder's last. Edge features are Cartesian vectors, so the model is *not* rotation
invariant by construction; Bapst et al. train with random elements of the 48-element cube
group (:func:`cube_symmetry_augmentation`). It is invariant under translations,
periodic images and particle permutations.

Differences from the TensorFlow original, all deliberate:

* Node input: one-hot type ``[N, n_types]`` (the original feeds the type index as one float).
* Edge sign: our edge vector of ``j -> i`` (sender j, receiver i) is ``pos[j] - pos[i]``
  (sender minus receiver); the original stores receiver minus sender. The graphs are
  full (both directions) and the cube group contains the inversion, so this only relabels.
* Multi-head: the decoder outputs ``n_timescales`` numbers (one model for all timescales,
  as PCL22); ``BapstConfig(per_timescale_models=True)`` builds one independent network
  per timescale, as Bapst et al. trained.
* ``BapstConfig(normalization="instance")`` (not in the original, off by default) standardises
  the output of every encoder and block MLP over the particles (for edge MLPs: the edges) of
  each configuration, PyG ``InstanceNorm`` with a learnable scale and shift. Summed over ~40
  neighbours, the encoded edges give every particle nearly the same features (a few per cent
  of relative variation at initialisation), and the network starts as a constant predictor
  that takes Bapst et al.'s ~4e5 optimiser steps to leave; with the normalisation it learns
  in a few hundred, as the equivariant model (whose blocks normalise with e3nn ``BatchNorm``)
  does. It uses the statistics of the configuration itself in training and evaluation, so a
  prediction does not depend on the other graphs of a batch.
* The original's decoder also maps edges through an MLP whose output is discarded
  (8,320 parameters); it is not built here. With it, the original counts 70,721
  parameters, the "about 70k" of PCL22's review; ours has 62,465 for one output.

Units: lengths in LJ units (σ_AA).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch_geometric.data import Data
from torch_geometric.nn.norm import InstanceNorm

from equiglass.data.graphs import DEFAULT_CUTOFF, box_matrix, edge_vectors


@dataclass(frozen=True)
class BapstConfig:
    """Hyper-parameters of :class:`BapstGNN`.

    The defaults give 63,050 trainable parameters (62,465 for one timescale).

    Attributes:
        n_timescales: T, number of propensity timescales predicted.
        n_types: number of particle species (KA: 2).
        mlp_hidden: output sizes of every MLP's layers; the last is the latent width W
            of node and edge features. The decoder has these hidden layers plus a linear
            output layer.
        n_steps: number of message-passing steps (weights shared across steps, as in the
            original's ``n_recurrences``).
        cutoff: edges at distance ``>= cutoff`` (LJ units) are ignored, so a graph built
            with a larger cutoff gives the same result as one built with this cutoff.
        per_timescale_models: build ``n_timescales`` independent networks with one output
            each (Bapst et al.'s protocol) instead of one network with ``n_timescales``
            outputs.
        normalization: ``"none"`` (the original) or ``"instance"``: every encoder and block
            MLP output standardised per configuration (see the module docstring); adds
            2 × 64 parameters per normalised MLP.
        use_is_displacement: the node encoder also reads every particle's displacement from
            its inherent state (``data.is_displacement``, 3 Cartesian components like the edge
            vectors, so the cube augmentation turns it too).
    """

    n_timescales: int = 10
    n_types: int = 2
    mlp_hidden: tuple[int, ...] = (64, 64)
    n_steps: int = 7
    cutoff: float = DEFAULT_CUTOFF
    per_timescale_models: bool = False
    normalization: str = "none"
    use_is_displacement: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "mlp_hidden", tuple(int(h) for h in self.mlp_hidden))
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"BapstConfig: normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        positive = {"n_timescales": self.n_timescales, "n_types": self.n_types, "cutoff": self.cutoff}
        bad = {name: value for name, value in positive.items() if not value > 0}
        if bad or not self.mlp_hidden or min(self.mlp_hidden) <= 0 or self.n_steps < 0:
            raise ValueError(
                "BapstConfig: n_timescales, n_types, cutoff and every mlp_hidden size must be positive "
                f"and n_steps >= 0; got {self}"
            )

    @property
    def latent(self) -> int:
        """Width W of the node and edge features (the last hidden size)."""
        return self.mlp_hidden[-1]


#: Values of :attr:`BapstConfig.normalization`.
NORMALIZATIONS = ("none", "instance")


class ConfigurationNorm(nn.Module):
    """Standardise each feature over the rows of one configuration (PyG ``InstanceNorm``, affine).

    ``normalization="none"`` makes it the identity. Shapes: ``x [M, C]``, ``batch [M]``
    (the configuration of each row; None for one configuration) -> ``[M, C]``.
    """

    def __init__(self, channels: int, normalization: str) -> None:
        super().__init__()
        self.norm = InstanceNorm(channels, affine=True) if normalization == "instance" else None

    def forward(self, x: torch.Tensor, batch: torch.Tensor | None) -> torch.Tensor:
        """See the class docstring."""
        return x if self.norm is None else self.norm(x, batch)


def mlp(size_in: int, sizes: tuple[int, ...], activate_final: bool) -> nn.Sequential:
    """``Linear -> ReLU -> ... -> Linear [-> ReLU]`` mapping ``[..., size_in]`` to ``[..., sizes[-1]]``."""
    layers: list[nn.Module] = []
    for a, b in zip((size_in, *sizes[:-1]), sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*(layers if activate_final else layers[:-1]))


class GraphNetworkBlock(nn.Module):
    """A full graph-network block without globals (edge update, then node update).

    ``e' = φ_e([e, x[sender], x[receiver]])`` and ``x' = φ_v([x, Σ_{e: receiver = i} e'])``,
    with φ_e, φ_v MLPs ending in ReLU. The first layer of φ_e is one :class:`~torch.nn.Linear`
    on the concatenation, but it is evaluated as ``W_e e + (W_s x)[sender] + (W_r x)[receiver]``
    so that node projections are computed per node, not per edge (same parameters, same result).

    Args:
        node_size: width of the input node features.
        edge_size: width of the input edge features.
        sizes: layer sizes of both MLPs (the last is the output width of edges and nodes).
        normalization: see :attr:`BapstConfig.normalization`; applied to each MLP's output.
    """

    def __init__(self, node_size: int, edge_size: int, sizes: tuple[int, ...], normalization: str = "none") -> None:
        super().__init__()
        self.node_size, self.edge_size = node_size, edge_size
        self.edge_mlp = mlp(edge_size + 2 * node_size, sizes, activate_final=True)
        self.node_mlp = mlp(node_size + sizes[-1], sizes, activate_final=True)
        self.edge_norm = ConfigurationNorm(sizes[-1], normalization)
        self.node_norm = ConfigurationNorm(sizes[-1], normalization)

    def forward(
        self, x: torch.Tensor, e: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [N, node_size]``, ``e [E, edge_size]``, ``edge_index [2, E]`` (sender j, receiver i),
        ``batch [N]`` (None: one configuration) -> new ``x [N, W]``, new ``e [E, W]``."""
        sender, receiver = edge_index[0], edge_index[1]
        first, *rest = self.edge_mlp
        w_edge, w_sender, w_receiver = first.weight.split([self.edge_size, self.node_size, self.node_size], dim=1)
        hidden = (
            nn.functional.linear(e, w_edge, first.bias)
            + nn.functional.linear(x, w_sender)[sender]
            + nn.functional.linear(x, w_receiver)[receiver]
        )
        for layer in rest:
            hidden = layer(hidden)
        hidden = self.edge_norm(hidden, None if batch is None else batch[receiver])
        incoming = torch.zeros(x.shape[0], hidden.shape[1], dtype=hidden.dtype, device=hidden.device)
        incoming.index_add_(0, receiver, hidden)
        return self.node_norm(self.node_mlp(torch.cat([x, incoming], dim=-1)), batch), hidden


class BapstNetwork(nn.Module):
    """Encoder, ``n_steps`` shared graph-network steps with skip connections, decoder.

    Args:
        config: hyper-parameters (``n_timescales`` and ``per_timescale_models`` are not used).
        n_outputs: width of the decoder's linear output layer.

    Shapes: ``types [N]`` (long), ``vectors [E, 3]``, ``edge_index [2, E]``, ``batch [N]``
    (None: one configuration), ``displacement [N, 3]`` (with ``use_is_displacement``) -> ``[N, n_outputs]``.
    """

    def __init__(self, config: BapstConfig, n_outputs: int) -> None:
        super().__init__()
        self.n_types, self.n_steps = config.n_types, config.n_steps
        width = config.latent
        self.node_encoder = mlp(config.n_types + 3 * config.use_is_displacement, config.mlp_hidden, activate_final=True)
        self.edge_encoder = mlp(3, config.mlp_hidden, activate_final=True)
        self.node_encoder_norm = ConfigurationNorm(width, config.normalization)
        self.edge_encoder_norm = ConfigurationNorm(width, config.normalization)
        self.block = GraphNetworkBlock(2 * width, 2 * width, config.mlp_hidden, config.normalization)
        self.decoder = mlp(width, (*config.mlp_hidden, n_outputs), activate_final=False)

    def forward(
        self, types: torch.Tensor, vectors: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor | None = None,
        displacement: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """See the class docstring."""
        edge_batch = None if batch is None else batch[edge_index[1]]
        nodes = nn.functional.one_hot(types, self.n_types).to(vectors.dtype)
        if displacement is not None:
            nodes = torch.cat([nodes, displacement], dim=-1)
        x0 = self.node_encoder_norm(self.node_encoder(nodes), batch)
        e0 = self.edge_encoder_norm(self.edge_encoder(vectors), edge_batch)
        x, e = x0, e0
        for _ in range(self.n_steps):
            x, e = self.block(torch.cat([x, x0], dim=-1), torch.cat([e, e0], dim=-1), edge_index, batch)
        return self.decoder(x)


class BapstGNN(nn.Module):
    """Bapst et al.'s graph network, one propensity per particle per timescale.

    Input: a PyG ``Data`` / ``Batch`` following :mod:`equiglass.data.graphs`: ``pos [N, 3]``,
    ``types [N]`` (long), ``box [B, 3]`` sides or ``[B, 3, 3]`` cells (as
    :func:`cube_symmetry_augmentation` leaves them), ``edge_index [2, E]`` (neighbour j,
    centre i), ``edge_shift [E, 3]``, ``batch [N]`` (absent for one graph), and
    ``is_displacement [N, 3]`` with ``config.use_is_displacement``. Edges at distance
    ``>= config.cutoff`` are dropped. Computes in the dtype of the parameters.

    Output: ``[N, n_timescales]``.
    """

    def __init__(self, config: BapstConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or BapstConfig()
        if config.per_timescale_models:
            networks = [BapstNetwork(config, 1) for _ in range(config.n_timescales)]
        else:
            networks = [BapstNetwork(config, config.n_timescales)]
        self.networks = nn.ModuleList(networks)

    def forward(self, data: Data) -> torch.Tensor:
        """Propensities ``[N, n_timescales]`` of every particle of ``data``."""
        dtype = next(self.parameters()).dtype
        vectors = edge_vectors(data.pos.to(dtype), data.edge_index, data.edge_shift, data.box, data.batch)
        within = vectors.norm(dim=-1) < self.config.cutoff
        vectors, edge_index = vectors[within], data.edge_index[:, within]
        displacement = None
        if self.config.use_is_displacement:
            if "is_displacement" not in data:
                raise ValueError("the model was built with use_is_displacement=True but the graph has no is_displacement")
            displacement = data.is_displacement.to(dtype)
        return torch.cat([network(data.types, vectors, edge_index, data.batch, displacement) for network in self.networks],
                         dim=-1)

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def cube_symmetries() -> torch.Tensor:
    """The 48 orthogonal matrices of the cube group O_h (axis permutations × sign flips).

    Returns:
        ``[48, 3, 3]`` float32, entries in {-1, 0, 1}; element ``6 * s + p`` permutes the
        axes by the p-th permutation of ``(0, 1, 2)`` (lexicographic order) and then
        flips the signs of the axes whose bit is set in ``s``. Element 0 is the identity.
    """
    permutations = torch.tensor([[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])
    signs = 1.0 - 2.0 * ((torch.arange(8)[:, None] >> torch.arange(3)) & 1).float()  # [8, 3]
    eye = torch.eye(3)
    return (signs[:, None, :, None] * eye[permutations][None]).reshape(48, 3, 3)


def random_cube_symmetry(generator: torch.Generator | None = None, n: int = 1) -> torch.Tensor:
    """``n`` independent uniformly random elements of the cube group, ``[n, 3, 3]`` float32."""
    return cube_symmetries()[torch.randint(48, (n,), generator=generator)]


def cube_symmetry_augmentation(
    data: Data | torch.Tensor, generator: torch.Generator | None = None
) -> Data | torch.Tensor:
    """Apply a random cube symmetry R (Bapst et al.'s training augmentation), vectors ``v -> R v``.

    Given a graph (or batch), one independent R per graph rotates the positions *and* the
    lattice (``pos -> pos @ R.T``, ``box -> box_matrix(box) @ R.T``, a ``[B, 3, 3]`` cell),
    so every edge vector that :func:`~equiglass.data.graphs.edge_vectors` computes is mapped to
    ``R v``; the input is not modified (a shallow copy is returned, sharing edges and
    targets). Given a tensor of vectors ``[..., 3]``, one R is applied to all of them.

    Args:
        data: a ``Data`` / ``Batch`` with ``pos``, ``box`` (sides ``[B, 3]`` or cells
            ``[B, 3, 3]``) and ``batch`` for batches; or vectors ``[..., 3]``.
        generator: source of randomness; the same generator state gives the same result.

    Returns:
        The transformed copy of ``data`` (same type).
    """
    if isinstance(data, torch.Tensor):
        rotation = random_cube_symmetry(generator)[0].to(data)
        return data @ rotation.T
    cell = data.box if data.box.ndim == 3 else box_matrix(data.box)
    rotations = random_cube_symmetry(generator, cell.shape[0]).to(data.pos)
    node_rotation = (rotations[0] if data.batch is None else rotations[data.batch]).expand(data.pos.shape[0], 3, 3)
    out = copy.copy(data)
    out.pos = torch.einsum("nk,nlk->nl", data.pos, node_rotation)
    out.box = cell.to(data.pos) @ rotations.transpose(1, 2)
    if "is_displacement" in data:  # a vector of every particle: it turns with the positions
        out.is_displacement = torch.einsum("nk,nlk->nl", data.is_displacement, node_rotation)
    return out
