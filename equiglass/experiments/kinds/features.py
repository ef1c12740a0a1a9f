"""Kind ``features``: every run (an equivariant model: the experiment analyses its first
interaction block) trained on the first dataset; on its test configurations, the first layer's
invariants (:mod:`equiglass.analysis.features`) against the structural descriptors of
:mod:`equiglass.data.descriptors`: for every descriptor, the R² of its linear regression on
those features (type-A particles, fitted on half the configurations, scored on the other half),
for the trained model and for the same network untrained."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from equiglass.analysis.features import explained_variance, family_summary, first_layer_invariants
from equiglass.data.geometry import particles_of_types
from equiglass.errors import ConfigError, DataError
from equiglass.experiments.report import pyplot, save_figure

if TYPE_CHECKING:
    from equiglass.experiments.runner import Experiment


def run(experiment: Experiment) -> dict[str, Any]:
    """First-layer invariant features of each trained run against the classic descriptors.

    Returns:
        ``analyses`` (run -> descriptor names, R² trained and untrained per descriptor, channels,
        configurations), ``families`` (run -> :func:`~equiglass.analysis.features.family_summary`)
        and ``plot`` (``features.png``).

    Raises:
        ConfigError: a run is not an equivariant model.
        DataError: fewer than 2 test configurations.
    """
    from equiglass.data.descriptors import DescriptorConfig, graph_descriptors
    from equiglass.nn.registry import build_model
    from equiglass.training.checkpoint import load_checkpoint

    dataset = experiment.datasets[0]
    descriptor_config = DescriptorConfig()
    names = descriptor_config.feature_names
    analyses = {}
    configs = {name: experiment.config(name, dataset) for name, _ in experiment.spec.runs}
    for name, config in configs.items():
        if config.kind != "equivariant":
            raise ConfigError(experiment.spec.path, f"run {name!r}: a features experiment needs equivariant models")
    run_dirs = experiment.train_all(list(configs.items()))
    for (name, config), run_dir in zip(configs.items(), run_dirs):
        trained = load_checkpoint(run_dir)
        graphs = list(trained.graphs(dataset, config.split_of(experiment.facts[0]["configurations"])["test"]))
        if len(graphs) < 2:
            raise DataError(dataset, "a features experiment needs at least 2 test configurations")
        torch.manual_seed(config.train.seed)
        untrained = build_model(trained.model_section, len(trained.times)).eval()
        descriptors = [graph_descriptors(data, descriptor_config) for data in graphs]
        masks = [particles_of_types(data.types, (0,)) for data in graphs]
        scores = {label: explained_variance(first_layer_invariants(model, graphs), descriptors, masks)
                  for label, model in (("trained", trained.model), ("untrained", untrained))}
        analyses[name] = {
            "descriptors": names,
            "r2_trained": scores["trained"].tolist(),
            "r2_untrained": scores["untrained"].tolist(),
            "channels": int(trained.model.config.channels),
            "configurations": len(graphs),
        }
    plot = experiment.out / "features.png"
    plot_features(analyses, plot)
    return {"analyses": analyses, "families": {run: family_summary(a) for run, a in analyses.items()},
            "plot": plot.name}


def plot_features(analyses: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    """Bar chart of the mean R² per descriptor family, trained vs untrained, one panel per run."""
    plt = pyplot()
    figure, axes = plt.subplots(len(analyses), 1, figsize=(8, 3.2 * len(analyses)), squeeze=False)
    for ax, (name, analysis) in zip(axes[:, 0], analyses.items()):
        families = family_summary(analysis)
        positions = np.arange(len(families))
        ax.bar(positions - 0.2, [f["trained"] for f in families.values()], 0.4, label="trained")
        ax.bar(positions + 0.2, [f["untrained"] for f in families.values()], 0.4, label="untrained")
        ax.set_xticks(positions, list(families), rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("R² from layer-1 invariants")
        ax.set_ylim(min(0.0, *(f["trained"] for f in families.values())), 1.0)
        ax.set_title(f"{name}: descriptors explained by the first layer's invariants", fontsize=10)
        ax.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)


def markdown(results: Mapping[str, Any]) -> list[str]:
    """The ``results.md`` section: per run, the mean R² of every descriptor family, then the plot."""
    lines = []
    for name, families in results["families"].items():
        lines += [f"## {name}: R² of each descriptor family from the first layer's invariant features "
                  "(type A, out of sample; mean over the family)", "",
                  "| family | descriptors | R² trained | R² untrained |", "|---|---|---|---|"]
        for family, entry in families.items():
            shown = family.replace("|", ", coarse-grained ")
            lines.append(f"| {shown} | {entry['count']} | {entry['trained']:.3f} | {entry['untrained']:.3f} |")
        lines.append("")
    lines.append(f"![features]({results['plot']})")
    return lines
