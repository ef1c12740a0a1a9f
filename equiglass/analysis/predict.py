"""Propensity predictions of a trained model, one `.npz` per configuration.

``equiglass predict CHECKPOINT DATASET --out DIR`` writes, for every configuration of a
dataset directory (or for one configuration `.npz`), ``DIR/<the configuration's file
name>`` holding

* ``prediction`` [T, N] float32: the predicted propensity of every particle at every time
  (the layout of the dataset's ``propensity``: times increasing, particles in file order),
  in physical units (the model's output de-normalised);
* ``times`` [T] float64: the model's time points (LJ units), those of its training data.

and ``DIR/predictions.json`` recording which checkpoint and dataset made them (paths and
sha256 of the checkpoint file and of the dataset's ``manifest.json``, or of the one
configuration file).

With ``format="extxyz"`` or ``"lammps-dump"`` each configuration is also written for viewing, as
``DIR/<its name>.extxyz`` or ``.dump`` (:mod:`equiglass.data.ase_io`): positions, box, ``type``
(1 = A, 2 = B) and the per-particle columns ``predicted_propensity`` [N, T] (the ``.npz``
prediction; the times in the frame's ``times``), the measured ``propensity`` [N, T'] (times
``propensity_times``) where the dataset has it, and ``potential_energy`` where known, which OVITO
colours by as they are (a LAMMPS dump has one column ``name_k`` per time k, its times in
``<file>.json``).

Files are written atomically; a rerun with the same checkpoint and dataset skips the
configurations whose output exists, so an interrupted run resumes. Predictions of another
checkpoint or dataset, or of unknown origin, are refused (``--overwrite`` recomputes them).
``DIR`` may not hold a dataset, nor be the dataset directory or lie inside it.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import ase
import numpy as np
import torch

from equiglass.data.ase_io import EXPORT_FORMATS, configuration_atoms, write_view
from equiglass.data.format import (
    MANIFEST_NAME,
    OPTIONAL_FIELDS,
    atomic_write,
    file_sha256,
    load_dataset,
    read_configuration,
)
from equiglass.data.graphs import configuration_graph
from equiglass.errors import CheckpointError, DataError
from equiglass.training.checkpoint import TrainedModel, checkpoint_path, load_checkpoint

log = logging.getLogger(__name__)

#: File of the output directory recording which checkpoint and dataset made its predictions.
PROVENANCE_NAME = "predictions.json"
#: Entries of the provenance record that must match for existing predictions to be reused.
PROVENANCE_IDENTITY = ("checkpoint_sha256", "dataset", "dataset_sha256")


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
    (cutoff, positions, potential energy, displacement of its data section)."""
    section = trained.data_section
    data = configuration_graph(
        fields,
        cutoff=section["cutoff"],
        positions=section["positions"],
        with_potential_energy=section["with_potential_energy"],
        with_is_displacement=section["with_is_displacement"],
    )
    with torch.no_grad():
        prediction = trained.predict(data)
    return {
        "prediction": prediction.detach().cpu().numpy().T.astype(np.float32),
        "times": np.asarray(trained.times, dtype=np.float64),
    }


def predict(
    checkpoint: str | Path, source: str | Path, out: str | Path, overwrite: bool = False, format: str = "npz"
) -> PredictReport:
    """Write the predictions of ``checkpoint`` for every configuration of ``source`` into ``out``.

    Args:
        checkpoint: a checkpoint file or a run directory (its ``best.pt``).
        source: a dataset directory or one configuration `.npz`.
        out: output directory (created if needed); file names are the configurations'.
        overwrite: recompute outputs that already exist (by default those of the same checkpoint and
            dataset are skipped, others refused).
        format: ``"npz"`` (only), or also a file for viewing, ``"extxyz"`` or ``"lammps-dump"``.

    Returns:
        The files written and the files skipped.

    Raises:
        DataError: ``out`` holds a dataset or lies in ``source``'s directory, or holds predictions of
            another checkpoint or dataset (or of unknown origin) and ``overwrite`` is false.
        CheckpointError: the checkpoint is missing or unreadable.
    """
    if format != "npz" and format not in EXPORT_FORMATS:
        raise ValueError(f"format must be 'npz' or one of {sorted(EXPORT_FORMATS)}, got {format!r}")
    files = configuration_files(source)
    out = Path(out)
    check_output_directory(out, Path(source))
    outputs = {name: [out / name] + ([] if format == "npz" else [view_path(out / name, format)]) for name in files}
    existing = [path for paths in outputs.values() for path in paths if path.is_file()]
    record = provenance(checkpoint, source)
    if overwrite:
        discard_predictions(out, existing)
    else:
        check_provenance(out, record, existing)
    write_provenance(out, record)
    report = PredictReport()
    trained: TrainedModel | None = None
    for name, read in files.items():
        path, *view = outputs[name]
        if all(output.is_file() for output in outputs[name]):
            report.skipped.extend(outputs[name])
            continue
        fields = read()
        if path.is_file():
            report.skipped.append(path)
            arrays = read_prediction(path)
        else:
            trained = trained or load_checkpoint(checkpoint)
            arrays = _prediction_of(trained, fields, Path(source) / name if Path(source).is_dir() else Path(source))
            report.written.append(atomic_write(path, functools.partial(np.savez_compressed, **arrays)))
            log.info("%s: %d particles x %d times", path, arrays["prediction"].shape[1], arrays["times"].size)
        if view:
            report.written.append(write_view(view[0], view_atoms(fields, arrays), format))
    return report


def view_path(prediction: Path, format: str) -> Path:
    """The file for viewing beside the prediction ``.npz`` ``prediction``."""
    return prediction.with_suffix(EXPORT_FORMATS[format])


def read_prediction(path: Path) -> dict[str, np.ndarray]:
    """``prediction`` and ``times`` of a prediction file.

    Raises:
        DataError: naming the file, unreadable or lacking them.
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in ("prediction", "times")}
    except (OSError, ValueError, KeyError, EOFError) as error:
        raise DataError(path, f"not a readable prediction file: {error}") from error


def view_atoms(fields: Mapping[str, np.ndarray], arrays: Mapping[str, np.ndarray]) -> ase.Atoms:
    """One configuration for viewing: its ``fields`` with ``predicted_propensity`` [N, T] from the
    prediction ``arrays`` (times in the info ``times``), the measured ``propensity`` [N, T'] (info
    ``propensity_times``) and ``potential_energy`` [N] where ``fields`` hold them."""
    columns = {"predicted_propensity": arrays["prediction"].T}
    info = {"times": arrays["times"]}
    if "propensity" in fields:
        columns["propensity"] = fields["propensity"].T
        info["propensity_times"] = fields["times"]
    if "potential_energy" in fields:
        columns["potential_energy"] = fields["potential_energy"]
    return configuration_atoms(fields, columns, info)


def _prediction_of(trained: TrainedModel, fields: Mapping[str, np.ndarray], path: Path) -> dict[str, np.ndarray]:
    """:func:`configuration_prediction` of the configuration file ``path``, a graph that cannot be
    built (e.g. the checkpoint's cutoff against this box) raised as a :class:`DataError` naming it."""
    try:
        return configuration_prediction(trained, fields)
    except ValueError as error:
        raise DataError(path, f"cannot build the graph of checkpoint {trained.path}: {error}") from error


def check_output_directory(out: Path, source: Path) -> None:
    """Refuse an output directory whose predictions would replace data.

    Raises:
        DataError: ``out`` holds a dataset (a ``manifest.json``), is the dataset directory
            ``source`` or lies inside it, or is the directory of the configuration file ``source``.
    """
    if (out / MANIFEST_NAME).exists():
        raise DataError(out, f"holds a dataset ({MANIFEST_NAME}): predictions would replace its configurations; "
                             "choose another --out")
    target, origin = out.resolve(), source.resolve()
    if source.is_dir() and (target == origin or origin in target.parents):
        raise DataError(out, f"is inside the dataset {source}: choose an output directory outside it")
    if not source.is_dir() and target == origin.parent:
        raise DataError(out, f"is the directory of {source}: its prediction would replace it; choose another --out")


def provenance(checkpoint: str | Path, source: str | Path) -> dict[str, str]:
    """What identifies a set of predictions: the checkpoint file and the dataset (resolved paths and
    sha256 of the checkpoint, and of the dataset's manifest or the one configuration file).

    Raises:
        CheckpointError: the checkpoint file does not exist.
    """
    path, source = checkpoint_path(checkpoint), Path(source)
    if not path.is_file():
        raise CheckpointError(path, "checkpoint file does not exist")
    identity = source / MANIFEST_NAME if source.is_dir() else source
    return {
        "checkpoint": str(path.resolve()),
        "checkpoint_sha256": file_sha256(path),
        "dataset": str(source.resolve()),
        "dataset_sha256": file_sha256(identity),
    }


def read_provenance(out: Path) -> dict[str, str] | None:
    """The provenance record of the output directory ``out``, or None if it has none.

    Raises:
        DataError: the record is unreadable.
    """
    path = out / PROVENANCE_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(path, f"not a readable provenance record: {error}") from error
    if not isinstance(record, dict):
        raise DataError(path, "not a provenance record: not a JSON object")
    return record


def check_provenance(out: Path, record: Mapping[str, str], existing: list[Path]) -> None:
    """Check that predictions already in ``out`` were made by the checkpoint and dataset of ``record``.

    Raises:
        DataError: ``out`` records another checkpoint or dataset, or holds outputs (``existing``)
            without a record.
    """
    stored = read_provenance(out)
    if stored is None:
        if existing:
            raise DataError(out, f"holds {len(existing)} prediction file(s) of unknown origin (no {PROVENANCE_NAME}): "
                                 "use --overwrite to recompute them, or another --out")
        return
    differ = [key for key in PROVENANCE_IDENTITY if stored.get(key) != record[key]]
    if differ:
        made_by = f"checkpoint {stored.get('checkpoint')} on {stored.get('dataset')}"
        raise DataError(out / PROVENANCE_NAME, f"holds predictions of {made_by} ({', '.join(differ)} differ): "
                                               "use --overwrite to recompute them, or another --out")


def discard_predictions(out: Path, existing: list[Path]) -> None:
    """Remove the provenance record, then the ``existing`` outputs, of ``out`` before they are recomputed
    (so that an interrupted overwrite never leaves stale outputs under a new record)."""
    (out / PROVENANCE_NAME).unlink(missing_ok=True)
    for path in existing:
        path.unlink()


def write_provenance(out: Path, record: Mapping[str, str]) -> None:
    """Write ``record`` as ``out/predictions.json`` atomically, unless it is already there."""
    if read_provenance(out) != record:
        atomic_write(out / PROVENANCE_NAME, lambda stream: json.dump(dict(record), stream, indent=2), binary=False)

