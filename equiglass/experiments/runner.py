"""Running an experiment: the training runs of one spec, evaluated into tables and plots.

``equiglass experiment SPEC [--scale cpu|paper] [--data PATH ...] [--out DIR] [--epochs N] [--threads N] [--jobs N] [--runs NAME ...]``
reads an experiment spec (``experiments/*.toml``, :mod:`equiglass.experiments.spec`), trains
every run it describes, evaluates them as its kind says (:mod:`equiglass.experiments.kinds`)
and writes ``results.md``, ``results.json`` and the plots into ``DIR`` (default
``runs/experiments/<spec name>-<scale>``), each run in ``DIR/runs/<label>``. Rerunning the
command resumes: finished runs are kept (their ``last.pt`` already holds every epoch),
unfinished ones continue.

``--jobs N`` trains up to N independent runs at once, each in a worker process
(:class:`~equiglass.process_pool.ProcessPool`) with ``cpu_count // N`` torch threads unless
``--threads`` says otherwise: on a small CPU, runs on 1000-particle graphs use one thread
better than two (a demo-sized epoch takes 3.4 s on one thread and 2.6 s on two of a 2-core
machine). A run gives the same numbers in a worker as in the main process with the same threads.

A dataset path that holds no ``manifest.json`` is taken as Bapst et al.'s files (a directory
or glob of pickles) and converted once into ``DIR/datasets/<name>``
(:func:`~equiglass.experiments.datasets.prepare_dataset`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from equiglass.data.format import load_dataset
from equiglass.errors import ConfigError
from equiglass.experiments.datasets import describe_dataset, prepare_dataset
from equiglass.experiments.kinds import KINDS
from equiglass.experiments.report import summary_markdown, write_results
from equiglass.experiments.spec import ExperimentSpec, deep_merge, load_spec
from equiglass.process_pool import ProcessPool, interrupt_on_sigterm

log = logging.getLogger(__name__)


@dataclass
class Experiment:
    """One experiment being run: the spec, the scale, the datasets and where results go.

    Attributes:
        test_dataset: replaces every run's ``[data] test_dataset`` (``--test-data``).
        threads: replaces every run's ``[train] threads`` (``--threads``; a setting of the machine,
            so finished runs are kept and unfinished ones resume with it).
        jobs: how many runs :meth:`train_all` trains at once, each in a worker process (``--jobs``).
        runs: label -> facts of every run trained (:meth:`train_all`), in order.
        skipped: run name -> why it was not trained.
    """

    spec: ExperimentSpec
    scale: str
    datasets: list[Path]
    out: Path
    epochs: int | None = None
    progress: bool = True
    test_dataset: Path | None = None
    threads: int | None = None
    jobs: int = 1
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        #: :func:`~equiglass.experiments.datasets.describe_dataset` of every dataset, in order.
        self.facts = [describe_dataset(dataset) for dataset in self.datasets]

    def config(self, run: str, dataset: Path, train_overrides: Mapping[str, Any] | None = None,
               data_overrides: Mapping[str, Any] | None = None) -> Any:
        """The :class:`~equiglass.training.config.RunConfig` of run ``run`` on ``dataset``, with extra overrides."""
        from equiglass.training.config import config_from_dict

        tables = self.spec.run_tables(run, self.scale, dataset)
        if self.test_dataset is not None:
            tables = deep_merge(tables, {"data": {"test_dataset": str(self.test_dataset)}})
        if self.threads is not None:
            tables = deep_merge(tables, {"train": {"threads": self.threads}})
        tables = deep_merge(tables, {"train": dict(train_overrides or {}), "data": dict(data_overrides or {})})
        return config_from_dict(tables, self.spec.path)

    def skip_if_inputs_missing(self, name: str, config: Any) -> bool:
        """Whether run ``name`` needs fields its dataset lacks (e.g. inherent states in Bapst et al.'s
        files); if so, it is recorded in :attr:`skipped` with the fields, and a warning says so."""
        from equiglass.data.graphs import input_fields

        needed = input_fields(config.data.positions, config.data.with_potential_energy, config.data.with_is_displacement)
        absent = load_dataset(config.data.dataset).absent_fields
        missing = [field for field in needed if field in absent]
        if missing:
            self.skipped[name] = f"{config.data.dataset} lacks {missing}"
            log.warning("run %s skipped: %s", name, self.skipped[name])
        return bool(missing)

    def train_all(self, tasks: Sequence[tuple[str, Any]]) -> list[Path]:
        """Train (or resume) every ``(label, config)`` into ``out/runs/<label>``, up to :attr:`jobs` at
        once; record their facts in :attr:`runs`, in order. Returns the run directories, in order.

        A failed or interrupted run stops the others (they resume on the next call)."""
        run_dirs = [self.out / "runs" / label for label, _ in tasks]
        configs = [config for _, config in tasks]
        if self.jobs == 1 or len(tasks) == 1:
            facts = [train_run(config, run_dir, self.epochs, self.progress) for config, run_dir in zip(configs, run_dirs)]
        else:
            facts = _train_in_workers(configs, run_dirs, self.epochs, min(self.jobs, len(tasks)), self.progress)
        for (label, _), fact in zip(tasks, facts):
            self.runs[label] = fact
        return run_dirs


def train_run(config: Any, run_dir: Path, epochs: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) ``config`` into ``run_dir``; return the facts ``results.json`` records of the run."""
    from equiglass.training.loop import train

    began = time.perf_counter()
    result = train(config, run_dir, epochs=epochs, progress=progress)
    return {
        "dataset": str(config.data.dataset),
        "run_dir": str(run_dir),
        "model": config.model,
        "data": {"positions": config.data.positions, "with_potential_energy": config.data.with_potential_energy,
                 "with_is_displacement": config.data.with_is_displacement, "split": list(config.data.split)},
        "parameters": _parameters(run_dir),
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "best_val_pearson_mean": result.best_score,
        "training_wall_s": float(result.history[-1].get("wall_s", math.nan)) if result.history else math.nan,
        "this_call_wall_s": time.perf_counter() - began,
    }


def _train_in_workers(configs: Sequence[Any], run_dirs: Sequence[Path], epochs: int | None, jobs: int,
                      progress: bool) -> list[dict[str, Any]]:
    """:func:`train_run` of every config in ``jobs`` worker processes; their facts, in order."""
    pool = ProcessPool(jobs)
    try:
        futures = {pool.submit(_train_in_worker, config, run_dir, epochs): run_dir
                   for config, run_dir in zip(configs, run_dirs)}
        with tqdm(total=len(futures), desc=f"runs ({jobs} at once)", unit="run", disable=None if progress else True,
                  dynamic_ncols=True) as bar:
            for future in as_completed(futures):
                facts = future.result()
                log.info("%s: %d epochs, best validation Pearson %.4f (epoch %d)", futures[future], facts["epochs"],
                         facts["best_val_pearson_mean"], facts["best_epoch"])
                bar.update()
        pool.shutdown(wait=True)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    return [future.result() for future in futures]


def _train_in_worker(config: Any, run_dir: Path, epochs: int | None) -> dict[str, Any]:
    """:func:`train_run` in a worker process, without progress bars; stopped by SIGTERM, it leaves what
    training leaves on Ctrl-C (no partial checkpoint: the run resumes from its last epoch) and exits."""
    try:
        with interrupt_on_sigterm():
            return train_run(config, run_dir, epochs, progress=False)
    except KeyboardInterrupt:
        os._exit(128 + signal.SIGTERM)


def _parameters(run_dir: Path) -> int:
    """Trainable parameter count recorded in a run's ``run.json``."""
    record = json.loads((run_dir / "run.json").read_text())
    return int(record["n_parameters"])


def run_experiment(
    spec: ExperimentSpec | str | Path,
    scale: str = "cpu",
    data: Sequence[str | Path] | None = None,
    out: str | Path | None = None,
    *,
    epochs: int | None = None,
    progress: bool = True,
    test_data: str | Path | None = None,
    threads: int | None = None,
    runs: Sequence[str] | None = None,
    jobs: int = 1,
) -> dict[str, Any]:
    """Run an experiment (see the module docstring) and write its results; return them.

    Args:
        spec: a spec file or a loaded :class:`~equiglass.experiments.spec.ExperimentSpec`.
        scale: the ``[scale.<name>]`` to run.
        data: dataset paths (equiglass datasets or Bapst files) replacing the scale's.
        out: results directory (default ``runs/experiments/<name>-<scale>``).
        epochs: override every run's ``[train] epochs`` (for quick checks).
        progress: tqdm progress bars.
        test_data: a dataset (or Bapst et al.'s files) replacing every run's ``[data] test_dataset``:
            the runs of kind ``compare`` are then tested on all of its configurations.
        threads: torch CPU threads of every run, replacing their ``[train] threads``.
        runs: train and report only these runs of the spec (default: every run).
        jobs: train up to this many independent runs at once, each in a worker process with
            ``threads`` torch threads (default ``cpu_count // jobs``).

    Returns:
        what ``results.json`` holds: title, kind, spec, scale, epochs override, datasets, runs,
        skipped runs, this call's wall time, then the kind's results.

    Raises:
        ConfigError: a bad spec, an unknown scale or run, or fewer datasets than the kind needs.
        DataError: a dataset problem.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs}")
    if jobs > 1 and threads is None:
        threads = max(1, (os.cpu_count() or 1) // jobs)
    spec = spec if isinstance(spec, ExperimentSpec) else load_spec(spec)
    if runs:
        spec = spec.select(list(runs))
    if scale not in spec.scales:
        raise ConfigError(spec.path, f"no [scale.{scale}]; the spec has {sorted(spec.scales)}")
    kind = KINDS[spec.kind]
    out = (Path(out) if out is not None else Path("runs") / "experiments" / f"{spec.name}-{scale}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    sources = [Path(p).resolve() for p in data] if data else spec.datasets(scale)
    if not sources:
        raise ConfigError(spec.path, f"[scale.{scale}] lists no datasets: give them with --data")
    if len(sources) < kind.min_datasets:
        raise ConfigError(spec.path, f"a {spec.kind} experiment needs at least {kind.min_datasets} datasets, "
                                     f"got {len(sources)}")
    datasets = [prepare_dataset(source, out) for source in sources]
    test_dataset = None if test_data is None else prepare_dataset(Path(test_data).resolve(), out)
    experiment = Experiment(spec, scale, datasets, out, epochs, progress, test_dataset, threads, jobs)
    began = time.perf_counter()
    kind_results = kind.run(experiment)
    results = {
        "title": spec.title,
        "kind": spec.kind,
        "spec": str(spec.path),
        "scale": scale,
        "epochs_override": epochs,
        "datasets": experiment.facts,
        "runs": experiment.runs,
        "skipped": experiment.skipped,
        "wall_s_this_call": time.perf_counter() - began,
        **kind_results,
    }
    write_results(out, results, results_markdown(results))
    log.info("%s: results in %s", spec.name, out / "results.md")
    return results


def results_markdown(results: Mapping[str, Any]) -> str:
    """``results.md``: title, data, runs (parameters, epochs, wall time), then the kind's section."""
    return "\n".join(summary_markdown(results) + KINDS[results["kind"]].markdown(results)) + "\n"
