"""Train a propensity model from a run config (:mod:`equiglass.training.config`) into a run directory.

``train(config, run_dir)`` (or ``equiglass train CONFIG [--run-dir DIR] [--no-resume] [--epochs N]``)
leaves in the run directory

* ``config.toml`` / ``config.json``: the resolved config (absolute dataset path, every
  default and hyper-parameter spelled out); ``config.toml`` is itself a valid run config;
* ``run.json``: seed, versions (python, torch, e3nn, torch-geometric, equiglass), dataset
  directory, path and sha256 of its manifest, the split (configuration indices), the
  parameter count, the metric's definition, and once finished the best epoch and score;
* ``metrics.csv``: one row per epoch: ``epoch, train_loss, val_loss, val_pearson_mean,
  val_pearson_t0 .. val_pearson_t{T-1}, lr, wall_s`` (validation columns empty in epochs
  without validation; ``lr`` of the epoch's last step; ``wall_s`` cumulative training time);
* ``last.pt`` (every epoch; resumes training) and ``best.pt`` (best validation score), see
  :mod:`equiglass.training.checkpoint`;
* ``tensorboard/``: the same per-epoch numbers as TensorBoard events, only when the
  ``tensorboard`` package is installed (it is optional; a log line says when it is absent).

**Objective.** Targets are normalised per timescale with the mean and standard deviation
of the training split (loss particles only), stored in the checkpoints; the loss is the
mean squared error of the normalised propensity over every timescale and every particle
of ``[data] particle_types`` (type A by default) whose target exists. For models with
``use_potential_energy`` the energy is standardised with training-split statistics.

**Validation score**: for each validation configuration, the Pearson correlation over the
loss particles at each timescale (per-configuration convention, :mod:`equiglass.metrics`),
averaged over configurations, then over timescales (``val_pearson_mean``). ``best.pt`` is
the epoch of the highest score.

**Neural networks** (``equivariant``, ``bapst``): Adam/AdamW; a learning-rate schedule:
``cosine`` decay per optimiser step (a pure function of the step), ``none``, or ``plateau``
(reduced when the validation score stalls: :class:`~torch.optim.lr_scheduler.ReduceLROnPlateau`
stepped after each validation); gradient-norm clipping; ``batch_size`` configurations per
step in a seeded random order; random cube symmetries for ``bapst`` (``augment``) drawn
from the same seeded generator.

**Ridge**: closed-form fits for every ``alphas`` value on the training split, α chosen by the
validation score; one "epoch"; ``best.pt`` and ``last.pt`` hold the same model.

**Transfer** (:mod:`equiglass.training.transfer`): ``init_from`` starts a fresh run from another run's
backbone with a freshly initialised decoder; ``freeze_backbone`` then trains only the
decoder, the backbone's normalisation layers kept on their stored statistics.

**Compilation** (``compile = true``): the training steps run the model through
``torch.compile(dynamic=True)`` (one compilation for every graph size, paid in the first
step); validation and checkpoints use the eager model, which shares its parameters.

**Mixed precision** (``precision = "bfloat16"`` or ``"float16"``): the training steps'
forward passes run under :func:`torch.autocast` (matrix products in the lower precision,
parameters, optimiser and loss in float32; ``float16`` with a
:class:`torch.amp.GradScaler`); validation, test and checkpoints stay in float32. Off by
default: see benchmarks/README.md for its speed and its effect on the demo's Pearson.

**Data parallel**: launched by ``torchrun`` (``WORLD_SIZE > 1``), each process trains on its
share of every global batch of ``batch_size`` configurations, with DistributedDataParallel;
rank 0 writes the run directory (see :mod:`equiglass.training.distributed`).

**Resume.** With ``resume=True`` (default) a run directory holding ``last.pt`` continues
from it: model, optimiser, plateau scheduler, data-order generator, torch/numpy/python
random states, epoch, best score and history are restored, so on the CPU a run killed at
any point and resumed ends bit-identical to an uninterrupted one (same machine, same
threads). Only ``train.epochs`` may differ from the stored config (the cosine schedule then
follows the new total from the next step); any other difference is an error. Keys added to
the config schema after a run was made take their defaults when it resumes.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import logging
import math
import platform
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch_geometric.data import Batch, Data
from tqdm.auto import tqdm

from equiglass import __version__
from equiglass.training import distributed
from equiglass.training.runtime import retain_freed_memory
from equiglass.training.checkpoint import BEST_CHECKPOINT, LAST_CHECKPOINT, read_checkpoint, save_checkpoint
from equiglass.training.config import RunConfig, config_from_dict, load_config, to_toml
from equiglass.data.format import MANIFEST_NAME, atomic_write, load_dataset
from equiglass.errors import ConfigError
from equiglass.data.graphs import PropensityDataset
from equiglass.metrics import PER_CONFIGURATION, pearson_per_timescale, summarise
from equiglass.nn.bapst_gnn import cube_symmetry_augmentation
from equiglass.nn.equivariant import EquivariantPropensityModel
from equiglass.nn.registry import build_model
from equiglass.nn.ridge import DescriptorRidge
from equiglass.training.transfer import backbone_eval, freeze_backbone, load_backbone

log = logging.getLogger(__name__)

#: Files of a run directory.
CONFIG_TOML, CONFIG_JSON, RUN_RECORD, METRICS_CSV = "config.toml", "config.json", "run.json", "metrics.csv"
#: Folder of the TensorBoard event files in a run directory (written only when tensorboard is installed).
TENSORBOARD_DIR = "tensorboard"
#: What ``val_pearson_*`` means, recorded in ``run.json``.
METRIC_DEFINITION = (
    f"{PER_CONFIGURATION} Pearson correlation over the loss particle types of each validation configuration, "
    "averaged over configurations (val_pearson_t<k>), then over timescales (val_pearson_mean)"
)


@dataclass(frozen=True)
class RunResult:
    """What :func:`train` left behind.

    Attributes:
        run_dir: the run directory.
        best: path of ``best.pt``.
        last: path of ``last.pt``.
        epochs: epochs completed (the configured number).
        resumed_from: the epoch this call started from (0: from scratch).
        best_epoch: epoch of ``best.pt``.
        best_score: its validation score (mean Pearson over timescales, per-configuration convention).
        history: the rows of ``metrics.csv``.
    """

    run_dir: Path
    best: Path
    last: Path
    epochs: int
    resumed_from: int
    best_epoch: int
    best_score: float
    history: list[dict[str, float]]


@dataclass
class Split:
    """The graphs of one run: training and validation graphs, indices of every part."""

    indices: dict[str, np.ndarray]
    train: PropensityDataset
    validation: PropensityDataset


@dataclass
class Objective:
    """Target normalisation and loss-particle selection shared by the loss and the validation.

    Attributes:
        mean: [T] float64 mean of the training targets of the loss particles.
        std: [T] float64 standard deviation of the same.
        particle_types: species in the loss and metric.
    """

    mean: torch.Tensor
    std: torch.Tensor
    particle_types: tuple[int, ...]

    @classmethod
    def from_graphs(cls, graphs: Sequence[Data], particle_types: Sequence[int]) -> Objective:
        """Statistics over the loss particles of ``graphs`` (the training split).

        Raises:
            ValueError: a timescale whose training targets are constant or absent.
        """
        particle_types = tuple(particle_types)
        y = torch.cat([
            torch.where(_target_mask(data, particle_types), data.y.double(), torch.nan) for data in graphs
        ])
        count = (~y.isnan()).sum(dim=0)
        mean = y.nansum(dim=0) / count
        std = (((y - mean) ** 2).nansum(dim=0) / count).sqrt()
        if not torch.all(std > 0):
            bad = torch.nonzero(~(std > 0)).flatten().tolist()
            raise ValueError(f"training targets are constant (or absent) at timescale(s) {bad}")
        return cls(mean, std, particle_types)

    def particles(self, data: Data) -> torch.Tensor:
        """[N] bool: particles of the loss types."""
        return _particles(data, self.particle_types)

    def mask(self, data: Data) -> torch.Tensor:
        """[N, T] bool: loss particles where a target exists."""
        return _target_mask(data, self.particle_types)

    def normalised(self, data: Data) -> torch.Tensor:
        """[N, T] normalised targets of ``data``, in the dtype of ``data.y``."""
        mean, std = self.mean.to(data.y), self.std.to(data.y)
        return (data.y - mean) / std

    def loss(self, output: torch.Tensor, data: Data) -> torch.Tensor:
        """Mean squared error of ``output`` [N, T] against the normalised targets over :meth:`mask`."""
        mask = self.mask(data)
        return ((output - self.normalised(data).to(output)) ** 2)[mask].mean()

    def as_dict(self) -> dict[str, list[float]]:
        """``mean`` and ``std`` as lists, for a checkpoint."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


# ------------------------------------------------------------------ entry point


def train(
    config: str | Path | RunConfig,
    run_dir: str | Path | None = None,
    resume: bool = True,
    epochs: int | None = None,
    *,
    progress: bool = True,
) -> RunResult:
    """Train the model of ``config`` into ``run_dir`` (see the module docstring).

    Args:
        config: a TOML run config file or a loaded :class:`~equiglass.training.config.RunConfig`.
        run_dir: the run directory; default ``runs/<config file stem>``.
        resume: continue from ``run_dir/last.pt`` if present; False starts afresh,
            replacing the directory's checkpoints and metrics.
        epochs: override ``[train] epochs``.
        progress: show a tqdm progress bar.

    Training seeds (and, on resume, restores) the global torch, numpy and python random
    generators, and sets torch's CPU threads to ``[train] threads`` for its duration.

    Returns:
        The :class:`RunResult`.

    Raises:
        DataError: bad config or data, an unreadable ``last.pt``, or a run directory holding
            a run of another config.
        ValueError: e.g. ``device = "cuda"`` without CUDA.
    """
    config = config if isinstance(config, RunConfig) else load_config(config)
    if epochs is not None:
        config = config.with_epochs(epochs)
    if run_dir is None:
        if config.path is None:
            raise ValueError("run_dir is needed for a config that was not read from a file")
        run_dir = Path("runs") / config.path.stem
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = _resume_state(run_dir, config) if resume else None
    if state is None:
        for name in (LAST_CHECKPOINT, BEST_CHECKPOINT, METRICS_CSV):
            (run_dir / name).unlink(missing_ok=True)
    start = 0 if state is None else int(state["epoch"])

    with distributed.setup(_device(config.train.device)) as parallel, _cpu_settings(config.train.threads), \
            _tensorboard(run_dir / TENSORBOARD_DIR, start, enabled=parallel.is_main) as tensorboard:
        device = parallel.device
        dataset = load_dataset(config.data.dataset)
        split = _split(config, dataset)
        objective = Objective.from_graphs(split.train, config.data.particle_types)
        _seed_everything(config.train.seed)
        model = build_model(config.model, len(dataset.times))
        _set_energy_statistics(model, split.train)
        if config.train.init_from is not None:
            copied = load_backbone(model, config.train.init_from, config.model)
            log.info("%s: backbone (%d tensors) from %s", run_dir, copied, config.train.init_from)
        if config.train.freeze_backbone:
            log.info("%s: backbone frozen, %d parameters trained", run_dir, freeze_backbone(model))
        resolved = config.to_dict()
        record = _run_record(config, dataset.directory, split, model, device)
        if parallel.is_main:
            atomic_write(run_dir / CONFIG_TOML, lambda stream: stream.write(to_toml(resolved)), binary=False)
            atomic_write(run_dir / CONFIG_JSON, lambda stream: stream.write(json.dumps(resolved, indent=2) + "\n"), binary=False)
            _write_json(run_dir / RUN_RECORD, record)

        run = _Run(config, run_dir, model, objective, dataset.times.tolist(), tensorboard, parallel)
        if isinstance(model, DescriptorRidge):
            run.fit_ridge(split, state)
        else:
            run.fit_network(split, device, state, progress)
        if parallel.is_main:
            _write_json(run_dir / RUN_RECORD, {**record, "best_epoch": run.best_epoch, "best_val_pearson_mean": run.best_score})
    log.info("%s: best epoch %d, validation mean Pearson %.4f", run_dir, run.best_epoch, run.best_score)
    return RunResult(
        run_dir,
        run_dir / BEST_CHECKPOINT,
        run_dir / LAST_CHECKPOINT,
        run.history[-1]["epoch"] if run.history else 0,
        start,
        run.best_epoch,
        run.best_score,
        run.history,
    )


# ------------------------------------------------------------------ one run


class _Run:
    """The mutable state of a training run and the files it writes."""

    def __init__(
        self,
        config: RunConfig,
        run_dir: Path,
        model: nn.Module,
        objective: Objective,
        times: list[float],
        tensorboard: Any | None,
        parallel: distributed.Parallel = distributed.SINGLE_PROCESS,
    ):
        self.config, self.run_dir, self.model, self.objective, self.times = config, run_dir, model, objective, times
        self.tensorboard, self.parallel = tensorboard, parallel
        self.history: list[dict[str, float]] = []
        self.best_epoch = 0
        self.best_score = -math.inf
        self.wall_s = 0.0

    # ---------------------------------------------------------------- networks

    def fit_network(self, split: Split, device: torch.device, state: dict[str, Any] | None, progress: bool) -> None:
        """Gradient training for ``config.train.epochs`` epochs, resuming from ``state``."""
        settings = self.config.train
        model = self.model.to(device)
        forward = self.parallel.wrap(model)  # DistributedDataParallel under torchrun, else the model
        if settings.compile:
            forward = torch.compile(forward, dynamic=True)
        optimiser_class = torch.optim.AdamW if settings.optimiser == "adamw" else torch.optim.Adam
        trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
        optimiser = optimiser_class(trainable, lr=settings.lr, weight_decay=settings.weight_decay)
        plateau = (
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimiser, mode="max", factor=settings.plateau_factor, patience=settings.plateau_patience
            )
            if settings.schedule == "plateau"
            else None
        )
        # loss scaling for float16 only (a no-op pass-through otherwise)
        scaler = torch.amp.GradScaler(device.type, enabled=settings.precision == "float16")
        generator = torch.Generator().manual_seed(settings.seed)
        start = 0
        if state is not None:
            start = self._restore(state)
            optimiser.load_state_dict(state["optimiser"])
            scaler.load_state_dict(state.get("scaler", {}))
            if plateau is not None:
                plateau.load_state_dict(state["scheduler"])
            generator.set_state(state["generator"])
            _set_random_states(state["random_states"])
        steps_per_epoch = math.ceil(len(split.train) / settings.batch_size)
        total_steps = settings.epochs * steps_per_epoch
        self._write_metrics()

        bar = tqdm(range(start + 1, settings.epochs + 1), desc=self.run_dir.name, unit="epoch",
                   initial=start, total=settings.epochs, disable=not (progress and self.parallel.is_main))
        for epoch in bar:
            began = time.perf_counter()
            model.train()
            if settings.freeze_backbone:
                backbone_eval(model)
            losses = []
            order = torch.randperm(len(split.train), generator=generator)
            for step, chosen in enumerate(order.split(settings.batch_size), start=(epoch - 1) * steps_per_epoch):
                if settings.schedule == "cosine":
                    for group in optimiser.param_groups:
                        group["lr"] = _cosine_learning_rate(settings.lr, step, total_steps)
                lr = optimiser.param_groups[0]["lr"]
                batch = Batch.from_data_list([split.train[int(k)] for k in chosen]).to(device)
                if settings.augment:
                    batch = cube_symmetry_augmentation(batch, generator)
                batch = self.parallel.shard_batch(batch)
                with mixed_precision(device, settings.precision):
                    output = forward(batch)
                loss = self.parallel.global_loss(self.objective.loss(output.float(), batch), self.objective.mask(batch).sum())
                optimiser.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if settings.grad_clip > 0:
                    scaler.unscale_(optimiser)
                    nn.utils.clip_grad_norm_(trainable, settings.grad_clip)
                scaler.step(optimiser)
                scaler.update()
                losses.append(loss.item())
            validate = epoch % settings.eval_every == 0 or epoch == settings.epochs
            scores = self._validate(split.validation, device) if validate else None
            self.wall_s += time.perf_counter() - began
            row = self._row(epoch, float(np.mean(losses)), scores, lr)
            if plateau is not None and scores is not None:
                plateau.step(row["val_pearson_mean"])
            bar.set_postfix(loss=f"{row['train_loss']:.4f}", val_pearson=f"{row['val_pearson_mean']:.4f}")
            self._end_epoch(row, lambda: {
                "optimiser": optimiser.state_dict(),
                "scaler": scaler.state_dict(),
                "scheduler": {} if plateau is None else plateau.state_dict(),
                "generator": generator.get_state(),
                "random_states": _random_states(device),
            })

    # ---------------------------------------------------------------- ridge

    def fit_ridge(self, split: Split, state: dict[str, Any] | None) -> None:
        """Closed-form fits with every α; α of the best validation score (one epoch)."""
        if state is not None:
            self._restore(state)
            return
        began = time.perf_counter()
        model: DescriptorRidge = self.model
        train_views, validation_views = (_with_descriptors(graphs, model) for graphs in (split.train, split.validation))
        alpha, alpha_scores = model.select_alpha(
            [self._normalised_copy(data) for data in train_views],
            [self._normalised_copy(data) for data in validation_views],
            self.config.train.alphas,
            self.objective.particle_types,
        )
        train_loss = float(np.mean([self.objective.loss(model(data), data).item() for data in train_views]))
        scores = self._validate(validation_views, torch.device("cpu"))
        self.wall_s = time.perf_counter() - began
        log.info("%s: ridge alpha %g chosen; validation scores %s", self.run_dir, alpha, alpha_scores)
        row = self._row(1, train_loss, scores, math.nan)
        self._end_epoch(row, lambda: {"alpha": alpha, "alpha_scores": {str(a): s for a, s in alpha_scores.items()}})

    def _normalised_copy(self, data: Data) -> Data:
        """A shallow copy of ``data`` whose ``y`` holds the normalised targets."""
        out = copy.copy(data)
        out.y = self.objective.normalised(data)
        return out

    # ---------------------------------------------------------------- shared

    @torch.no_grad()
    def _validate(self, graphs: Sequence[Data], device: torch.device) -> tuple[float, torch.Tensor]:
        """Validation loss and ``[T]`` per-configuration mean Pearson correlation, model in eval mode."""
        self.model.eval()
        self.parallel.broadcast_buffers(self.model)  # rank 0's BatchNorm statistics, as saved
        losses, correlations = [], []
        for data in self.parallel.shard(graphs):
            data = data if device.type == "cpu" else data.clone().to(device)
            output = self.model(data)
            losses.append(self.objective.loss(output, data).item())
            particles = self.objective.particles(data) & data.target_mask.all(dim=1)
            correlations.append(pearson_per_timescale(output, data.y, particles).cpu())
        losses, correlations = self.parallel.gather(losses, correlations)
        return float(np.mean(losses)), summarise(torch.stack(correlations))[0]

    def _row(self, epoch: int, train_loss: float, scores: tuple[float, torch.Tensor] | None, lr: float) -> dict[str, float]:
        """One ``metrics.csv`` row (NaN for what was not measured)."""
        per_time = torch.full((len(self.times),), math.nan, dtype=torch.float64) if scores is None else scores[1]
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": math.nan if scores is None else scores[0],
            "val_pearson_mean": float(per_time.mean()),
        }
        row.update({f"val_pearson_t{k}": float(value) for k, value in enumerate(per_time)})
        return {**row, "lr": lr, "wall_s": self.wall_s}

    def _end_epoch(self, row: dict[str, float], resume_state: Callable[[], dict[str, Any]]) -> None:
        """Record ``row``; write ``best.pt`` if the score improved, then ``last.pt``, then ``metrics.csv``
        (and the row to TensorBoard, if installed).

        ``resume_state()`` gives the kind-specific entries of ``last.pt``.
        """
        self.history.append(row)
        if self.tensorboard is not None:
            for key, value in row.items():
                if key != "epoch" and not math.isnan(value):
                    self.tensorboard.add_scalar(key, value, int(row["epoch"]))
            self.tensorboard.flush()
        score = row["val_pearson_mean"]
        if self.best_epoch == 0 or (not math.isnan(score) and score > self.best_score):
            self.best_epoch, self.best_score = int(row["epoch"]), score
            self._save(BEST_CHECKPOINT, {"epoch": int(row["epoch"]), "metrics": row})
        self._save(LAST_CHECKPOINT, {
            "epoch": int(row["epoch"]),
            "metrics": row,
            "history": self.history,
            "best_epoch": self.best_epoch,
            "best_score": self.best_score,
            "wall_s": self.wall_s,
            **resume_state(),
        })
        self._write_metrics()

    def _save(self, name: str, extra: dict[str, Any]) -> None:
        if not self.parallel.is_main:
            return
        save_checkpoint(
            self.run_dir / name,
            model=self.model,
            model_section=self.config.model,
            data_section={**self.config.to_dict()["data"], "particle_types": list(self.objective.particle_types)},
            normalisation=self.objective.as_dict(),
            times=self.times,
            extra={"config": self.config.to_dict(), **extra},
        )

    def _restore(self, state: dict[str, Any]) -> int:
        """Load the model and bookkeeping of a ``last.pt``; returns its epoch."""
        self.model.load_state_dict(state["model_state"])
        self.history = list(state["history"])
        self.best_epoch, self.best_score = int(state["best_epoch"]), float(state["best_score"])
        self.wall_s = float(state["wall_s"])
        return int(state["epoch"])

    def _write_metrics(self) -> None:
        """Rewrite ``metrics.csv`` from the history (so it always agrees with ``last.pt``); rank 0 only."""
        if not self.parallel.is_main:
            return
        columns = ["epoch", "train_loss", "val_loss", "val_pearson_mean",
                   *(f"val_pearson_t{k}" for k in range(len(self.times))), "lr", "wall_s"]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in self.history:
            writer.writerow({key: "" if isinstance(value, float) and math.isnan(value) else value for key, value in row.items()})
        atomic_write(self.run_dir / METRICS_CSV, lambda stream: stream.write(text.getvalue()), binary=False)


# ------------------------------------------------------------------ helpers


def _particles(data: Data, particle_types: tuple[int, ...]) -> torch.Tensor:
    """[N] bool: particles of ``particle_types``."""
    return torch.isin(data.types, torch.as_tensor(particle_types, device=data.types.device))


def _target_mask(data: Data, particle_types: tuple[int, ...]) -> torch.Tensor:
    """[N, T] bool: particles of ``particle_types`` where a target exists."""
    return _particles(data, particle_types)[:, None] & data.target_mask


def _resume_state(run_dir: Path, config: RunConfig) -> dict[str, Any] | None:
    """The content of ``run_dir/last.pt`` if present and of the same config (epochs aside), else None.

    Raises:
        DataError: ``last.pt`` is unreadable or belongs to another config.
    """
    path = run_dir / LAST_CHECKPOINT
    if not path.is_file():
        return None
    state = read_checkpoint(path)
    # resolved again, so that keys added to the config schema since the run was made take their defaults
    stored = config_from_dict(state["config"], path).with_epochs(config.train.epochs).to_dict()
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


def _split(config: RunConfig, dataset: Any) -> Split:
    """Split the configurations and open the training and validation graphs."""
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


def _set_energy_statistics(model: nn.Module, graphs: Sequence[Data]) -> None:
    """Standardise an equivariant model's energy input with the training split's statistics."""
    if isinstance(model, EquivariantPropensityModel) and model.config.use_potential_energy:
        energy = torch.cat([data.potential_energy.double() for data in graphs])
        model.embedding.set_energy_statistics(float(energy.mean()), float(energy.std(correction=0)))


def _with_descriptors(graphs: Sequence[Data], model: DescriptorRidge) -> list[Data]:
    """Shallow copies of ``graphs`` carrying their descriptors (computed once, used by every α)."""
    out = []
    for data in graphs:
        view = copy.copy(data)
        view.descriptors = model.descriptors(data)
        out.append(view)
    return out


def _cosine_learning_rate(base: float, step: int, total_steps: int) -> float:
    """The cosine-decayed learning rate of optimiser step ``step`` (0-based) of ``total_steps``."""
    return 0.5 * base * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


def mixed_precision(device: torch.device, precision: str) -> torch.autocast:
    """:func:`torch.autocast` to ``precision`` on ``device``; disabled for ``"float32"``."""
    lower = precision != "float32"
    return torch.autocast(device.type, dtype=getattr(torch, precision) if lower else None, enabled=lower)


def _device(name: str) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("[train] device = 'cuda' but no CUDA device is available")
    return torch.device(name)


@contextmanager
def _tensorboard(log_dir: Path, start: int, enabled: bool = True) -> Iterator[Any | None]:
    """A TensorBoard ``SummaryWriter`` into ``log_dir`` if ``enabled`` and tensorboard is installed, else None.

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
    writer = SummaryWriter(str(log_dir), purge_step=start + 1)
    try:
        yield writer
    finally:
        writer.close()


@contextmanager
def _cpu_settings(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch CPU threads (None: unchanged) and deterministic algorithms,
    restoring both afterwards; and with glibc's ``malloc`` keeping freed memory for the next
    step (:func:`~equiglass.training.runtime.retain_freed_memory`, process-wide and lasting).

    Deterministic algorithms: with several CPU threads the backward of an index (``x[sender]``)
    otherwise accumulates in a thread-dependent order, and two identical runs of the Bapst GNN
    drift apart from the first epoch (measured: validation Pearson 0.045 vs 0.058 after one
    epoch). ``warn_only`` keeps CUDA ops without a deterministic version usable.
    """
    previous = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if threads is not None:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    retain_freed_memory()
    try:
        yield
    finally:
        torch.set_num_threads(previous)
        torch.use_deterministic_algorithms(previous_deterministic, warn_only=previous_warn_only)


def _seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators (model initialisation)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _random_states(device: torch.device) -> dict[str, Any]:
    """The global random states, as tensors and primitives (``weights_only`` checkpoints)."""
    name, key, position, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (name, key.tolist(), position, has_gauss, gauss),
        "python": random.getstate(),
    }
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_random_states(states: dict[str, Any]) -> None:
    """Restore what :func:`_random_states` saved."""
    torch.set_rng_state(states["torch"])
    name, key, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, np.asarray(key, dtype=np.uint32), position, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


def _run_record(config: RunConfig, dataset: Path, split: Split, model: nn.Module, device: torch.device) -> dict[str, Any]:
    """The content of ``run.json``."""
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
        "manifest_sha256": hashlib.sha256((dataset / MANIFEST_NAME).read_bytes()).hexdigest(),
        "split": {name: indices.tolist() for name, indices in split.indices.items()},
        "model_kind": config.kind,
        "n_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "metric": METRIC_DEFINITION,
    }


def _write_json(path: Path, content: dict[str, Any]) -> None:
    atomic_write(path, lambda stream: stream.write(json.dumps(content, indent=2) + "\n"), binary=False)
