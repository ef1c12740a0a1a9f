"""Kind ``scaling``: test Pearson against the number of training configurations.

Every run is trained, for every ``n`` of ``[scaling] train_configurations`` and every seed of
``[scaling] seeds``, on ``n`` configurations of the first dataset: the training part of
``[data] split`` becomes ``n``, the first ``n`` of one seeded random order (``split_seed``),
so the training sets are nested. Every size is tested on the same configurations, those of
``[data] test_dataset``; validation (which only picks the best epoch) is best a dataset of its
own too (``validation_dataset``): the split's validation part, where it has one, follows the
``n`` training configurations in that order, so it changes with ``n``. A run trained by gradient steps gets
``[scaling] steps`` optimiser steps at every ``n`` (``epochs = ceil(steps × batch_size / n)``)
and about ``[scaling] validations`` validations, so that a larger set is not also a longer
training; closed-form fits (ridge) take the whole set at once, with the first seed only. Sizes
that do not fit the dataset, and runs whose inputs it lacks, are skipped, named with the reason.

Reported: the Pearson table of every run on the test dataset (``<run>/pearson.md``), and per
run, particle type, size and time the mean over seeds of the per-configuration mean Pearson,
the seed spread and the noise ceiling, drawn in ``scaling.png`` (one panel per time, type A).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from equiglass.errors import ConfigError
from equiglass.experiments.report import pyplot, save_figure, table_json

if TYPE_CHECKING:
    from pathlib import Path

    from equiglass.experiments.runner import Experiment

@dataclass(frozen=True)
class ScalingOptions:
    """The ``[scaling]`` table (sizes sorted and seeds deduplicated on construction).

    Attributes:
        train_configurations: training-set sizes, positive.
        seeds: seeds of every gradient-trained run (a closed-form fit takes the first), >= 0.
        steps: optimiser steps of every gradient-trained run at every size.
        validations: about this many validations per run.
        all_seeds_from: sizes below this train the first seed only (0: every seed at every size), >= 0.
    """

    train_configurations: tuple[int, ...] = ()
    seeds: tuple[int, ...] = (0,)
    steps: int = 1920
    validations: int = 30
    all_seeds_from: int = 0

    def __post_init__(self) -> None:
        if not self.train_configurations or min(self.train_configurations) < 1:
            raise ValueError(f"train_configurations must list positive integers, got {list(self.train_configurations)}")
        if not self.seeds or min(self.seeds) < 0:
            raise ValueError(f"seeds must list integers >= 0, got {list(self.seeds)}")
        for name in ("steps", "validations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.all_seeds_from < 0:
            raise ValueError(f"all_seeds_from must be an integer >= 0, got {self.all_seeds_from}")
        object.__setattr__(self, "train_configurations", tuple(sorted(set(self.train_configurations))))
        object.__setattr__(self, "seeds", tuple(dict.fromkeys(self.seeds)))


def budget(steps: int, validations: int, n_train: int, batch_size: int) -> dict[str, int]:
    """``epochs`` and ``eval_every`` giving at least ``steps`` optimiser steps on ``n_train``
    configurations in batches of ``batch_size``, with about ``validations`` validations."""
    epochs = math.ceil(steps / math.ceil(n_train / batch_size))
    return {"epochs": epochs, "eval_every": max(1, round(epochs / validations))}


def run(experiment: Experiment) -> dict[str, Any]:
    """Every run at every size and seed (seeds outermost, so that a first pass gives every curve);
    each run's models then evaluated on the test dataset.

    Returns:
        ``options`` (the ``[scaling]`` table), ``tested_on``, ``tables`` (run -> Pearson table as JSON
        and Markdown, rows labelled ``n<size>-seed<seed>``), ``curves`` (:func:`curves`) and ``plot``
        (None when no size fits the dataset).

    Raises:
        ConfigError: a bad ``[scaling]`` table (:class:`ScalingOptions`), a run with no ``[data] test_dataset``, or runs naming
            different test datasets.
    """
    from equiglass.analysis.evaluate import evaluate
    from equiglass.nn.registry import MODEL_KINDS
    from equiglass.training.config import parse_section

    chosen = parse_section(ScalingOptions, experiment.spec.options, experiment.spec.path, "scaling")
    dataset, available = experiment.datasets[0], experiment.facts[0]["configurations"]
    configs = {name: experiment.config(name, dataset) for name, _ in experiment.spec.runs}
    tested_on = {config.data.test_dataset for config in configs.values()}
    if None in tested_on:
        raise ConfigError(experiment.spec.path, "a scaling experiment tests every training size on the same "
                                                "configurations: give the runs a [data] test_dataset (or --test-data)")
    if len(tested_on) > 1:
        raise ConfigError(experiment.spec.path, f"the runs name different test datasets: {sorted(map(str, tested_on))}")
    configs = {name: config for name, config in configs.items() if not experiment.skip_if_inputs_missing(name, config)}
    closed_form = {name: MODEL_KINDS[config.kind].fit == "closed_form" for name, config in configs.items()}
    tasks, names = [], []
    for seed in chosen.seeds:
        for n in chosen.train_configurations:
            for name, config in configs.items():
                if seed != chosen.seeds[0] and (closed_form[name] or n < chosen.all_seeds_from):
                    continue  # a closed-form fit does not depend on the seed; small sizes take one
                validation = config.data.split[1]
                if n + validation > available:
                    experiment.skipped[f"{name}/n{n:03d}"] = (f"{dataset} holds {available} configurations, "
                                                              f"{validation} of them for validation")
                    continue
                train = {"seed": seed}
                if not closed_form[name]:
                    train |= budget(chosen.steps, chosen.validations, n, config.train.batch_size)
                data = {"split": [n, validation, 0]}
                tasks.append((f"{name}/n{n:03d}-seed{seed}", experiment.config(name, dataset, train, data)))
                names.append(name)
    run_dirs: dict[str, list[Path]] = {name: [] for name in configs}
    for name, run_dir in zip(names, experiment.train_all(tasks)):
        run_dirs[name].append(run_dir)
    (test_dataset,) = tested_on
    tables = {}
    for name, trained in run_dirs.items():
        if trained:
            table = evaluate(trained, test_dataset, out=experiment.out / name)
            tables[name] = {"pearson": table_json(table), "pearson_markdown": table.to_markdown(),
                            "plot": f"{name}/pearson.png"}
    results = {"options": dataclasses.asdict(chosen), "tested_on": str(test_dataset), "tables": tables,
               "curves": curves({name: entry["pearson"] for name, entry in tables.items()}), "plot": None}
    if tables:
        plot_curves(results["curves"], experiment.spec.title, experiment.out / "scaling.png")
        results["plot"] = "scaling.png"
    return results


def curves(tables: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Pearson against training-set size from the runs' tables (:func:`~equiglass.experiments.report.table_json`).

    Args:
        tables: run -> its table, rows labelled ``n<size>-seed<seed>``.

    Returns:
        ``times`` [T], ``ceiling`` (type -> [T], the test targets' noise ceiling, None where unknown)
        and ``runs``: run -> type -> list over sizes of ``{"n", "seeds", "mean" [T] (over seeds of
        the per-configuration mean), "seed_std" [T] (0 with one seed), "configuration_std" [T]
        (mean over seeds of the spread over test configurations)}``, sizes ascending.
    """
    times, ceiling, runs = None, {}, {}
    for name, table in tables.items():
        times = table["times"]
        grouped: dict[str, dict[int, list[Mapping[str, Any]]]] = {}
        for row in table["rows"]:
            size = _size(row["model"])
            if size is None:  # e.g. published predictions of the test dataset
                continue
            grouped.setdefault(row["type"], {}).setdefault(size, []).append(row)
            ceiling.setdefault(row["type"], row["ceiling"])
        runs[name] = {
            particle_type: [_point(n, rows) for n, rows in sorted(by_size.items())]
            for particle_type, by_size in grouped.items()
        }
    return {"times": times, "ceiling": ceiling, "runs": runs}


def _point(n: int, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One size of one run and type: mean and spreads over its seeds' rows."""
    means = np.array([row["mean"] for row in rows], dtype=float)
    spreads = np.array([row["std"] for row in rows], dtype=float)
    return {"n": n, "seeds": len(rows), "mean": means.mean(axis=0).tolist(),
            "seed_std": (means.std(axis=0, ddof=1) if len(rows) > 1 else np.zeros(means.shape[1])).tolist(),
            "configuration_std": spreads.mean(axis=0).tolist()}


def _size(label: str) -> int | None:
    """``n016-seed0`` -> 16; None for a label of another form."""
    head, _, seed = label.partition("-seed")
    return int(head[1:]) if head.startswith("n") and head[1:].isdigit() and seed.isdigit() else None


def plot_curves(results: Mapping[str, Any], title: str, path: Path, particle_type: str = "A") -> None:
    """One panel per time and one for the mean over times: Pearson (type ``particle_type``) against
    the number of training configurations (log axis), one line per run (error bars: seed spread),
    the noise ceiling as a grey line."""
    plt = pyplot()
    times = results["times"] or []
    panels = len(times) + 1
    columns = min(4, panels)
    rows = math.ceil(panels / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 2.9 * rows), squeeze=False, sharex=True)
    ceiling = np.array([np.nan if c is None else c for c in results["ceiling"].get(particle_type) or []], dtype=float)
    sizes_drawn = sorted({point["n"] for by_type in results["runs"].values() for point in by_type.get(particle_type, [])})
    for panel, ax in enumerate(axes.flat):
        if panel >= panels:
            ax.set_visible(False)
            continue
        average = panel == len(times)
        for name, by_type in results["runs"].items():
            points = by_type.get(particle_type, [])
            if not points:
                continue
            sizes = [point["n"] for point in points]
            pick = (lambda values: float(np.mean(values))) if average else (lambda values, k=panel: values[k])
            ax.errorbar(sizes, [pick(point["mean"]) for point in points],
                        yerr=[pick(point["seed_std"]) for point in points], marker="o", ms=3, capsize=2, label=name)
        if ceiling.size:
            known = ceiling[np.isfinite(ceiling)]
            level = (float(known.mean()) if known.size else np.nan) if average else ceiling[panel]
            if np.isfinite(level):
                ax.axhline(level, color="0.5", lw=1, ls="--", label="noise ceiling")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes_drawn, [str(n) for n in sizes_drawn])
        ax.minorticks_off()
        ax.set_title("mean over times" if average else f"t = {times[panel]:.4g}", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"Pearson ({particle_type})")
    for ax in axes[-1]:
        ax.set_xlabel("training configurations")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0.08 if rows == 1 else 0.04, 1, 1))
    save_figure(figure, path)


def markdown(results: Mapping[str, Any]) -> list[str]:
    """The ``results.md`` section: the budget, a size × run table of type A (the mean over times, then
    each time), then the plot and the runs' full tables."""
    chosen, data = results["options"], results["curves"]
    lines = [f"Tested on `{results['tested_on']}`; {chosen['steps']} optimiser steps per gradient-trained run at "
             f"every size; seeds {list(chosen['seeds'])}"
             + (f" (below {chosen['all_seeds_from']} configurations, the first only)" if chosen.get("all_seeds_from") else "")
             + ". Per-configuration Pearson, type A, mean over seeds (± seed spread where there are several seeds).", ""]
    names = list(data["runs"])
    sizes = sorted({point["n"] for by_type in data["runs"].values() for point in by_type.get("A", [])})
    columns = ["mean over times", *(f"t = {t:.4g}" for t in data["times"] or [])]
    ceiling = [c for c in data["ceiling"].get("A") or []]
    header = "| training configurations | run | " + " | ".join(columns) + " |"
    lines += [header, "|---" * (len(columns) + 2) + "|"]
    if ceiling and all(c is not None for c in ceiling):
        lines.append("| | noise ceiling | " + " | ".join(f"{v:.3f}" for v in [float(np.mean(ceiling)), *ceiling]) + " |")
    for n in sizes:
        for name in names:
            point = next((p for p in data["runs"][name].get("A", []) if p["n"] == n), None)
            if point is None:
                continue
            values = [(float(np.mean(point["mean"])), float(np.mean(point["seed_std"])))]
            values += list(zip(point["mean"], point["seed_std"]))
            cells = [f"{mean:.3f}" + (f" ± {spread:.3f}" if point["seeds"] > 1 else "") for mean, spread in values]
            lines.append(f"| {n} | {name} | " + " | ".join(cells) + " |")
    lines += ["", f"![Pearson against training-set size]({results['plot']})", ""]
    for name, entry in results["tables"].items():
        lines += [f"## {name}", "", entry["pearson_markdown"], ""]
    return lines

