"""Kind ``temperatures``: every run trained on every dataset and evaluated on the test
configurations of every dataset: a matrix of Pearson (A) at t ≈ τ_α, the model's output nearest
its training set's τ_α against the target nearest the test set's τ_α (datasets without
``tau_alpha`` in their manifest use their middle time)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from equiglass.data.geometry import particles_of_types
from equiglass.experiments.datasets import tau_alpha_index, temperature_label
from equiglass.experiments.report import pyplot, save_figure

if TYPE_CHECKING:
    from equiglass.experiments.runner import Experiment


def run(experiment: Experiment) -> dict[str, Any]:
    """Every run on every dataset, each evaluated on every dataset's test split at t ≈ τ_α.

    Returns:
        ``labels`` (``T0.56``, ... per dataset), ``matrices`` (run -> [train dataset][test dataset]
        of :func:`cross_pearson`) and ``plot`` (``temperatures.png``).
    """
    from equiglass.training.checkpoint import load_checkpoint

    facts = experiment.facts
    labels = [temperature_label(f) for f in facts]
    tasks = [(f"{name}/{train_label}", experiment.config(name, train_dataset))
             for name, _ in experiment.spec.runs for train_dataset, train_label in zip(experiment.datasets, labels)]
    trained_runs = iter(zip(tasks, experiment.train_all(tasks)))
    matrices: dict[str, list[list[dict[str, float]]]] = {}
    for name, _ in experiment.spec.runs:
        matrix = []
        for train_facts, ((_, config), run_dir) in zip(facts, trained_runs):
            trained = load_checkpoint(run_dir)
            output = tau_alpha_index(train_facts)
            matrix.append([
                cross_pearson(trained, config, test_facts, output, tau_alpha_index(test_facts))
                for test_facts in facts
            ])
        matrices[name] = matrix
    plot = experiment.out / "temperatures.png"
    plot_matrices(matrices, labels, plot)
    return {"labels": labels, "matrices": matrices, "plot": plot.name}


def cross_pearson(trained: Any, config: Any, facts: Mapping[str, Any], output: int, target: int) -> dict[str, float]:
    """Per-configuration Pearson (A) of output ``output`` against target time ``target`` on the
    test configurations (``config``'s split) of the dataset described by ``facts``; mean, std, count,
    and the noise ceiling of those targets (``ceiling``, None where unknown)."""
    from equiglass.analysis.noise_ceiling import dataset_ceiling
    from equiglass.data.format import load_dataset
    from equiglass.metrics import pearson_per_timescale, summarise

    dataset = Path(facts["path"])
    test = config.split_of(facts["configurations"])["test"]
    ceiling = float(dataset_ceiling(load_dataset(dataset), test).values[0, target])
    correlations = []
    for data in trained.graphs(dataset, test):
        mask = data.target_mask.all(dim=1) & particles_of_types(data.types, (0,))
        prediction = trained.predict(data)[:, [output]]
        correlations.append(pearson_per_timescale(prediction, data.y[:, [target]], mask))
    mean, std = summarise(torch.stack(correlations))
    return {"mean": float(mean[0]), "std": float(std[0]), "configurations": len(correlations),
            "output_time": float(trained.times[output]), "target_time": float(facts["times"][target]),
            "ceiling": ceiling if np.isfinite(ceiling) else None}


def plot_matrices(matrices: Mapping[str, list[list[dict[str, float]]]], labels: Sequence[str], path: Path) -> None:
    """One heat map per run: train temperature (rows) × test temperature (columns)."""
    plt = pyplot()
    figure, axes = plt.subplots(1, len(matrices), figsize=(4.2 * len(matrices), 3.8), squeeze=False)
    for ax, (name, matrix) in zip(axes[0], matrices.items()):
        values = np.array([[cell["mean"] for cell in row] for row in matrix])
        image = ax.imshow(values, vmin=0, vmax=max(0.8, float(np.nanmax(values))), cmap="viridis")
        for i, row in enumerate(values):
            for j, value in enumerate(row):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.5 else "black")
        ax.set_xticks(range(len(labels)), labels)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("tested at")
        ax.set_ylabel("trained at")
        ax.set_title(f"{name}: Pearson (A) at t ≈ τ_α", fontsize=10)
        figure.colorbar(image, ax=ax, fraction=0.046)
    figure.tight_layout()
    save_figure(figure, path)


def markdown(results: Mapping[str, Any]) -> list[str]:
    """The ``results.md`` section: one train × test table per run, then the plot."""
    labels = results["labels"]
    lines = []
    for name, matrix in results["matrices"].items():
        lines += [f"## {name}: Pearson (A) at t ≈ τ_α, per configuration, mean ± std over test configurations "
                  "(in parentheses: the noise ceiling of those targets)",
                  "", "| trained at \\ tested at | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        for label, row in zip(labels, matrix):
            lines.append(f"| {label} | " + " | ".join(f"{c['mean']:.3f} ± {c['std']:.3f} ({_ceiling(c)})" for c in row) + " |")
        lines.append("")
    lines.append(f"![temperature matrix]({results['plot']})")
    return lines


def _ceiling(cell: Mapping[str, Any]) -> str:
    """``ceiling 0.918`` or ``ceiling unknown`` (older results have no ceiling)."""
    return "ceiling unknown" if cell.get("ceiling") is None else f"ceiling {cell['ceiling']:.3f}"
