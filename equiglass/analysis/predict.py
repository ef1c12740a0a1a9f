"""Propensity predictions of a trained model, one `.npz` per configuration.

``equiglass predict CHECKPOINT DATASET --out DIR`` writes, for every configuration of a
dataset directory (or for one configuration `.npz`), ``DIR/<the configuration's file
name>`` holding

* ``prediction`` [T, N] float32: the predicted propensity of every particle at every time
  (the layout of the dataset's ``propensity``: times increasing, particles in file order),
  in physical units (the model's output de-normalised);
* ``times`` [T] float64: the model's time points (LJ units), those of its training data.

Files are written atomically; a rerun skips the configurations whose output exists, so an
interrupted run resumes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from equiglass.data.format import OPTIONAL_FIELDS, atomic_write, load_dataset, read_configuration
from equiglass.data.graphs import configuration_graph
from equiglass.training.checkpoint import TrainedModel, load_checkpoint

log = logging.getLogger(__name__)


@dataclass
class PredictReport:
    """What :func:`predict` did: the output files it wrote and those it found already present."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)


def configuration_files(source: str | Path) -> dict[str, Callable[[], dict[str, np.ndarray]]]:
    """Output name -> reader of the configuration's validated arrays, for every configuration of ``source``.

    ``source`` is a dataset directory (configurations in manifest order, each checked against
    the manifest) or one configuration `.npz` (optional fields may be missing: no manifest
    says which are absent). Nothing is read until a reader is called.
    """
    source = Path(source)
    if not source.is_dir():
        return {source.name: functools.partial(read_configuration, source, absent=OPTIONAL_FIELDS)}
    dataset = load_dataset(source)
    return {path.name: functools.partial(dataset.read, path) for path in dataset.files}


def configuration_prediction(trained: TrainedModel, fields: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays of one output file for a configuration's ``fields``: ``prediction`` [T, N]
    float32 and ``times`` [T] float64. The graph is built as the model was trained
    (cutoff, positions, potential energy of its data section)."""
    section = trained.data_section
    data = configuration_graph(
        fields,
        cutoff=section["cutoff"],
        positions=section["positions"],
        with_potential_energy=section["with_potential_energy"],
    )
    with torch.no_grad():
        prediction = trained.predict(data)
    return {
        "prediction": prediction.detach().cpu().numpy().T.astype(np.float32),
        "times": np.asarray(trained.times, dtype=np.float64),
    }


def predict(checkpoint: str | Path, source: str | Path, out: str | Path, overwrite: bool = False) -> PredictReport:
    """Write the predictions of ``checkpoint`` for every configuration of ``source`` into ``out``.

    Args:
        checkpoint: a checkpoint file or a run directory (its ``best.pt``).
        source: a dataset directory or one configuration `.npz`.
        out: output directory (created if needed); file names are the configurations'.
        overwrite: recompute outputs that already exist (by default they are skipped).

    Returns:
        The files written and the files skipped.
    """
    files = configuration_files(source)
    out = Path(out)
    report = PredictReport()
    trained: TrainedModel | None = None
    for name, read in files.items():
        path = out / name
        if path.is_file() and not overwrite:
            report.skipped.append(path)
            continue
        if trained is None:
            trained = load_checkpoint(checkpoint)
        arrays = configuration_prediction(trained, read())
        report.written.append(atomic_write(path, functools.partial(np.savez_compressed, **arrays)))
        log.info("%s: %d particles x %d times", path, arrays["prediction"].shape[1], arrays["times"].size)
    return report
