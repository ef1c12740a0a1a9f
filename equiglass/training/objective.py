"""The training objective: target normalisation, the loss, and which particles count.

Targets are normalised per timescale with the mean and standard deviation of the training
split (loss particles only), stored in the checkpoints; with ``[train] target_normalisation =
"type"`` per timescale and particle type, so that each species of the loss has unit variance
at every time (at low temperature B's propensity spreads twice as wide as A's, and would
otherwise weigh about as much in the loss as A's four times more particles). The loss is the
mean squared error of the normalised propensity over every timescale and every particle of
``[data] particle_types`` (A and B by default) whose target exists. With ``[train] time_weights`` it is
the weighted mean, each timescale's terms weighted by its weight: normalised targets have unit
variance at every time, so equal weights ask as much of the noisiest, longest times as of the
best-determined ones; weights equal to the targets' reliability (the squared noise ceiling)
ask of each time in proportion to the part of its variance that can be learnt.

With ``[train] target_normalisation = "configuration"`` (as EIGNN, Jiang et al. 2023) every
configuration's targets are instead standardised on their own, per timescale and particle
type: the loss then ignores what the per-configuration Pearson ignores (a configuration's mean
mobility and its spread), and the output is in those units. The training-split statistics are
still stored, and predictions are mapped back with them: an affine map per timescale, which
leaves every Pearson unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch_geometric.data import Data

from equiglass.data.geometry import particles_of_types


@dataclass
class Objective:
    """Target normalisation and loss-particle selection shared by the loss and the validation.

    Attributes:
        mean: [T] float64 mean of the training targets of the loss particles; or [K, T], row k
            that of species k (per type; a species outside the loss gets the pooled row).
        std: [T] or [K, T] float64 standard deviation of the same.
        particle_types: species in the loss and metric.
        per_configuration: standardise every configuration's targets on their own (per timescale
            and type) instead of with ``mean`` and ``std``.
        time_weights: [T] float64 loss weight of every timescale; None: equal weights.
    """

    mean: torch.Tensor
    std: torch.Tensor
    particle_types: tuple[int, ...]
    per_configuration: bool = False
    time_weights: torch.Tensor | None = None

    @classmethod
    def from_graphs(cls, graphs: Sequence[Data], particle_types: Sequence[int],
                    normalisation: Literal["dataset", "type", "configuration"] = "dataset",
                    time_weights: Sequence[float] = ()) -> Objective:
        """Statistics over the loss particles of ``graphs`` (the training split), per type with
        ``normalisation = "type"`` (``[train] target_normalisation``), pooled otherwise;
        ``time_weights`` [T] (empty: equal) weight the loss's timescales.

        Raises:
            ValueError: a timescale whose training targets are constant or absent (for a
                species of the loss, per type), or ``time_weights`` not one per timescale.
        """
        particle_types = tuple(particle_types)
        y = torch.cat([
            torch.where(_target_mask(data, particle_types), data.y.double(), torch.nan) for data in graphs
        ])
        mean, std = _moments(y, "training targets")
        if normalisation == "type":
            types = torch.cat([data.types for data in graphs])
            rows = [_moments(torch.where((types == species)[:, None], y, torch.nan), f"training targets of species {species}")
                    if species in particle_types else (mean, std) for species in range(int(types.max()) + 1)]
            mean, std = (torch.stack(column) for column in zip(*rows))
        weights = None
        if len(time_weights):
            weights = torch.tensor(time_weights, dtype=torch.float64)
            if weights.shape != mean.shape[-1:]:
                raise ValueError(f"time_weights has {len(weights)} values for the data's {mean.shape[-1]} timescales")
        return cls(mean, std, particle_types, normalisation == "configuration", weights)

    def mask(self, data: Data) -> torch.Tensor:
        """[N, T] bool: loss particles where a target exists."""
        return _target_mask(data, self.particle_types)

    def normalised(self, data: Data) -> torch.Tensor:
        """[N, T] normalised targets of ``data`` (a graph or a batch), in the dtype of ``data.y``.

        Per configuration, a (configuration, type, timescale) group whose targets are constant
        (or a single particle) is set to 0 where the loss counts it.
        """
        if not self.per_configuration:
            mean, std = (of_particles(statistic, data.types).to(data.y) for statistic in (self.mean, self.std))
            return (data.y - mean) / std
        graph = data.batch if getattr(data, "batch", None) is not None else torch.zeros_like(data.types)
        group = graph * (int(data.types.max()) + 1) + data.types  # [N]: one group per configuration and type
        weight = self.mask(data).to(data.y.dtype)  # [N, T]
        y = torch.where(weight > 0, data.y, torch.zeros_like(data.y))
        sums = torch.zeros(int(group.max()) + 1, 3, *data.y.shape[1:], dtype=data.y.dtype, device=data.y.device)
        sums.index_add_(0, group, torch.stack([weight, y * weight, y * y * weight], dim=1))
        count, total, squares = sums.unbind(dim=1)
        mean = total / count.clamp_min(1)
        std = (squares / count.clamp_min(1) - mean**2).clamp_min(0).sqrt()
        scale = torch.where(std > 0, std, torch.ones_like(std))
        return torch.where(std[group] > 0, (data.y - mean[group]) / scale[group], torch.zeros_like(data.y))

    def weight(self, data: Data) -> torch.Tensor:
        """0-dim: the total weight of :meth:`loss`'s terms (their count with equal time weights)."""
        mask = self.mask(data)
        if self.time_weights is None:
            return mask.sum()
        return (mask * self.time_weights.to(mask.device)).sum()

    def loss(self, output: torch.Tensor, data: Data) -> torch.Tensor:
        """Mean squared error of ``output`` [N, T] against the normalised targets over :meth:`mask`,
        each timescale's terms weighted by ``time_weights`` where given."""
        mask = self.mask(data)
        squares = (output - self.normalised(data).to(output)) ** 2
        if self.time_weights is None:
            return squares[mask].mean()
        weights = mask * self.time_weights.to(output)
        return (squares * weights).sum() / weights.sum()

    def as_dict(self) -> dict[str, list]:
        """``mean`` and ``std`` as (nested, per type) lists, for a checkpoint."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


def of_particles(statistic: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
    """``statistic`` [T] as it is (it broadcasts over particles), or per type [K, T] as [N, T]: each particle's row."""
    return statistic[types] if statistic.dim() == 2 else statistic


def _moments(y: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """[T] mean and standard deviation over the non-NaN rows of ``y`` [N, T].

    Raises:
        ValueError: a timescale where they are constant or absent.
    """
    count = (~y.isnan()).sum(dim=0)
    mean = y.nansum(dim=0) / count
    std = (((y - mean) ** 2).nansum(dim=0) / count).sqrt()
    if not torch.all(std > 0):
        bad = torch.nonzero(~(std > 0)).flatten().tolist()
        raise ValueError(f"{what} are constant (or absent) at timescale(s) {bad}")
    return mean, std


def _target_mask(data: Data, particle_types: tuple[int, ...]) -> torch.Tensor:
    """[N, T] bool: particles of ``particle_types`` where a target exists."""
    return particles_of_types(data.types, particle_types)[:, None] & data.target_mask
