"""The split of a run: which configurations train and validate, and their graphs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from equiglass.data.graphs import PropensityDataset
from equiglass.errors import ConfigError
from equiglass.training.config import RunConfig


@dataclass
class Split:
    """The graphs of one run: training and validation graphs, indices of every part."""

    indices: dict[str, np.ndarray]
    train: PropensityDataset
    validation: PropensityDataset


def split_graphs(config: RunConfig, dataset: Any) -> Split:
    """Split the configurations of ``dataset`` as ``[data] split`` says and open the training and validation graphs.

    Raises:
        ConfigError: the split leaves no training or no validation configuration.
    """
    indices = config.split_of(len(dataset))
    if len(indices["train"]) == 0 or len(indices["validation"]) == 0:
        raise ConfigError(config.path, f"[data] split {list(config.data.split)} of {len(dataset)} configurations "
                                     "leaves no training or no validation configuration")
    graphs = {
        name: PropensityDataset(
            dataset,
            cutoff=config.data.cutoff,
            positions=config.data.positions,
            with_potential_energy=config.data.with_potential_energy,
            indices=indices[name],
        )
        for name in ("train", "validation")
    }
    return Split(indices, graphs["train"], graphs["validation"])
