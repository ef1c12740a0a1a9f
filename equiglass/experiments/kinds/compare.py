"""Kind ``compare``: every run trained on the first dataset and evaluated on its test
configurations: Pearson vs time for types A and B (:mod:`equiglass.analysis.evaluate`),
parameter counts, wall times. A run needing fields the dataset lacks (e.g. inherent states in
Bapst et al.'s files) is skipped, named with the reason."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from equiglass.experiments.report import table_json

if TYPE_CHECKING:
    from equiglass.experiments.runner import Experiment

log = logging.getLogger(__name__)


def run(experiment: Experiment) -> dict[str, Any]:
    """Every run on the first dataset; Pearson vs time on its test configurations.

    Returns:
        ``pearson`` (the table as JSON), ``pearson_markdown`` and ``plot`` (``pearson.png`` in the results directory).
    """
    from equiglass.analysis.evaluate import evaluate

    dataset = experiment.datasets[0]
    run_dirs = []
    for name, _ in experiment.spec.runs:
        config = experiment.config(name, dataset)
        missing = experiment.missing_fields(config)
        if missing:
            experiment.skipped[name] = f"{dataset} lacks {missing}"
            log.warning("run %s skipped: %s", name, experiment.skipped[name])
            continue
        run_dirs.append(experiment.train(name, config))
    table = evaluate(run_dirs, dataset, out=experiment.out)
    return {"pearson": table_json(table), "pearson_markdown": table.to_markdown(), "plot": "pearson.png"}


def markdown(results: Mapping[str, Any]) -> list[str]:
    """The ``results.md`` section: the Pearson table and its plot."""
    return [results["pearson_markdown"], f"![Pearson vs time]({results['plot']})"]
