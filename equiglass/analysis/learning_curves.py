"""Learning curves of training runs: training loss and validation Pearson against optimiser steps.

Read from each run directory's ``metrics.csv`` (one row per epoch: ``train_loss``, the
normalised training MSE, 1 for the mean predictor; ``val_pearson_mean``, the validation
score) and ``config.toml`` (training configurations per epoch and batch size give the
optimiser steps of an epoch). Runs fitted in closed form (ridge) have no curve.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from equiglass.nn.registry import model_kind
from equiglass.training.config import load_config

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def learning_curve(run_dir: str | Path) -> dict[str, list[float]] | None:
    """``{"step": [...], "train_loss": [...], "val_pearson": [...]}`` of one run, one entry per
    epoch (steps at the end of each epoch; NaN where an epoch had no validation), or None for a
    run with no epochs (a closed-form fit)."""
    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.toml")
    if model_kind(config.model)[0].fit == "closed_form":
        return None
    n_train = len(json.loads((run_dir / "run.json").read_text())["split"]["train"])
    steps_per_epoch = math.ceil(n_train / config.train.batch_size)
    with open(run_dir / "metrics.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    if not rows:
        return None
    return {
        "step": [int(row["epoch"]) * steps_per_epoch for row in rows],
        "train_loss": [float(row["train_loss"]) for row in rows],
        "val_pearson": [float(row["val_pearson_mean"]) if row["val_pearson_mean"] else math.nan for row in rows],
    }


def learning_curves(run_dirs: Sequence[str | Path], labels: Sequence[str]) -> dict[str, dict[str, list[float]]]:
    """:func:`learning_curve` of each run with one, by label."""
    curves = {label: learning_curve(run_dir) for label, run_dir in zip(labels, run_dirs)}
    return {label: curve for label, curve in curves.items() if curve is not None}


def plot_learning_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], title: str) -> Figure:
    """A matplotlib figure: training loss (left, log scale) and validation Pearson (right) against
    optimiser steps, one line per run (up to 10 runs one colour each, up to 20 with dashed
    second shades), the legend beside the axes."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 4.5))
    loss_axis, pearson_axis = figure.subplots(1, 2)
    palette = colormaps["tab10" if len(curves) <= 10 else "tab20"].colors
    for index, (label, curve) in enumerate(curves.items()):
        style = {"color": palette[index % len(palette)], "label": label,
                 "linestyle": "--" if len(curves) > 10 and index % 2 else "-"}
        loss_axis.plot(curve["step"], curve["train_loss"], **style)
        pearson_axis.plot(curve["step"], curve["val_pearson"], **style)
    loss_axis.set(xlabel="optimiser step", ylabel="training loss (MSE / variance)", yscale="log")
    pearson_axis.set(xlabel="optimiser step", ylabel="validation Pearson (mean over times)")
    pearson_axis.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5))
    figure.suptitle(title)
    figure.set_layout_engine("tight")
    return figure
