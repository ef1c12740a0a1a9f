"""The files of a run directory besides the checkpoints: their names, ``run.json``,
``metrics.csv``, the TensorBoard events, and the check that a directory may be resumed.

* ``config.toml`` / ``config.json``: the resolved config (absolute dataset path, every
  default and hyper-parameter spelled out); ``config.toml`` is itself a valid run config;
* ``run.json``: seed, versions (python, torch, e3nn, torch-geometric, equiglass), dataset
  directory, path and sha256 of its manifest, the split (configuration indices), the
  parameter count, the metric's definition, and once finished the best epoch and score;
* ``metrics.csv``: one row per epoch: ``epoch, train_loss, val_loss, val_pearson_mean,
  val_pearson_t0 .. val_pearson_t{T-1}, lr, wall_s`` (empty cells for what was not measured);
* ``tensorboard/``: the same per-epoch numbers as TensorBoard events, only when the
  ``tensorboard`` package is installed (it is optional; a log line says when it is absent).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import platform
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from equiglass import __version__
from equiglass.data.format import MANIFEST_NAME, atomic_write, file_sha256
from equiglass.errors import ConfigError
from equiglass.metrics import PER_CONFIGURATION
from equiglass.training.checkpoint import LAST_CHECKPOINT, read_resume_checkpoint
from equiglass.training.config import RunConfig, config_from_dict, to_toml

log = logging.getLogger(__name__)

#: Files of a run directory.
CONFIG_TOML, CONFIG_JSON, RUN_RECORD, METRICS_CSV = "config.toml", "config.json", "run.json", "metrics.csv"
#: Folder of the TensorBoard event files in a run directory (written only when tensorboard is installed).
TENSORBOARD_DIR = "tensorboard"
#: What ``val_pearson_*`` means, recorded in ``run.json``.
METRIC_DEFINITION = (
    f"{PER_CONFIGURATION} Pearson correlation over the particles of each loss particle type of each validation "
    "configuration, averaged over those types, then over configurations (val_pearson_t<k>), then over timescales "
    "(val_pearson_mean)"
)


def resume_state(run_dir: Path, config: RunConfig) -> dict[str, Any] | None:
    """The content of ``run_dir/last.pt`` if present and of the same config (epochs and threads aside), else None.

    Raises:
        DataError: ``last.pt`` is unreadable or belongs to another config.
    """
    path = run_dir / LAST_CHECKPOINT
    if not path.is_file():
        return None
    state = read_resume_checkpoint(path)
    # resolved again, so that keys added to the config schema since the run was made take their defaults
    stored = config_from_dict(state["config"], path).with_train(
        epochs=config.train.epochs, threads=config.train.threads).to_dict()
    wanted = config.to_dict()
    if stored != wanted:
        differences = sorted(
            f"[{section}] {key}"
            for section in wanted
            for key in set(stored.get(section, {})) | set(wanted[section])
            if stored.get(section, {}).get(key) != wanted[section].get(key)
        )
        raise ConfigError(path, f"the run was made with another config ({', '.join(differences)} differ): "
                              "use another run directory or --no-resume")
    return state


def write_config(run_dir: Path, resolved: Mapping[str, Mapping[str, Any]]) -> None:
    """Write the resolved config (:meth:`RunConfig.to_dict`) as ``config.toml`` and ``config.json``."""
    atomic_write(run_dir / CONFIG_TOML, lambda stream: stream.write(to_toml(resolved)), binary=False)
    atomic_write(run_dir / CONFIG_JSON, lambda stream: stream.write(json.dumps(resolved, indent=2) + "\n"), binary=False)


def run_record(
    config: RunConfig, dataset: Path, split: Mapping[str, np.ndarray], model: nn.Module, device: torch.device
) -> dict[str, Any]:
    """The content of ``run.json`` (before the run ends).

    Args:
        config: the run's config.
        dataset: the dataset directory.
        split: part name -> configuration indices (of ``validation_dataset``, ``test_dataset``
            where the config names them; recorded too).
        model: the model to train (its trainable parameters are counted).
        device: where it trains.
    """
    import e3nn
    import torch_geometric

    return {
        "seed": config.train.seed,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "e3nn": e3nn.__version__,
            "torch_geometric": torch_geometric.__version__,
            "equiglass": __version__,
        },
        "dataset": str(dataset.resolve()),
        "manifest": str((dataset / MANIFEST_NAME).resolve()),
        "manifest_sha256": file_sha256(dataset / MANIFEST_NAME),
        "split": {name: indices.tolist() for name, indices in split.items()},
        **{key: str(value) for key in ("validation_dataset", "test_dataset")
           if (value := getattr(config.data, key)) is not None},
        "model_kind": config.kind,
        "n_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "metric": METRIC_DEFINITION,
    }


def write_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Write ``run.json``."""
    atomic_write(run_dir / RUN_RECORD, lambda stream: stream.write(json.dumps(record, indent=2) + "\n"), binary=False)


def write_metrics(run_dir: Path, history: list[dict[str, float]], n_times: int) -> None:
    """Rewrite ``metrics.csv`` from ``history`` (its rows; NaN written as an empty cell) for ``n_times`` timescales."""
    columns = ["epoch", "train_loss", "val_loss", "val_pearson_mean",
               *(f"val_pearson_t{k}" for k in range(n_times)), "lr", "wall_s"]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({key: "" if isinstance(value, float) and math.isnan(value) else value for key, value in row.items()})
    atomic_write(run_dir / METRICS_CSV, lambda stream: stream.write(text.getvalue()), binary=False)


@contextmanager
def tensorboard(run_dir: Path, start: int, enabled: bool = True) -> Iterator[Any | None]:
    """A TensorBoard ``SummaryWriter`` into ``run_dir/tensorboard`` if ``enabled`` and tensorboard is installed, else None.

    Events of epochs after ``start`` (left by a killed run) are purged, so a resumed run's
    curves have no duplicates.
    """
    if not enabled:
        yield None
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("tensorboard is not installed: no TensorBoard logs (metrics.csv holds every number)")
        yield None
        return
    writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=start + 1)
    try:
        yield writer
    finally:
        writer.close()
