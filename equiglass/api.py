"""What a notebook needs, importable from the top of the package (lazily: ``import equiglass`` stays
cheap and imports no torch until one of these is used):

    equiglass.load_dataset(directory)                      a dataset directory -> Dataset
    equiglass.load_model(checkpoint)                       a checkpoint or run directory -> TrainedModel
    equiglass.predict(model, positions, types, box)        arrays of one configuration -> [N, T] propensity

This module is of the top layer (it uses data, training and analysis); the package root re-exports
its names from its module ``__getattr__``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from equiglass.analysis.predict import configuration_prediction
from equiglass.data import format
from equiglass.data.geometry import wrap
from equiglass.data.graphs import POSITION_FIELDS
from equiglass.training.checkpoint import TrainedModel, load_checkpoint

__all__ = ["load_dataset", "load_model", "predict"]


def load_dataset(directory: str | Path) -> format.Dataset:
    """Open an equiglass dataset directory (its manifest read and checked; configurations are read,
    and validated, on demand with ``dataset.read(index)``).

    >>> import equiglass
    >>> from equiglass.resources import DEMO_DATASET
    >>> dataset = equiglass.load_dataset(DEMO_DATASET)
    >>> len(dataset), dataset.times.size, dataset.has_targets
    (24, 10, True)
    >>> fields = dataset.read(0)                  # dict of numpy arrays, LJ units
    >>> fields["positions"].shape, fields["types"].shape, fields["propensity"].shape
    ((1000, 3), (1000,), (10, 1000))

    Raises:
        DataError: naming the manifest, when the directory is not a complete, valid dataset.
    """
    return format.load_dataset(directory)


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """A trained model from a checkpoint file or a run directory (its ``best.pt``), in eval mode.

    In the example ``checkpoint`` is such a path (e.g. ``"runs/eq"`` after ``equiglass train``):

    >>> import equiglass
    >>> model = equiglass.load_model(checkpoint)
    >>> model.times.size                          # the time points of its outputs (LJ units)
    10
    >>> sorted(model.data_section)[:3]            # how it builds graphs
    ['cutoff', 'particle_types', 'positions']

    Raises:
        CheckpointError: naming the file, when it is missing, corrupt or does not fit its model.
    """
    return load_checkpoint(checkpoint, device=device)


def predict(
    model: TrainedModel | str | Path,
    positions: np.ndarray,
    types: np.ndarray,
    box: np.ndarray,
    potential_energy: np.ndarray | None = None,
    is_positions: np.ndarray | None = None,
) -> np.ndarray:
    """The propensity a trained model predicts for one configuration given as arrays.

    Args:
        model: a :func:`load_model` result, or a checkpoint file or run directory.
        positions: [N, 3] positions (LJ lengths; wrapped into the box here), thermal, inherent or cage
            positions as the model was trained (``model.data_section["positions"]``).
        types: [N] int, 0 = A, 1 = B.
        box: [3] sides of the periodic orthorhombic box (LJ lengths).
        potential_energy: [N] per-particle potential energy of those positions, for models trained
            with it (``model.data_section["with_potential_energy"]``).
        is_positions: [N, 3] inherent-state positions, for models trained with the displacement
            from the inherent state (``model.data_section["with_is_displacement"]``); ``positions``
            are then the thermal ones.

    Returns:
        [N, T] float32 predicted propensity (LJ lengths) at the model's times ``model.times``.

    >>> import equiglass
    >>> from equiglass.resources import DEMO_DATASET
    >>> fields = equiglass.load_dataset(DEMO_DATASET).read(0)
    >>> model = equiglass.load_model(checkpoint)
    >>> propensity = equiglass.predict(model, fields["positions"], fields["types"], fields["box"])
    >>> propensity.shape, propensity.dtype
    ((1000, 10), dtype('float32'))

    Raises:
        ValueError: the model needs ``potential_energy`` or ``is_positions`` and none is given, or the
            arrays are invalid.
    """
    trained = model if isinstance(model, TrainedModel) else load_model(model)
    position_field, energy_field = POSITION_FIELDS[trained.data_section["positions"]]
    box = np.asarray(box, dtype=np.float64)
    wrapped = wrap(np.asarray(positions, dtype=np.float64), box)
    fields = {"positions": wrapped, position_field: wrapped, "types": np.asarray(types), "box": box,
              "times": trained.times}
    if trained.data_section["with_potential_energy"]:
        if potential_energy is None:
            raise ValueError("this model takes the per-particle potential energy: pass potential_energy [N]")
        fields[energy_field] = np.asarray(potential_energy)
    if trained.data_section["with_is_displacement"]:
        if position_field != "positions":
            raise ValueError("this model takes inherent or cage positions and the displacement from the inherent "
                             "state to the thermal ones: predict from a dataset (equiglass predict)")
        if is_positions is None:
            raise ValueError("this model takes the displacement from the inherent state: pass the thermal positions "
                             "and is_positions [N, 3]")
        fields["is_positions"] = wrap(np.asarray(is_positions, dtype=np.float64), box)
    return configuration_prediction(trained, fields)["prediction"].T
