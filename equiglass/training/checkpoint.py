"""Checkpoints of trained propensity models: what :mod:`equiglass.training.loop` writes, everything else reads.

A checkpoint is one ``torch.save`` of a plain dict holding only tensors and primitives (so
it loads with ``torch.load(weights_only=True)``, which never runs pickled code):

==================  ============================================================================
key                 content
==================  ============================================================================
``format``          :data:`CHECKPOINT_FORMAT`
``model_state``     the model's ``state_dict()`` (on the CPU)
``model``           the ``[model]`` section: ``kind`` and every hyper-parameter
                    (:func:`equiglass.nn.registry.build_model` rebuilds the model from it)
``data``            how graphs are built: ``cutoff``, ``positions``, ``with_potential_energy``,
                    ``with_is_displacement``, ``particle_types`` (of the loss and metric); from :mod:`equiglass.training.loop` also
                    the rest of the run's ``[data]`` section (``dataset``, ``split``, ``split_seed``)
``normalisation``   ``mean`` [T], ``std`` [T] (or [K, T], row k for species k): the model outputs
                    ``(propensity - mean) / std``
``times``           [T] the time points of the outputs (LJ units)
``equiglass_version``
...                 the ``extra`` of :func:`save_checkpoint`: ``epoch``, ``metrics``, and in
                    ``last.pt`` the optimiser and random states needed to resume training
==================  ============================================================================

A run directory (see :mod:`equiglass.training.loop`) holds ``best.pt`` and ``last.pt``;
:func:`load_checkpoint` of a directory loads its ``best.pt``.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch_geometric.data import Data

from equiglass import __version__
from equiglass.data.format import Dataset, atomic_write
from equiglass.data.graphs import POSITION_FIELDS, PropensityDataset
from equiglass.errors import CheckpointError
from equiglass.nn.registry import build_model, resolve_model_section, with_former_defaults
from equiglass.training.objective import of_particles

#: Version of the checkpoint layout.
CHECKPOINT_FORMAT = 1
#: Checkpoint of the best validation score in a run directory.
BEST_CHECKPOINT = "best.pt"
#: Checkpoint of the latest epoch in a run directory (resumes training).
LAST_CHECKPOINT = "last.pt"
#: Keys written by :func:`save_checkpoint` itself; ``extra`` may not use them.
RESERVED_KEYS = ("format", "model_state", "model", "data", "normalisation", "times", "equiglass_version")
#: Keys the ``data`` section must hold.
DATA_KEYS = ("cutoff", "positions", "with_potential_energy", "with_is_displacement", "particle_types")
#: Keys of the ``data`` section added since format 1, with the value that checkpoints written before them meant.
DATA_DEFAULTS = {"with_is_displacement": False}
#: Keys that only a ``last.pt`` written by :mod:`equiglass.training.loop` holds, needed to resume training.
RESUME_KEYS = ("config", "epoch", "history", "best_epoch", "best_score", "wall_s")


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    model_section: Mapping[str, Any],
    data_section: Mapping[str, Any],
    normalisation: Mapping[str, Sequence],
    times: Sequence[float],
    extra: Mapping[str, Any],
) -> Path:
    """Write a checkpoint atomically (temporary file, then rename); returns ``path``.

    Args:
        path: the checkpoint file.
        model: the model; its state dict is stored on the CPU.
        model_section: ``kind`` and hyper-parameters, as :func:`~equiglass.nn.registry.build_model` takes.
        data_section: graph settings (see :data:`DATA_KEYS`; ``dataset`` and those of
            :data:`DATA_DEFAULTS` optional).
        normalisation: ``mean`` and ``std`` of the targets, [T] (one per time) or [K, T] (per species).
        times: [T] time points of the outputs.
        extra: further entries (epoch, metrics, optimiser and random states), tensors and primitives only.

    Raises:
        ValueError: ``extra`` uses a reserved key, a data key is missing, or the sizes of
            ``normalisation`` and ``times`` disagree.
    """
    clash = sorted(set(extra) & set(RESERVED_KEYS))
    if clash:
        raise ValueError(f"extra must not use the reserved checkpoint keys {clash}")
    data_section = {**DATA_DEFAULTS, **data_section}
    missing = [key for key in DATA_KEYS if key not in data_section]
    if missing:
        raise ValueError(f"data_section lacks {missing}")
    mean, std = (np.asarray(normalisation[key], dtype=np.float64) for key in ("mean", "std"))
    times = _floats(times)
    if not mean.shape == std.shape or mean.ndim not in (1, 2) or mean.shape[-1] != len(times):
        raise ValueError(f"normalisation mean {mean.shape} and std {std.shape} must both be [T] or [K, T] "
                         f"with T = {len(times)} times")
    content = {
        "format": CHECKPOINT_FORMAT,
        "model_state": {name: value.detach().cpu() for name, value in model.state_dict().items()},
        "model": resolve_model_section(model_section),  # every hyper-parameter, so a later default cannot change it
        "data": dict(data_section),
        "normalisation": {"mean": mean.tolist(), "std": std.tolist()},
        "times": times,
        "equiglass_version": __version__,
        **extra,
    }
    return atomic_write(path, lambda stream: torch.save(content, stream))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw content of a checkpoint file (CPU tensors), read with ``weights_only=True``.

    Raises:
        CheckpointError: naming the file, when it is missing, unreadable, not a checkpoint or lacks a key.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "checkpoint file does not exist")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        raise CheckpointError(path, f"not a readable checkpoint (truncated, corrupt or not written by equiglass?): {error}") from error
    if not isinstance(content, dict):
        raise CheckpointError(path, f"not an equiglass checkpoint: holds a {type(content).__name__}, not a dict")
    missing = [key for key in RESERVED_KEYS if key not in content]
    if missing:
        raise CheckpointError(path, f"not an equiglass checkpoint: lacks {missing}")
    if not isinstance(content["format"], int) or content["format"] > CHECKPOINT_FORMAT:
        raise CheckpointError(path, f"checkpoint format {content['format']!r} is not one this equiglass reads "
                                    f"(1 to {CHECKPOINT_FORMAT})")
    if isinstance(content["data"], Mapping):
        content["data"] = {**DATA_DEFAULTS, **content["data"]}
    for holder in (content, content.get("config")):  # the model, and the run config of a last.pt
        if isinstance(holder, dict) and isinstance(holder.get("model"), Mapping):
            holder["model"] = with_former_defaults(holder["model"])
    check_data_section(content["data"], path)
    return content


def read_resume_checkpoint(path: str | Path) -> dict[str, Any]:
    """The content of a ``last.pt`` to resume training from: :func:`read_checkpoint`, plus the
    training state (:data:`RESUME_KEYS`) that only :mod:`equiglass.training.loop` writes there.

    Raises:
        CheckpointError: naming the file, as :func:`read_checkpoint`, or when the training state is missing
            (e.g. a ``best.pt`` copied over ``last.pt``).
    """
    content = read_checkpoint(path)
    missing = [key for key in RESUME_KEYS if key not in content]
    if missing:
        raise CheckpointError(path, f"lacks the training state {missing} needed to resume (a {BEST_CHECKPOINT} "
                                    f"or another checkpoint copied over {LAST_CHECKPOINT}?): rerun with --no-resume")
    return content


def check_data_section(section: Any, path: str | Path) -> None:
    """Check a checkpoint's ``data`` section: every :data:`DATA_KEYS` entry present and valid.

    Raises:
        CheckpointError: naming ``path`` and the bad entry.
    """
    if not isinstance(section, Mapping):
        raise CheckpointError(path, f"the checkpoint's data section is a {type(section).__name__}, not a dict")
    missing = [key for key in DATA_KEYS if key not in section]
    if missing:
        raise CheckpointError(path, f"the checkpoint's data section lacks {missing}")
    cutoff = section["cutoff"]
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) or not (math.isfinite(cutoff) and cutoff > 0):
        raise CheckpointError(path, f"the checkpoint's data cutoff must be a positive number, got {cutoff!r}")
    if section["positions"] not in POSITION_FIELDS:
        raise CheckpointError(path, f"the checkpoint's data positions must be one of {sorted(POSITION_FIELDS)}, "
                                    f"got {section['positions']!r}")
    for key in ("with_potential_energy", "with_is_displacement"):
        if not isinstance(section[key], bool):
            raise CheckpointError(path, f"the checkpoint's data {key} must be true or false, got {section[key]!r}")
    types = section["particle_types"]
    if not isinstance(types, (list, tuple)) or not types or any(kind not in (0, 1) for kind in types):
        raise CheckpointError(path, f"the checkpoint's data particle_types must list species among 0 and 1, got {types!r}")


def checkpoint_path(path_or_run_dir: str | Path) -> Path:
    """A checkpoint file itself, or the ``best.pt`` of a run directory."""
    path = Path(path_or_run_dir)
    return path / BEST_CHECKPOINT if path.is_dir() else path


@dataclass
class TrainedModel:
    """A trained model with everything needed to use it.

    Attributes:
        model: the network, in eval mode (on the CPU unless moved).
        model_section: ``kind`` and hyper-parameters.
        data_section: ``cutoff``, ``positions``, ``with_potential_energy``, ``with_is_displacement``, ``particle_types``
            (and ``dataset`` when trained by :mod:`equiglass.training.loop`).
        times: [T] float64 time points of the outputs (LJ units).
        normalisation: ``mean`` and ``std`` float64, [T] or per species [K, T]: the model's raw
            output is ``(propensity - mean) / std``.
        path: the checkpoint file it was loaded from.
        extra: the checkpoint's other entries (``epoch``, ``metrics``, ...).
    """

    model: nn.Module
    model_section: dict[str, Any]
    data_section: dict[str, Any]
    times: np.ndarray
    normalisation: dict[str, np.ndarray]
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        """Where the model's tensors live."""
        tensor = next(iter(self.model.state_dict().values()))
        return tensor.device

    @torch.no_grad()
    def predict(self, data: Data) -> torch.Tensor:
        """Propensity ``[N, T]`` of every particle of ``data`` (a graph or batch as
        :meth:`graphs` builds them), in physical units, float32, on the device of ``data.pos``.

        ``data`` is not modified (it is copied when it must move to the model's device).
        """
        device = self.device
        inputs = data if data.pos.device == device else data.clone().to(device)
        output = self.model(inputs).to(torch.float64)
        mean, std = (of_particles(torch.as_tensor(self.normalisation[key], dtype=torch.float64, device=device),
                                  inputs.types) for key in ("mean", "std"))
        return (output * std + mean).to(torch.float32).to(data.pos.device)

    def graphs(
        self, dataset: str | Path | Dataset, indices: Sequence[int] | np.ndarray | None = None
    ) -> PropensityDataset:
        """Graphs of ``dataset`` (a directory or an opened :class:`Dataset`) built as in training
        (cutoff, positions, potential energy, displacement of :attr:`data_section`); ``indices``: all by default."""
        return PropensityDataset(
            dataset,
            cutoff=float(self.data_section["cutoff"]),
            positions=str(self.data_section["positions"]),
            with_potential_energy=bool(self.data_section["with_potential_energy"]),
            with_is_displacement=bool(self.data_section["with_is_displacement"]),
            indices=indices,
        )

    def num_parameters(self) -> int:
        """Number of trainable parameters (0 for the ridge model, whose weights are buffers)."""
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


def load_checkpoint(path_or_run_dir: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """Load a checkpoint file, or the ``best.pt`` of a run directory, as a :class:`TrainedModel`.

    The model is rebuilt from the ``model`` section with
    :func:`~equiglass.nn.registry.build_model`, its weights loaded, moved to ``device`` and
    put in eval mode.

    Raises:
        CheckpointError: naming the file, when it is missing or corrupt, or its weights do not fit its model section.
    """
    path = checkpoint_path(path_or_run_dir)
    content = read_checkpoint(path)
    times = np.asarray(content["times"], dtype=np.float64)
    try:
        model = build_model(content["model"], len(times))
        model.load_state_dict(content["model_state"])
    except (ValueError, RuntimeError, TypeError, KeyError) as error:
        raise CheckpointError(path, f"the weights do not fit the checkpoint's model section: {error}") from error
    extra = {key: value for key, value in content.items() if key not in RESERVED_KEYS}
    return TrainedModel(
        model=model.to(device).eval(),
        model_section=dict(content["model"]),
        data_section=dict(content["data"]),
        times=times,
        normalisation={key: np.asarray(content["normalisation"][key], dtype=np.float64) for key in ("mean", "std")},
        path=path,
        extra=extra,
    )


def _floats(values: Sequence[float] | np.ndarray | torch.Tensor) -> list[float]:
    """A plain list of Python floats (what a ``weights_only`` checkpoint stores best)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return [float(value) for value in np.asarray(values, dtype=np.float64).reshape(-1)]
