"""Train a propensity model from a run config (:mod:`equiglass.training.config`) into a run directory.

``train(config, run_dir)`` (or ``equiglass train CONFIG [--run-dir DIR] [--no-resume] [--epochs N]``)
leaves in the run directory ``config.toml`` / ``config.json``, ``run.json``, ``metrics.csv``
(one row per epoch: ``lr`` of the epoch's last step, ``wall_s`` cumulative training time,
validation columns empty in epochs without validation) and ``tensorboard/``
(:mod:`equiglass.training.rundir`), and ``last.pt`` (every epoch; resumes training) and
``best.pt`` (best finite validation score, :mod:`equiglass.training.progress`), see
:mod:`equiglass.training.checkpoint`. A fresh run replaces the directory's old checkpoints and
``metrics.csv`` only when its first epoch ends, after the config, data, split and model have
been checked.

The model's registry entry (:mod:`equiglass.nn.registry`) says how it is fitted: by gradient
steps (:func:`fit_network`, here) or in closed form (:mod:`equiglass.training.closed_form`).
The loss and target normalisation are :class:`~equiglass.training.objective.Objective`. For
models with ``use_potential_energy`` (``use_is_displacement``) the energy (the displacement from the
inherent state) is standardised with training-split statistics.

**Neural networks** (``equivariant``, ``bapst``): Adam/AdamW; a learning-rate schedule:
``cosine`` decay per optimiser step (a pure function of the step), ``none``, or ``plateau``
(reduced when the validation score stalls: :class:`~torch.optim.lr_scheduler.ReduceLROnPlateau`
stepped after each validation), the first two after an optional linear warm-up
(``warmup_steps``); gradient-norm clipping; ``batch_size`` configurations per
step in a seeded random order; the kind's random symmetries (``augment``; cube symmetries
for ``bapst``) drawn from the same seeded generator. :func:`take_step` is one optimiser step.
A non-finite loss (checked every step) or model state (checked at the end of every epoch,
before its checkpoints) stops training with an error: it diverged, and ``last.pt`` of the
previous epoch is left as it was.

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
threads). Only ``train.epochs`` (the cosine schedule then follows the new total from the next
step) and ``train.threads`` (a setting of the machine, not of the run) may differ from the
stored config; any other difference is an error. Keys added to
the config schema after a run was made take their defaults when it resumes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch_geometric.data import Batch, Data
from tqdm.auto import tqdm

from equiglass.data.format import load_dataset
from equiglass.errors import ConfigError, TrainingError
from equiglass.nn.registry import Fit, build_model, kind_of
from equiglass.training import distributed
from equiglass.training.checkpoint import BEST_CHECKPOINT, LAST_CHECKPOINT
from equiglass.training.closed_form import fit_closed_form
from equiglass.training.config import RunConfig, TrainConfig, load_config
from equiglass.training.objective import Objective
from equiglass.training.progress import RunProgress
from equiglass.training.rundir import (
    resume_state,
    run_record,
    tensorboard,
    write_config,
    write_record,
)
from equiglass.training.runtime import choose_device, cpu_settings, random_states, seed_everything, set_random_states
from equiglass.training.split import Split, split_graphs
from equiglass.training.transfer import backbone_eval, freeze_backbone, load_backbone

log = logging.getLogger(__name__)


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
            replacing the directory's checkpoints and metrics when its first epoch ends.
        epochs: override ``[train] epochs``.
        progress: show a tqdm progress bar.

    Training seeds (and, on resume, restores) the global torch, numpy and python random
    generators, and sets torch's CPU threads to ``[train] threads`` for its duration.

    Returns:
        The :class:`RunResult`.

    Raises:
        DataError: bad config or data (also propensities beyond float32's range), an unreadable
            ``last.pt``, or a run directory holding a run of another config.
        TrainingError: (naming the run directory) training diverged, or validation never gave
            a finite score.
        ValueError: e.g. ``device = "cuda"`` without CUDA.
    """
    config = config if isinstance(config, RunConfig) else load_config(config)
    if epochs is not None:
        config = config.with_train(epochs=epochs)
    if run_dir is None:
        if config.path is None:
            raise ValueError("run_dir is needed for a config that was not read from a file")
        run_dir = Path("runs") / config.path.stem
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = resume_state(run_dir, config) if resume else None
    start = 0 if state is None else int(state["epoch"])

    with distributed.setup(choose_device(config.train.device)) as parallel, cpu_settings(config.train.threads), \
            tensorboard(run_dir, start, enabled=parallel.is_main) as writer:
        device = parallel.device
        dataset = load_dataset(config.data.dataset)
        split = split_graphs(config, dataset)
        if config.train.time_weights and len(config.train.time_weights) != len(dataset.times):
            raise ConfigError(config.path, f"[train] time_weights has {len(config.train.time_weights)} values, "
                                           f"one per stored time of the dataset is needed ({len(dataset.times)})")
        objective = Objective.from_graphs(split.train, config.data.particle_types, config.train.target_normalisation,
                                          config.train.time_weights)
        seed_everything(config.train.seed)
        model = build_model(config.model, len(dataset.times))
        _set_input_statistics(model, config.model, split.train)
        if config.train.init_from is not None:
            copied = load_backbone(model, config.train.init_from, config.model)
            log.info("%s: backbone (%d tensors) from %s", run_dir, copied, config.train.init_from)
        if config.train.freeze_backbone:
            log.info("%s: backbone frozen, %d parameters trained", run_dir, freeze_backbone(model))
        resolved = config.to_dict()
        record = run_record(config, dataset.directory, split.indices, model, device)
        if parallel.is_main:
            write_config(run_dir, resolved)
            write_record(run_dir, record)

        run = RunProgress(config, run_dir, model, objective, dataset.times.tolist(), writer, parallel,
                          fresh=state is None)
        FITS[kind_of(model).fit](run, split, device, state, progress)
        run.require_best()
        if parallel.is_main:
            write_record(run_dir, {**record, "best_epoch": run.best_epoch, "best_val_pearson_mean": run.best_score})
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


# ------------------------------------------------------------------ networks


def fit_network(
    run: RunProgress, split: Split, device: torch.device, state: dict[str, Any] | None, progress: bool
) -> None:
    """Gradient training for ``config.train.epochs`` epochs, resuming from ``state`` (the content of ``last.pt``).

    Args:
        run: the run's progress (config, model, objective; history and checkpoints).
        split: the training and validation graphs.
        device: where the model trains.
        state: the content of ``last.pt`` to resume from, or None.
        progress: show a tqdm progress bar (rank 0).
    """
    settings = run.config.train
    model = run.model.to(device)
    forward = run.parallel.wrap(model)  # DistributedDataParallel under torchrun, else the model
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
    scaler = grad_scaler(device, settings.precision)
    augmentation = kind_of(model).augmentation if settings.augment else None
    generator = torch.Generator().manual_seed(settings.seed)
    start = 0
    if state is not None:
        start = run.restore(state)
        optimiser.load_state_dict(state["optimiser"])
        scaler.load_state_dict(state.get("scaler", {}))
        if plateau is not None:
            plateau.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        set_random_states(state["random_states"])
        run.write_metrics()
    steps_per_epoch = math.ceil(len(split.train) / settings.batch_size)
    total_steps = settings.epochs * steps_per_epoch

    bar = tqdm(range(start + 1, settings.epochs + 1), desc=run.run_dir.name, unit="epoch",
               initial=start, total=settings.epochs, disable=not (progress and run.parallel.is_main))
    for epoch in bar:
        began = time.perf_counter()
        model.train()
        if settings.freeze_backbone:
            backbone_eval(model)
        losses = []
        order = torch.randperm(len(split.train), generator=generator)
        for step, chosen in enumerate(order.split(settings.batch_size), start=(epoch - 1) * steps_per_epoch):
            if settings.schedule != "plateau":
                for group in optimiser.param_groups:
                    group["lr"] = _learning_rate(settings, step, total_steps)
            lr = optimiser.param_groups[0]["lr"]
            batch = Batch.from_data_list([split.train[int(k)] for k in chosen]).to(device)
            if augmentation is not None:
                batch = augmentation(batch, generator)
            loss = take_step(forward, batch, run.objective, optimiser, scaler, precision=settings.precision,
                             grad_clip=settings.grad_clip, parallel=run.parallel)
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                raise _diverged(run, epoch, f"step {step + 1} of {total_steps}: the loss is {losses[-1]}")
        if not _finite_state(model):
            raise _diverged(run, epoch, "after its last step: the model's parameters or buffers are not finite")
        validate = epoch % settings.eval_every == 0 or epoch == settings.epochs
        scores = run.validate(split.validation, device) if validate else None
        run.wall_s += time.perf_counter() - began
        row = run.row(epoch, float(np.mean(losses)), scores, lr)
        if plateau is not None and scores is not None:
            plateau.step(row["val_pearson_mean"])
        bar.set_postfix(loss=f"{row['train_loss']:.4f}", val_pearson=f"{row['val_pearson_mean']:.4f}")
        run.end_epoch(row, lambda: {
            "optimiser": optimiser.state_dict(),
            "scaler": scaler.state_dict(),
            "scheduler": {} if plateau is None else plateau.state_dict(),
            "generator": generator.get_state(),
            "random_states": random_states(device),
        })


def take_step(
    forward: Callable[[Batch], torch.Tensor],
    batch: Batch,
    objective: Objective,
    optimiser: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    *,
    precision: str = "float32",
    grad_clip: float = 0.0,
    parallel: distributed.Parallel = distributed.SINGLE_PROCESS,
) -> torch.Tensor:
    """One optimiser step on ``batch``, as training takes it.

    This process's share of the batch (:meth:`~equiglass.training.distributed.Parallel.shard_batch`),
    the forward under :func:`mixed_precision` to ``precision``, the objective's loss in float32
    (the global mean under data parallelism), backward through ``scaler``, gradient-norm
    clipping of the optimiser's parameters to ``grad_clip`` (0: none), the update.

    Args:
        forward: the model (or its compiled / DistributedDataParallel wrapper), in train mode.
        batch: the global batch of configurations, on the model's device.
        objective: the loss.
        optimiser: updates the parameters of its single parameter group.
        scaler: :func:`grad_scaler` of the device and precision.
        precision: ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        grad_clip: maximum global gradient norm; 0 does not clip.
        parallel: the data-parallel context.

    Returns:
        The loss, a 0-dim tensor.
    """
    batch = parallel.shard_batch(batch)
    with mixed_precision(batch.pos.device, precision):
        output = forward(batch)
    loss = parallel.global_loss(objective.loss(output.float(), batch), objective.weight(batch))
    optimiser.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(optimiser)
        nn.utils.clip_grad_norm_(optimiser.param_groups[0]["params"], grad_clip)
    scaler.step(optimiser)
    scaler.update()
    return loss


def mixed_precision(device: torch.device, precision: str) -> torch.autocast:
    """:func:`torch.autocast` to ``precision`` on ``device``; disabled for ``"float32"``."""
    lower = precision != "float32"
    return torch.autocast(device.type, dtype=getattr(torch, precision) if lower else None, enabled=lower)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Loss scaling for ``float16`` only (a no-op pass-through otherwise)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "float16")


def _finite_state(model: nn.Module) -> bool:
    """Whether every floating-point parameter and buffer of ``model`` is finite (one device sync)."""
    tensors = [tensor for tensor in model.state_dict().values() if tensor.is_floating_point()]
    return bool(torch.stack([torch.isfinite(tensor).all() for tensor in tensors]).all())


def _diverged(run: RunProgress, epoch: int, problem: str) -> TrainingError:
    """The error of a run that diverged in ``epoch``, naming its run directory and what it keeps."""
    kept = f"{LAST_CHECKPOINT} of epoch {epoch - 1} is kept" if epoch > 1 else "no checkpoint of this run was written"
    return TrainingError(run.run_dir, f"training diverged at epoch {epoch}, {problem}; {kept}: "
                                       "lower [train] lr or set [train] grad_clip")


def _learning_rate(settings: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based) of ``total_steps`` under a schedule
    that is a function of the step: cosine decay or none, times the linear warm-up."""
    warm = min(1.0, (step + 1) / settings.warmup_steps) if settings.warmup_steps else 1.0
    decay = 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps)) if settings.schedule == "cosine" else 1.0
    return settings.lr * warm * decay


def _set_input_statistics(model: nn.Module, model_section: Mapping[str, Any], graphs: Sequence[Data]) -> None:
    """Standardise the energy and displacement inputs of a network whose ``[model]`` section sets
    ``use_potential_energy`` or ``use_is_displacement`` (an equivariant model: its embedding) with
    the training split's statistics (mean and std of the energy, root mean square of ``|d|``). Ridge
    standardises its descriptors itself."""
    embedding = getattr(model, "embedding", None)
    if embedding is None:
        return
    if model_section.get("use_potential_energy", False):
        energy = torch.cat([data.potential_energy.double() for data in graphs])
        embedding.set_energy_statistics(float(energy.mean()), float(energy.std(correction=0)))
    if model_section.get("use_is_displacement", False):
        displacement = torch.cat([data.is_displacement.double() for data in graphs])
        embedding.set_displacement_scale(float(displacement.square().sum(dim=-1).mean().sqrt()))


#: How each registry ``fit`` trains: ``(run, split, device, state, progress) -> None``.
FITS: dict[Fit, Callable[[RunProgress, Split, torch.device, dict[str, Any] | None, bool], None]] = {
    "gradient": fit_network,
    "closed_form": fit_closed_form,
}
