"""Kind ``transfer``: every run trained on the first dataset (the source); then for every other
dataset (target), the source backbone frozen and its decoder retrained (``init_from`` +
``freeze_backbone``) against the same model trained from scratch, both with the spec's
``[transfer]`` budget (``data``/``train`` overrides, e.g. fewer training configurations);
evaluated on the target's test configurations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from equiglass.experiments.datasets import temperature_label
from equiglass.experiments.report import table_json

if TYPE_CHECKING:
    from equiglass.experiments.runner import Experiment


def run(experiment: Experiment) -> dict[str, Any]:
    """Source training, then frozen-backbone decoder retraining vs scratch on every other dataset.

    Returns:
        ``source`` (its label), ``budget`` (the ``[transfer]`` table) and ``tables``
        (``"<run> <source> -> <target>"`` -> Pearson table as JSON and Markdown, and its plot).
    """
    from equiglass.analysis.evaluate import evaluate

    budget = experiment.spec.options
    facts = experiment.facts
    source_label = temperature_label(facts[0])
    train_budget, data_budget = budget.get("train", {}), budget.get("data", {})
    names = [name for name, _ in experiment.spec.runs]
    sources = experiment.train_all([(f"{name}/source-{source_label}", experiment.config(name, experiment.datasets[0]))
                                    for name in names])
    targets = [(name, temperature_label(target_facts), dataset)
               for name in names for target_facts, dataset in zip(facts[1:], experiment.datasets[1:])]
    source_of = dict(zip(names, sources))
    tasks = []
    for name, label, dataset in targets:
        tasks += [(f"{name}/{label}-frozen-backbone",
                   experiment.config(name, dataset, {**train_budget, "init_from": str(source_of[name]),
                                                     "freeze_backbone": True}, data_budget)),
                  (f"{name}/{label}-scratch", experiment.config(name, dataset, train_budget, data_budget))]
    run_dirs = experiment.train_all(tasks)
    tables = {}
    for (name, label, dataset), frozen, scratch in zip(targets, run_dirs[::2], run_dirs[1::2]):
        table = evaluate([frozen, scratch], dataset, out=experiment.out / f"{name}-{label}")
        tables[f"{name} {source_label} -> {label}"] = {
            "pearson": table_json(table),
            "pearson_markdown": table.to_markdown(),
            "plot": f"{name}-{label}/pearson.png",
        }
    return {"source": source_label, "budget": budget, "tables": tables}


def markdown(results: Mapping[str, Any]) -> list[str]:
    """The ``results.md`` section: one Pearson table and plot per source -> target pair."""
    lines = []
    for title, entry in results["tables"].items():
        lines += [f"## {title}", "", entry["pearson_markdown"], f"![{title}]({entry['plot']})", ""]
    return lines
