"""Kind ``compare``: every run trained on the first dataset and evaluated on its test
configurations, or on every configuration of the runs' ``[data] test_dataset`` where they name
one (GlassBench's convention: train on files 1-400, test on 401-500): Pearson vs time for types
A and B (:mod:`equiglass.analysis.evaluate`), parameter counts, wall times. A run needing fields
the dataset lacks (e.g. inherent states in Bapst et al.'s files) is skipped, named with the reason."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from equiglass.errors import ConfigError
from equiglass.experiments.report import save_figure, table_json

if TYPE_CHECKING:
    from equiglass.experiments.runner import Experiment


def run(experiment: Experiment) -> dict[str, Any]:
    """Every run on the first dataset; Pearson vs time on its test configurations or test dataset.

    Returns:
        ``pearson`` (the table as JSON), ``pearson_markdown``, ``plot`` (``pearson.png`` in the
        results directory), ``tested_on`` (the dataset evaluated), and ``learning_curves`` (training
        loss and validation Pearson of every run trained by gradient steps, drawn in
        ``learning_curves.png``).

    Raises:
        ConfigError: a run with no test configurations, or runs naming different test datasets.
    """
    from equiglass.analysis.evaluate import evaluate
    from equiglass.analysis.learning_curves import learning_curves, plot_learning_curves

    dataset = experiment.datasets[0]
    tasks, test_datasets = [], set()
    for name, _ in experiment.spec.runs:
        config = experiment.config(name, dataset)
        if config.data.test_dataset is None and config.data.split[2] == 0:
            raise ConfigError(experiment.spec.path, f"run {name} keeps no test configurations and names no "
                                                    "[data] test_dataset: give one with --test-data")
        test_datasets.add(config.data.test_dataset or dataset)
        if not experiment.skip_if_inputs_missing(name, config):
            tasks.append((name, config))
    if len(test_datasets) > 1:
        raise ConfigError(experiment.spec.path, f"the runs name different test datasets: {sorted(map(str, test_datasets))}")
    (tested_on,) = test_datasets
    run_dirs, labels = experiment.train_all(tasks), [name for name, _ in tasks]
    table = evaluate(run_dirs, tested_on, out=experiment.out)
    curves = learning_curves(run_dirs, labels)
    if curves:
        save_figure(plot_learning_curves(curves, experiment.spec.title), experiment.out / "learning_curves.png")
    return {"pearson": table_json(table), "pearson_markdown": table.to_markdown(), "plot": "pearson.png",
            "tested_on": str(tested_on), "learning_curves": curves}


def markdown(results: Mapping[str, Any]) -> list[str]:
    """The ``results.md`` section: the dataset tested on, the Pearson table and its plot, the learning curves."""
    lines = [f"Tested on `{results['tested_on']}`.", "", results["pearson_markdown"], f"![Pearson vs time]({results['plot']})"]
    if results.get("learning_curves"):
        lines += ["", "![Learning curves: training loss and validation Pearson against optimiser steps](learning_curves.png)"]
    return lines
