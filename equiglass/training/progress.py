"""The progress of a training run: its history, best epoch and score, training time, and
what ends each epoch (validation, the ``metrics.csv`` row, ``best.pt``, ``last.pt``).

**Validation score**: for each validation configuration, the Pearson correlation over the
loss particles at each timescale (per-configuration convention, :mod:`equiglass.metrics`),
averaged over configurations, then over timescales (``val_pearson_mean``). ``best.pt`` is
the epoch of the highest finite score: an epoch without validation (NaN) or whose score is
NaN (a constant prediction, validation configurations without loss particles) is never best,
and a run whose validation never gives a finite score is an error (:meth:`RunProgress.require_best`).

A fresh run replaces the ``best.pt``, ``last.pt`` and ``metrics.csv`` that its directory may
hold only when its first epoch ends, so that a run failing before (bad data, divergence in
the first epoch) leaves them as they were.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch_geometric.data import Data

from equiglass.errors import TrainingError
from equiglass.metrics import pearson_within_types, summarise
from equiglass.training import distributed
from equiglass.training.checkpoint import BEST_CHECKPOINT, LAST_CHECKPOINT, save_checkpoint
from equiglass.training.config import RunConfig
from equiglass.training.objective import Objective
from equiglass.training.rundir import METRICS_CSV, write_metrics

#: The files of a run directory that a fresh run replaces, in the order it deletes them (``last.pt``
#: first: a directory is never resumed from a run whose other files are gone).
RUN_FILES = (LAST_CHECKPOINT, BEST_CHECKPOINT, METRICS_CSV)


class RunProgress:
    """The mutable state of a training run and the files it writes each epoch.

    Attributes:
        config, run_dir, model, objective: the run's config, directory, model and objective.
        times: the dataset's timescales (one ``val_pearson_t<k>`` column each).
        tensorboard: a ``SummaryWriter`` or None.
        parallel: the data-parallel context (rank 0 writes the files).
        history: the rows of ``metrics.csv`` so far.
        best_epoch, best_score: epoch and validation score of ``best.pt`` (0 and -inf before any).
        wall_s: cumulative training time, seconds.
        fresh: the run starts from scratch; its first :meth:`end_epoch` deletes the directory's
            old :data:`RUN_FILES` before writing its own.
    """

    def __init__(
        self,
        config: RunConfig,
        run_dir: Path,
        model: nn.Module,
        objective: Objective,
        times: list[float],
        tensorboard: Any | None,
        parallel: distributed.Parallel = distributed.SINGLE_PROCESS,
        *,
        fresh: bool,
    ):
        self.config, self.run_dir, self.model, self.objective, self.times = config, run_dir, model, objective, times
        self.tensorboard, self.parallel, self.fresh = tensorboard, parallel, fresh
        self.history: list[dict[str, float]] = []
        self.best_epoch = 0
        self.best_score = -math.inf
        self.wall_s = 0.0

    @torch.no_grad()
    def validate(self, graphs: Sequence[Data], device: torch.device) -> tuple[float, torch.Tensor]:
        """Validation loss and ``[T]`` per-configuration mean Pearson correlation, model in eval mode."""
        self.model.eval()
        self.parallel.broadcast_buffers(self.model)  # rank 0's BatchNorm statistics, as saved
        losses, correlations = [], []
        for data in self.parallel.shard(graphs):
            data = data if device.type == "cpu" else data.clone().to(device)
            output = self.model(data)
            losses.append(self.objective.loss(output, data).item())
            with_targets = data.target_mask.all(dim=1)
            correlations.append(pearson_within_types(output, data.y, data.types, self.objective.particle_types,
                                                     with_targets).cpu())
        losses, correlations = self.parallel.gather(losses, correlations)
        return float(np.mean(losses)), summarise(torch.stack(correlations))[0]

    def row(self, epoch: int, train_loss: float, scores: tuple[float, torch.Tensor] | None, lr: float) -> dict[str, float]:
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

    def end_epoch(self, row: dict[str, float], resume_state: Callable[[], dict[str, Any]]) -> None:
        """Record ``row``; write ``best.pt`` if the score is finite and improved, then ``last.pt``, then
        ``metrics.csv`` (and the row to TensorBoard, if installed). The first epoch of a fresh run
        first deletes the old :data:`RUN_FILES`.

        ``resume_state()`` gives the fit-specific entries of ``last.pt``.
        """
        if self.fresh:
            self._delete_old_run()
        self.history.append(row)
        if self.tensorboard is not None:
            for key, value in row.items():
                if key != "epoch" and not math.isnan(value):
                    self.tensorboard.add_scalar(key, value, int(row["epoch"]))
            self.tensorboard.flush()
        score = row["val_pearson_mean"]
        if math.isfinite(score) and score > self.best_score:
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
        self.write_metrics()

    def restore(self, state: dict[str, Any]) -> int:
        """Load the model and bookkeeping of a ``last.pt``; returns its epoch.

        A NaN best score (kept as best by versions before NaN was never best) counts as none.
        """
        self.model.load_state_dict(state["model_state"])
        self.history = list(state["history"])
        self.best_epoch, self.best_score = int(state["best_epoch"]), float(state["best_score"])
        if math.isnan(self.best_score):
            self.best_epoch, self.best_score = 0, -math.inf
        self.wall_s = float(state["wall_s"])
        return int(state["epoch"])

    def require_best(self) -> None:
        """Check that some validation gave a finite score (so ``best.pt`` exists).

        Raises:
            TrainingError: naming the run directory, when none did; ``last.pt`` is kept and a
                ``best.pt`` (of a run made before NaN was never best) is deleted.
        """
        if self.best_epoch > 0:
            return
        if self.parallel.is_main:
            (self.run_dir / BEST_CHECKPOINT).unlink(missing_ok=True)
        raise TrainingError(self.run_dir, (
            f"validation never gave a finite score in {len(self.history)} epochs (mean Pearson NaN: a constant "
            f"prediction, or validation configurations without particles of types {list(self.objective.particle_types)}); "
            f"no {BEST_CHECKPOINT} written, {LAST_CHECKPOINT} kept"
        ))

    def write_metrics(self) -> None:
        """Rewrite ``metrics.csv`` from the history (so it always agrees with ``last.pt``); rank 0 only."""
        if self.parallel.is_main:
            write_metrics(self.run_dir, self.history, len(self.times))

    def _delete_old_run(self) -> None:
        """Delete the :data:`RUN_FILES` a previous run left in the directory (rank 0), once."""
        if self.parallel.is_main:
            for name in RUN_FILES:
                (self.run_dir / name).unlink(missing_ok=True)
        self.fresh = False

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
