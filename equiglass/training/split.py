"""The split of a run: which configurations train and validate, and their graphs.

The graphs hold the propensity in float32: a dataset whose propensities exceed float32's
range (they would become inf) is refused when the split opens its graphs. A training or
validation configuration without any particle of the loss types (``[data] particle_types``)
that has a target contributes nothing to the loss or to the validation score: it is left out
of the split, and a warning names its file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from equiglass.data.format import MANIFEST_NAME, load_dataset
from equiglass.data.geometry import particles_of_types
from equiglass.data.graphs import PropensityDataset
from equiglass.errors import ConfigError, DataError, EquiglassError
from equiglass.training.config import RunConfig

log = logging.getLogger(__name__)


@dataclass
class Split:
    """The graphs of one run: training and validation graphs, indices of every part."""

    indices: dict[str, np.ndarray]
    train: PropensityDataset
    validation: PropensityDataset


def split_graphs(config: RunConfig, dataset: Any) -> Split:
    """Split the configurations of ``dataset`` as ``[data] split`` says and open the training and validation graphs.

    With ``[data] validation_dataset``, every configuration of that dataset validates (``indices["validation"]``
    are then its indices).

    Builds every training and validation graph (they are cached for the run).

    Raises:
        ConfigError: the split leaves no training or no validation configuration, or the cutoff
            does not fit the boxes.
        DataError: (naming the configuration file) a propensity beyond float32's range.
    """
    indices = config.split_of(len(dataset))
    sources = {"train": dataset, "validation": dataset}
    if config.data.validation_dataset is not None:
        sources["validation"] = _same_times(load_dataset(config.data.validation_dataset), dataset)
        indices["validation"] = np.arange(len(sources["validation"]), dtype=np.int64)
    if len(indices["train"]) == 0 or len(indices["validation"]) == 0:
        raise ConfigError(config.path, f"[data] split {list(config.data.split)} of {len(dataset)} configurations "
                                     "leaves no training or no validation configuration")
    graphs = {name: _graphs(config, sources[name], indices[name]) for name in ("train", "validation")}
    for name, part in graphs.items():
        try:
            _check_float32_targets(part)
        except EquiglassError:
            raise
        except ValueError as error:  # from the graphs: a cutoff the boxes cannot hold
            raise ConfigError(config.path, f"[data] cutoff: {error}") from None
        kept = _with_loss_particles(part, config.data.particle_types, name)
        if len(kept) == 0:
            raise DataError(sources[name].directory, f"no {name} configuration has a particle of the loss types "
                                               f"{list(config.data.particle_types)} with a target")
        if len(kept) < len(part.indices):
            indices[name] = kept
            graphs[name] = _graphs(config, sources[name], kept)
    return Split(indices, graphs["train"], graphs["validation"])


def _same_times(other: Any, dataset: Any) -> Any:
    """``other`` (a :class:`~equiglass.data.format.Dataset`) if it stores ``dataset``'s times.

    Raises:
        DataError: naming ``other``'s manifest, when its times differ.
    """
    if other.times.shape != dataset.times.shape or not np.allclose(other.times, dataset.times, rtol=1e-9, atol=0):
        raise DataError(other.directory / MANIFEST_NAME, f"stores times {other.times.tolist()}, the training dataset "
                                                         f"{dataset.directory} {dataset.times.tolist()}")
    return other


def _graphs(config: RunConfig, dataset: Any, indices: np.ndarray) -> PropensityDataset:
    """The graphs of configurations ``indices`` as ``[data]`` says."""
    return PropensityDataset(
        dataset,
        cutoff=config.data.cutoff,
        positions=config.data.positions,
        with_potential_energy=config.data.with_potential_energy,
        with_is_displacement=config.data.with_is_displacement,
        indices=indices,
    )


def _with_loss_particles(graphs: PropensityDataset, particle_types: tuple[int, ...], part: str) -> np.ndarray:
    """The configuration indices of ``graphs`` with at least one particle of ``particle_types``
    that has a target; a warning names the file of every other one."""
    kept = []
    for item, index in enumerate(graphs.indices):
        data = graphs[item]
        if bool((particles_of_types(data.types, particle_types)[:, None] & data.target_mask).any()):
            kept.append(index)
        else:
            log.warning("%s: no particle of the loss types %s has a target: left out of the %s configurations "
                        "(it would contribute nothing)", graphs.dataset.files[int(index)], list(particle_types), part)
    return np.asarray(kept, dtype=np.int64)


def _check_float32_targets(graphs: PropensityDataset) -> None:
    """Build every graph of ``graphs`` and check that its float32 propensities are finite.

    The configuration files hold only finite values, so an infinite one overflowed float32.

    Raises:
        DataError: naming the configuration file whose propensity does not fit float32.
    """
    for item, index in enumerate(graphs.indices):
        if not torch.isfinite(graphs[item].y).all():
            raise DataError(graphs.dataset.files[int(index)], (
                f"propensities beyond float32's range (largest {torch.finfo(torch.float32).max:.3g}) "
                "would train as inf: rescale them"
            ))
