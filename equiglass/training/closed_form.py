"""Closed-form (ridge) fits: every ``[train] alphas`` value on the training split, α chosen by
the validation score; one "epoch"; ``best.pt`` and ``last.pt`` hold the same model.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data

from equiglass.nn.ridge import DescriptorRidge
from equiglass.training.objective import Objective
from equiglass.training.progress import RunProgress
from equiglass.training.split import Split

log = logging.getLogger(__name__)


def fit_closed_form(
    run: RunProgress, split: Split, device: torch.device, state: dict[str, Any] | None, progress: bool
) -> None:
    """Closed-form fits with every α; α of the best validation score (one epoch), on the CPU.

    A finished fit (``state``, the content of ``last.pt``) is only restored. ``device`` and
    ``progress`` are not used: the fit is one step on the CPU.
    """
    if state is not None:
        run.restore(state)
        return
    began = time.perf_counter()
    model: DescriptorRidge = run.model
    train_views, validation_views = (_with_descriptors(graphs, model) for graphs in (split.train, split.validation))
    alpha, alpha_scores = model.select_alpha(
        [_normalised_copy(data, run.objective) for data in train_views],
        [_normalised_copy(data, run.objective) for data in validation_views],
        run.config.train.alphas,
        run.objective.particle_types,
    )
    train_loss = float(np.mean([run.objective.loss(model(data), data).item() for data in train_views]))
    scores = run.validate(validation_views, torch.device("cpu"))
    run.wall_s = time.perf_counter() - began
    log.info("%s: ridge alpha %g chosen; validation scores %s", run.run_dir, alpha, alpha_scores)
    row = run.row(1, train_loss, scores, math.nan)
    run.end_epoch(row, lambda: {"alpha": alpha, "alpha_scores": {str(a): s for a, s in alpha_scores.items()}})


def _with_descriptors(graphs: Sequence[Data], model: DescriptorRidge) -> list[Data]:
    """Shallow copies of ``graphs`` carrying their descriptors (computed once, used by every α)."""
    out = []
    for data in graphs:
        view = copy.copy(data)
        view.descriptors = model.descriptors(data)
        out.append(view)
    return out


def _normalised_copy(data: Data, objective: Objective) -> Data:
    """A shallow copy of ``data`` whose ``y`` holds the normalised targets."""
    out = copy.copy(data)
    out.y = objective.normalised(data)
    return out
