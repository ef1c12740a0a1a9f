"""Linear ridge regression of propensities on structural descriptors (the classic baseline).

The descriptors of :mod:`equiglass.data.descriptors` are standardised with the training mean and
standard deviation (``x̃ = (x - μ) / σ``); for each timescale the weights solve, in closed form,

    (X̃ᵀ X̃ + α I) w = X̃ᵀ (y - ȳ),        prediction = x̃ · w + ȳ,

over the training particles of the selected types (the intercept ȳ is not penalised; the
sums run over particles, so α scales with the number of training rows). Constant features
(σ = 0 on the training set) get weight 0. Fitting streams over the configurations once,
accumulating sufficient statistics in float64, so the training set never sits in memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch_geometric.data import Data

from equiglass.data.descriptors import DescriptorConfig, graph_descriptors
from equiglass.data.geometry import particles_of_types
from equiglass.metrics import pearson_within_types

#: Default grid of α for :meth:`DescriptorRidge.select_alpha`.
DEFAULT_ALPHAS: tuple[float, ...] = tuple(10.0**k for k in range(-2, 7))


@dataclass
class NormalEquations:
    """Sufficient statistics of a ridge fit: shifted sums of ``z = [x, y]`` over the training rows.

    Attributes:
        n_features: D.
        count: number of rows.
        shift: [D + T] value subtracted from every row before summing (the first chunk's
            mean), which keeps the centred second moments accurate in float64.
        sum: [D + T] Σ (z - shift).
        outer: [D + T, D + T] Σ (z - shift)(z - shift)ᵀ.
    """

    n_features: int
    count: int
    shift: torch.Tensor
    sum: torch.Tensor
    outer: torch.Tensor

    @classmethod
    def accumulate(cls, chunks: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> NormalEquations:
        """Sums over chunks of rows ``(x [n, D], y [n, T])`` (float64)."""
        statistics: NormalEquations | None = None
        for x, y in chunks:
            z = torch.cat([x, y], dim=1)
            if statistics is None:
                shift = z.mean(dim=0) if z.shape[0] else z.new_zeros(z.shape[1])
                statistics = cls(x.shape[1], 0, shift, z.new_zeros(z.shape[1]), z.new_zeros(z.shape[1], z.shape[1]))
            z = z - statistics.shift
            statistics.count += z.shape[0]
            statistics.sum += z.sum(dim=0)
            statistics.outer += z.T @ z
        if statistics is None or statistics.count < 2:
            raise ValueError("a ridge fit needs at least two training particles of the selected types")
        return statistics

    def mean(self) -> torch.Tensor:
        """[D + T] mean of ``[x, y]``."""
        return self.shift + self.sum / self.count

    def scatter(self) -> torch.Tensor:
        """[D + T, D + T] centred scatter matrix Σ (z - z̄)(z - z̄)ᵀ."""
        return self.outer - torch.outer(self.sum, self.sum) / self.count


class DescriptorRidge(nn.Module):
    """Ridge regression from structural descriptors to propensities at every timescale.

    Buffers (saved in the state dict, float64): ``mean [D]``, ``std [D]`` (1 for constant
    features), ``weight [D, T]`` (on standardised descriptors), ``bias [T]``, ``alpha []``
    and ``fitted []``.

    Args:
        n_timescales: T, the number of targets per particle.
        config: the descriptors used; ``data.descriptors`` ``[N, D]`` is used instead of
            computing them when a graph carries it (it must follow this config's layout).
    """

    def __init__(self, n_timescales: int, config: DescriptorConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DescriptorConfig()
        self.n_timescales = int(n_timescales)
        d = config.n_features
        kwargs = {"dtype": torch.float64}
        self.register_buffer("mean", torch.zeros(d, **kwargs))
        self.register_buffer("std", torch.ones(d, **kwargs))
        self.register_buffer("weight", torch.zeros(d, self.n_timescales, **kwargs))
        self.register_buffer("bias", torch.zeros(self.n_timescales, **kwargs))
        self.register_buffer("alpha", torch.tensor(float("nan"), **kwargs))
        self.register_buffer("fitted", torch.tensor(False))

    def descriptors(self, data: Data) -> torch.Tensor:
        """``data.descriptors`` if present, else :func:`~equiglass.data.descriptors.graph_descriptors`: ``[N, D]``."""
        x = data.descriptors if "descriptors" in data else graph_descriptors(data, self.config)
        if x.shape != (data.num_nodes, self.config.n_features):
            expected = [data.num_nodes, self.config.n_features]
            raise ValueError(f"descriptors must have shape {expected}, got {list(x.shape)}")
        return x.to(self.mean.dtype)

    def forward(self, data: Data) -> torch.Tensor:
        """Propensities ``[N, n_timescales]`` of every particle (all types), in the dtype of ``data.pos``."""
        if not self.fitted:
            raise RuntimeError("DescriptorRidge: call fit() (or load a fitted state dict) before predicting")
        return self._predict(self.descriptors(data)).to(data.pos.dtype)

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights ``[D, T]`` and intercept ``[T]`` in the units of the raw descriptors."""
        weight = self.weight / self.std[:, None]
        return weight, self.bias - self.mean @ weight

    @torch.no_grad()
    def fit(self, datasets: Iterable[Data], alpha: float, particle_types: Sequence[int] = (0,)) -> DescriptorRidge:
        """Fit on the particles of ``particle_types`` of every graph (``Data`` or ``Batch``) in ``datasets``.

        Args:
            datasets: graphs with ``y [N, T]`` (and what :meth:`descriptors` needs).
            alpha: ridge strength α >= 0 (α = 0: least squares; needs a full-rank design).
            particle_types: species of the training rows (Bapst et al. and PCL22: A only).

        Returns:
            ``self``, fitted.
        """
        self._solve(NormalEquations.accumulate(self._rows(datasets, particle_types)), alpha)
        return self

    @torch.no_grad()
    def select_alpha(
        self,
        train: Iterable[Data],
        validation: Iterable[Data],
        alphas: Sequence[float] = DEFAULT_ALPHAS,
        particle_types: Sequence[int] = (0,),
    ) -> tuple[float, dict[float, float]]:
        """Fit with every α and keep the one of best validation Pearson correlation.

        The score of an α is the validation score of training
        (:func:`~equiglass.metrics.pearson_within_types`): the Pearson correlation between
        prediction and target over the particles of each type of ``particle_types`` in one
        configuration, averaged over the types, the validation configurations (every graph of a
        batch counts as one) and the timescales. Descriptors are computed once for all α.

        Returns:
            The chosen α and the score of every α; the model is left fitted with the chosen α.
        """
        statistics = NormalEquations.accumulate(self._rows(train, particle_types))
        configurations = [rows for data in validation for rows in self._rows_per_configuration(data, particle_types)]
        if not configurations:
            raise ValueError("select_alpha needs a validation configuration with particles of the selected types")
        scores = {}
        for alpha in alphas:
            self._solve(statistics, alpha)
            correlations = torch.stack([pearson_within_types(self._predict(x), y, types, particle_types)
                                        for x, y, types in configurations])  # [C, T]
            scores[float(alpha)] = float(correlations.mean())
        best = max(scores, key=lambda a: -math.inf if math.isnan(scores[a]) else scores[a])
        self._solve(statistics, best)
        return best, scores

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        """Standardise ``x [n, D]`` and apply the linear map: ``[n, T]``."""
        return ((x - self.mean) / self.std) @ self.weight + self.bias

    def _solve(self, statistics: NormalEquations, alpha: float) -> None:
        """Set the buffers from the sufficient statistics and α."""
        if not alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        d = statistics.n_features
        mean, scatter = statistics.mean(), statistics.scatter()
        std = (scatter.diagonal()[:d].clamp_min(0) / statistics.count).sqrt()
        varying = std > 1e-9 * mean[:d].abs()
        std = torch.where(varying, std, torch.ones_like(std))
        gram = scatter[:d, :d][varying][:, varying] / torch.outer(std[varying], std[varying])
        rhs = scatter[:d, d:][varying] / std[varying, None]
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        weight = torch.zeros(d, self.n_timescales, dtype=gram.dtype, device=gram.device)
        weight[varying] = torch.linalg.solve(gram + alpha * eye, rhs)
        for name, value in {"mean": mean[:d], "std": std, "weight": weight, "bias": mean[d:]}.items():
            getattr(self, name).copy_(value)
        self.alpha.fill_(float(alpha))
        self.fitted.fill_(True)

    def _rows(
        self, datasets: Iterable[Data], particle_types: Sequence[int]
    ) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """``(x [n, D], y [n, T])`` float64 of the selected particles, one chunk per graph or batch."""
        for data in datasets:
            select = self._selection(data, particle_types)
            yield self.descriptors(data)[select], data.y[select].to(self.mean.dtype)

    def _rows_per_configuration(
        self, data: Data, particle_types: Sequence[int]
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Like :meth:`_rows` for one ``Data`` / ``Batch``, split into one chunk per configuration,
        with the particles' types: ``(x [n, D], y [n, T], types [n])``."""
        select = self._selection(data, particle_types)
        x, y, types = self.descriptors(data)[select], data.y[select].to(self.mean.dtype), data.types[select]
        graph = (torch.zeros_like(data.types) if data.batch is None else data.batch)[select]
        return [(x[graph == g], y[graph == g], types[graph == g]) for g in graph.unique()]

    def _selection(self, data: Data, particle_types: Sequence[int]) -> torch.Tensor:
        """[N] bool mask of the particles of ``particle_types``; checks targets."""
        if data.y.shape != (data.num_nodes, self.n_timescales):
            expected = [data.num_nodes, self.n_timescales]
            raise ValueError(f"targets y must have shape {expected}, got {list(data.y.shape)}")
        select = particles_of_types(data.types, particle_types)
        if "target_mask" in data and not bool(data.target_mask[select].all()):
            raise ValueError("DescriptorRidge needs every target of the selected particles (target_mask is False)")
        return select

