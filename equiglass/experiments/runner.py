"""Experiments: the training runs of one study, from one TOML spec, evaluated into tables and plots.

``equiglass experiment SPEC [--scale cpu|paper] [--data PATH ...] [--out DIR] [--epochs N]``
reads an experiment spec (``experiments/*.toml``), trains every run it describes, evaluates
them and writes ``results.md``, ``results.json`` and the plots into ``DIR`` (default
``runs/experiments/<spec name>-<scale>``). Rerunning the command resumes: finished runs are
kept (their ``last.pt`` already holds every epoch), unfinished ones continue.

A spec::

    [experiment]
    title = "Pearson vs time: equivariant model vs invariant baselines"
    kind = "compare"                    # compare | temperatures | transfer | features

    [base]                              # a run config (equiglass.training.config) shared by every run,
    data = { split = [0.8, 0.1, 0.1] }  # without data.dataset (that comes from the scale)
    train = { epochs = 100 }

    [scale.cpu]                         # one table per scale: its datasets and overrides
    datasets = ["../data/ka-T0.56"]     # relative to the spec; --data replaces them
    data = { split = [16, 4, 4] }
    train = { epochs = 12 }

    [scale.paper]
    datasets = []                       # Bapst et al.'s files: given with --data
    train = { epochs = 300, device = "auto" }

    [[run]]
    name = "equivariant"
    model = { kind = "equivariant" }
    scale.cpu = { model = { channels = 8 } }    # overrides of this run at one scale

Each run's config is the deep merge ``base <- scale <- run <- run.scale.<scale>``. A
dataset path that holds no ``manifest.json`` is taken as Bapst et al.'s files (a directory
or glob of pickles) and converted once into ``DIR/datasets/<name>``
(:func:`~equiglass.data.bapst.convert_bapst`).

Kinds (what is trained on which dataset, and what is reported):

* ``compare``: every run on the first dataset, evaluated on its test configurations:
  Pearson vs time for types A and B (:mod:`equiglass.analysis.evaluate`), parameter counts, wall times.
* ``temperatures``: every run trained on every dataset and evaluated on the test
  configurations of every dataset: a matrix of Pearson (A) at t ≈ τ_α, the model's output
  nearest its training set's τ_α against the target nearest the test set's τ_α (datasets
  without ``tau_alpha`` in their manifest use their middle time).
* ``transfer``: every run trained on the first dataset (the source); then for every other
  dataset (target), the source backbone frozen and its decoder retrained
  (``init_from`` + ``freeze_backbone``) against the same model trained from scratch, both
  with the ``[transfer]`` budget (``data``/``train`` overrides, e.g. fewer training
  configurations); evaluated on the target's test configurations.
* ``features``: every run (equivariant models) on the first dataset; on its test
  configurations, the first interaction block's invariants (its l = 0 channels and the norms
  of its l > 0 channels, :func:`invariants`) against the
  structural descriptors of :mod:`equiglass.data.descriptors`: for every descriptor, the R² of its
  linear regression on those features (type-A particles, fitted on half the configurations,
  scored on the other half), for the trained model and for the same network untrained.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from equiglass.data.format import MANIFEST_NAME, atomic_write, load_dataset
from equiglass.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: The kinds of experiment.
KINDS = ("compare", "temperatures", "transfer", "features")
#: Keys of a ``[scale.<name>]`` table besides the run-config sections.
SCALE_KEYS = ("datasets",)
#: Sections of a run config a spec may override.
RUN_SECTIONS = ("data", "model", "train")


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in: tables merged key by key, any other value replaced."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@dataclass(frozen=True)
class ExperimentSpec:
    """A parsed experiment spec (see the module docstring).

    Attributes:
        path: the spec file.
        title: one line saying what the experiment measures.
        kind: one of :data:`KINDS`.
        base: the run-config tables shared by every run.
        scales: scale name -> its table (``datasets`` and run-config overrides).
        runs: ``(name, table)`` of every run, in order.
        transfer: the ``[transfer]`` budget overrides (kind ``transfer``).
    """

    path: Path
    title: str
    kind: str
    base: dict[str, Any]
    scales: dict[str, dict[str, Any]]
    runs: tuple[tuple[str, dict[str, Any]], ...]
    transfer: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The spec's file stem."""
        return self.path.stem

    def datasets(self, scale: str) -> list[Path]:
        """The scale's dataset paths, relative ones taken from the spec's directory."""
        return [(self.path.parent / entry).resolve() for entry in self.scales[scale].get("datasets", [])]

    def run_tables(self, run: str, scale: str, dataset: Path) -> dict[str, Any]:
        """The run config (as tables) of run ``run`` at ``scale`` on ``dataset``."""
        tables = dict(self.runs)[run]
        overrides = {key: value for key, value in tables.items() if key in RUN_SECTIONS}
        scale_table = {key: value for key, value in self.scales[scale].items() if key in RUN_SECTIONS}
        merged = deep_merge(deep_merge(deep_merge(self.base, scale_table), overrides), tables.get("scale", {}).get(scale, {}))
        merged.setdefault("data", {})["dataset"] = str(dataset)
        return merged


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and check an experiment spec.

    Raises:
        DataError: naming the file: not TOML, no ``[experiment]`` title or a bad kind, no runs,
            duplicate run names, unknown keys, or a run table with an unknown section.
    """
    from equiglass.training.config import read_toml

    path = Path(path).resolve()
    content = read_toml(path, "experiment spec")
    unknown = sorted(set(content) - {"experiment", "base", "scale", "run", "transfer"})
    if unknown:
        raise ConfigError(path, f"unknown table(s) {unknown}")
    header = content.get("experiment", {})
    if not header.get("title"):
        raise ConfigError(path, "[experiment] needs a title")
    kind = header.get("kind", "compare")
    if kind not in KINDS:
        raise ConfigError(path, f"[experiment] kind must be one of {KINDS}, got {kind!r}")
    runs = content.get("run", [])
    names = [run.get("name") for run in runs]
    if not runs or not all(isinstance(name, str) and name for name in names) or len(set(names)) != len(names):
        raise ConfigError(path, f"needs [[run]] tables with distinct non-empty names, got {names}")
    for run in runs:
        extra = sorted(set(run) - {"name", "scale", *RUN_SECTIONS})
        if extra:
            raise ConfigError(path, f"run {run['name']!r}: unknown key(s) {extra}; a run has name, scale, {RUN_SECTIONS}")
    scales = content.get("scale", {})
    for name, table in scales.items():
        extra = sorted(set(table) - {*SCALE_KEYS, *RUN_SECTIONS})
        if extra:
            raise ConfigError(path, f"[scale.{name}]: unknown key(s) {extra}")
    return ExperimentSpec(
        path=path,
        title=str(header["title"]),
        kind=kind,
        base=dict(content.get("base", {})),
        scales={name: dict(table) for name, table in scales.items()},
        runs=tuple((run["name"], {key: value for key, value in run.items() if key != "name"}) for run in runs),
        transfer=dict(content.get("transfer", {})),
    )


# ------------------------------------------------------------------ datasets


def prepare_dataset(source: Path, out: Path) -> Path:
    """An equiglass dataset for ``source``: itself when it holds a manifest, else Bapst et al.'s
    files converted (once, resumably) into ``out/datasets/<name>``."""
    if (source / MANIFEST_NAME).is_file():
        return source
    from equiglass.data.bapst import convert_bapst

    name = source.name.replace("*", "").strip(".") or "bapst"
    dest = out / "datasets" / name
    log.info("Bapst files %s: converting (or resuming) into %s", source, dest)
    return convert_bapst(source, dest, command=f"equiglass experiment: convert-bapst {source} {dest}")


def describe_dataset(directory: Path) -> dict[str, Any]:
    """The facts a results table states about a dataset: temperature, N, configurations,
    trajectories per configuration, τ_α, times, source."""
    dataset = load_dataset(directory)
    manifest = dataset.manifest
    protocol = manifest.get("protocol", {})
    replicas = protocol.get("replicas")
    if replicas is None and manifest.get("configurations"):
        replicas = manifest["configurations"][0].get("n_trajectories")
    return {
        "path": str(directory),
        "temperature": manifest.get("temperature"),
        "n_particles": manifest.get("n_particles"),
        "configurations": len(dataset),
        "trajectories": replicas,
        "tau_alpha": manifest.get("tau_alpha"),
        "times": [float(t) for t in dataset.times],
        "source": manifest.get("source"),
    }


def tau_alpha_index(facts: Mapping[str, Any]) -> int:
    """Index of the stored time nearest τ_α (log scale); the middle time without τ_α."""
    times = np.asarray(facts["times"])
    tau = facts.get("tau_alpha")
    if tau is None or not tau > 0:
        return len(times) // 2
    return int(np.argmin(np.abs(np.log(times) - math.log(tau))))


def temperature_label(facts: Mapping[str, Any]) -> str:
    """``T0.56`` (or the dataset's directory name without a temperature)."""
    temperature = facts.get("temperature")
    return f"T{temperature:g}" if temperature is not None else Path(facts["path"]).name


# ------------------------------------------------------------------ running


@dataclass
class Experiment:
    """One experiment being run: the spec, the scale, the datasets and where results go."""

    spec: ExperimentSpec
    scale: str
    datasets: list[Path]
    out: Path
    epochs: int | None = None
    progress: bool = True
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        #: :func:`describe_dataset` of every dataset, in order.
        self.facts = [describe_dataset(dataset) for dataset in self.datasets]

    def config(self, run: str, dataset: Path, train_overrides: Mapping[str, Any] | None = None,
               data_overrides: Mapping[str, Any] | None = None) -> Any:
        """The :class:`~equiglass.training.config.RunConfig` of run ``run`` on ``dataset``, with extra overrides."""
        from equiglass.training.config import config_from_dict

        tables = self.spec.run_tables(run, self.scale, dataset)
        tables = deep_merge(tables, {"train": dict(train_overrides or {}), "data": dict(data_overrides or {})})
        return config_from_dict(tables, self.spec.path)

    def missing_fields(self, config: Any) -> list[str]:
        """Fields the run needs that its dataset lacks (e.g. inherent states in Bapst et al.'s files)."""
        from equiglass.data.graphs import POSITION_FIELDS

        positions, energy = POSITION_FIELDS[config.data.positions]
        needed = [positions, energy] if config.data.with_potential_energy else [positions]
        absent = load_dataset(config.data.dataset).absent_fields
        return [name for name in needed if name in absent]

    def train(self, label: str, config: Any) -> Path:
        """Train (or resume) ``config`` into ``out/runs/<label>``; record its facts in :attr:`runs`."""
        from equiglass.training.loop import train

        run_dir = self.out / "runs" / label
        began = time.perf_counter()
        result = train(config, run_dir, epochs=self.epochs, progress=self.progress)
        self.runs[label] = {
            "dataset": str(config.data.dataset),
            "run_dir": str(run_dir),
            "model": config.model,
            "data": {"positions": config.data.positions, "with_potential_energy": config.data.with_potential_energy,
                     "split": list(config.data.split)},
            "parameters": _parameters(run_dir),
            "epochs": result.epochs,
            "best_epoch": result.best_epoch,
            "best_val_pearson_mean": result.best_score,
            "training_wall_s": float(result.history[-1].get("wall_s", math.nan)) if result.history else math.nan,
            "this_call_wall_s": time.perf_counter() - began,
        }
        return run_dir


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
) -> dict[str, Any]:
    """Run an experiment (see the module docstring) and write its results; return them.

    Args:
        spec: a spec file or a loaded :class:`ExperimentSpec`.
        scale: the ``[scale.<name>]`` to run.
        data: dataset paths (equiglass datasets or Bapst files) replacing the scale's.
        out: results directory (default ``runs/experiments/<name>-<scale>``).
        epochs: override every run's ``[train] epochs`` (for quick checks).
        progress: tqdm progress bars.

    Raises:
        DataError: a bad spec, an unknown scale, no dataset, or a dataset problem.
    """
    spec = spec if isinstance(spec, ExperimentSpec) else load_spec(spec)
    if scale not in spec.scales:
        raise ConfigError(spec.path, f"no [scale.{scale}]; the spec has {sorted(spec.scales)}")
    out = (Path(out) if out is not None else Path("runs") / "experiments" / f"{spec.name}-{scale}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    sources = [Path(p).resolve() for p in data] if data else spec.datasets(scale)
    if not sources:
        raise ConfigError(spec.path, f"[scale.{scale}] lists no datasets: give them with --data")
    needed = 2 if spec.kind in ("temperatures", "transfer") else 1
    if len(sources) < needed:
        raise ConfigError(spec.path, f"a {spec.kind} experiment needs at least {needed} datasets, got {len(sources)}")
    datasets = [prepare_dataset(source, out) for source in sources]
    experiment = Experiment(spec, scale, datasets, out, epochs, progress)
    began = time.perf_counter()
    results = {"temperatures": _temperatures, "transfer": _transfer, "features": _features}.get(spec.kind, _compare)(
        experiment
    )
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
        **results,
    }
    atomic_write(out / "results.json", lambda stream: stream.write(json.dumps(results, indent=2, default=str) + "\n"),
                 binary=False)
    markdown = results_markdown(results)
    atomic_write(out / "results.md", lambda stream: stream.write(markdown), binary=False)
    log.info("%s: results in %s", spec.name, out / "results.md")
    return results


# ------------------------------------------------------------------ kinds


def _compare(experiment: Experiment) -> dict[str, Any]:
    """Every run on the first dataset; Pearson vs time on its test configurations."""
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
    return {"pearson": _table_json(table), "pearson_markdown": table.to_markdown(), "plot": "pearson.png"}


def _temperatures(experiment: Experiment) -> dict[str, Any]:
    """Every run on every dataset, each evaluated on every dataset's test split at t ≈ τ_α."""
    from equiglass.training.checkpoint import load_checkpoint

    facts = experiment.facts
    labels = [temperature_label(f) for f in facts]
    matrices: dict[str, list[list[dict[str, float]]]] = {}
    for name, _ in experiment.spec.runs:
        matrix = []
        for train_facts, train_dataset, train_label in zip(facts, experiment.datasets, labels):
            config = experiment.config(name, train_dataset)
            trained = load_checkpoint(experiment.train(f"{name}/{train_label}", config))
            output = tau_alpha_index(train_facts)
            matrix.append([
                _cross_pearson(trained, config, test_facts, output, tau_alpha_index(test_facts))
                for test_facts in facts
            ])
        matrices[name] = matrix
    plot = experiment.out / "temperatures.png"
    _plot_matrices(matrices, labels, plot)
    return {"labels": labels, "matrices": matrices, "plot": plot.name}


def _cross_pearson(trained: Any, config: Any, facts: Mapping[str, Any], output: int, target: int) -> dict[str, float]:
    """Per-configuration Pearson (A) of output ``output`` against target time ``target`` on the
    test configurations (``config``'s split) of the dataset described by ``facts``; mean, std, count."""
    from equiglass.metrics import pearson_per_timescale, summarise

    dataset = Path(facts["path"])
    correlations = []
    for data in trained.graphs(dataset, config.split_of(facts["configurations"])["test"]):
        mask = data.target_mask.all(dim=1) & (data.types == 0)
        prediction = trained.predict(data)[:, [output]]
        correlations.append(pearson_per_timescale(prediction, data.y[:, [target]], mask))
    mean, std = summarise(torch.stack(correlations))
    return {"mean": float(mean[0]), "std": float(std[0]), "configurations": len(correlations),
            "output_time": float(trained.times[output]), "target_time": float(facts["times"][target])}


def _transfer(experiment: Experiment) -> dict[str, Any]:
    """Source training, then frozen-backbone decoder retraining vs scratch on every other dataset."""
    from equiglass.analysis.evaluate import evaluate

    budget = experiment.spec.transfer
    facts = experiment.facts
    source_label = temperature_label(facts[0])
    tables = {}
    for name, _ in experiment.spec.runs:
        source = experiment.train(f"{name}/source-{source_label}", experiment.config(name, experiment.datasets[0]))
        for target_facts, dataset in zip(facts[1:], experiment.datasets[1:]):
            label = temperature_label(target_facts)
            train_budget, data_budget = budget.get("train", {}), budget.get("data", {})
            frozen_config = experiment.config(name, dataset, {**train_budget, "init_from": str(source),
                                                              "freeze_backbone": True}, data_budget)
            frozen = experiment.train(f"{name}/{label}-frozen-backbone", frozen_config)
            scratch = experiment.train(f"{name}/{label}-scratch", experiment.config(name, dataset, train_budget,
                                                                                     data_budget))
            table = evaluate([frozen, scratch], dataset, out=experiment.out / f"{name}-{label}")
            tables[f"{name} {source_label} -> {label}"] = {
                "pearson": _table_json(table),
                "pearson_markdown": table.to_markdown(),
                "plot": f"{name}-{label}/pearson.png",
            }
    return {"source": source_label, "budget": budget, "tables": tables}


def _features(experiment: Experiment) -> dict[str, Any]:
    """First-layer invariant features of each trained run against the classic descriptors."""
    from equiglass.training.checkpoint import load_checkpoint
    from equiglass.data.descriptors import DescriptorConfig, graph_descriptors
    from equiglass.nn.equivariant import EquivariantPropensityModel
    from equiglass.nn.registry import build_model

    dataset = experiment.datasets[0]
    descriptor_config = DescriptorConfig()
    names = descriptor_config.feature_names
    analyses = {}
    for name, _ in experiment.spec.runs:
        config = experiment.config(name, dataset)
        trained = load_checkpoint(experiment.train(name, config))
        if not isinstance(trained.model, EquivariantPropensityModel):
            raise ConfigError(experiment.spec.path, f"run {name!r}: a features experiment needs equivariant models")
        graphs = list(trained.graphs(dataset, config.split_of(experiment.facts[0]["configurations"])["test"]))
        if len(graphs) < 2:
            raise DataError(dataset, "a features experiment needs at least 2 test configurations")
        torch.manual_seed(config.train.seed)
        untrained = build_model(trained.model_section, len(trained.times)).eval()
        descriptors = [graph_descriptors(data, descriptor_config) for data in graphs]
        masks = [data.types == 0 for data in graphs]
        scores = {}
        for label, model in (("trained", trained.model), ("untrained", untrained)):
            irreps = model.config.layer_irreps[0]
            with torch.no_grad():
                features = [invariants(model.node_features(data)[0], irreps).double() for data in graphs]
            scores[label] = explained_variance(features, descriptors, masks)
        analyses[name] = {
            "descriptors": names,
            "r2_trained": scores["trained"].tolist(),
            "r2_untrained": scores["untrained"].tolist(),
            "channels": int(trained.model.config.channels),
            "configurations": len(graphs),
        }
    plot = experiment.out / "features.png"
    _plot_features(analyses, plot)
    return {"analyses": analyses, "families": {run: family_summary(a) for run, a in analyses.items()},
            "plot": plot.name}


def invariants(features: torch.Tensor, irreps: Any) -> torch.Tensor:
    """The rotation invariants of equivariant node features: every l = 0 channel as it is and the
    norm of every l > 0 channel (over its 2l + 1 components; for the first layer, a
    radially weighted |sum_j Y_lm(r_ij)|, the form of a bond-orientational order q_l).

    Args:
        features: ``[N, irreps.dim]`` in e3nn layout.
        irreps: their ``o3.Irreps``.

    Returns:
        ``[N, irreps.num_irreps]``.
    """
    columns = []
    for (multiplicity, irrep), part in zip(irreps, irreps.slices()):
        block = features[:, part].reshape(-1, multiplicity, irrep.dim)
        columns.append(block[:, :, 0] if irrep.l == 0 else block.norm(dim=-1))
    return torch.cat(columns, dim=1)


def explained_variance(
    features: Sequence[torch.Tensor], descriptors: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]
) -> np.ndarray:
    """R² of each descriptor's least-squares fit (with intercept) on the features, out of sample.

    Args:
        features: per configuration ``[N, F]`` float64.
        descriptors: per configuration ``[N, D]`` float64.
        masks: per configuration ``[N]`` bool, the particles used.

    The fit uses the first half of the configurations (rounded up) and is scored on the rest.

    Returns:
        ``[D]`` R² (1 - residual variance / variance on the scoring half); NaN for a constant descriptor.
    """
    half = math.ceil(len(features) / 2)

    def stack(part: slice) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([f[m] for f, m in zip(features[part], masks[part])])
        y = torch.cat([d[m] for d, m in zip(descriptors[part], masks[part])])
        return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1), y

    (x_fit, y_fit), (x_score, y_score) = stack(slice(0, half)), stack(slice(half, None))
    coefficients = torch.linalg.lstsq(x_fit, y_fit, driver="gelsd").solution
    residual = (y_score - x_score @ coefficients).var(dim=0)
    variance = y_score.var(dim=0)
    r2 = 1 - residual / variance
    return torch.where(variance > 1e-12 * y_score.abs().amax(dim=0).clamp_min(1e-300), r2, torch.nan).numpy()


def family_summary(analysis: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Mean R² (trained, untrained) per descriptor family: the name without its shell radius, e.g.
    ``rho_A(r=0.9)|L=0`` -> ``rho_A|L=0`` (every shell of one density or order, at one
    coarse-graining length); NaNs ignored."""
    families: dict[str, dict[str, list[float]]] = {}
    for name, trained, untrained in zip(analysis["descriptors"], analysis["r2_trained"], analysis["r2_untrained"]):
        entry = families.setdefault(re.sub(r"\(r=[^)]*\)", "", name), {"trained": [], "untrained": []})
        entry["trained"].append(trained)
        entry["untrained"].append(untrained)
    return {
        family: {key: float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
                 for key, values in entry.items()} | {"count": len(entry["trained"])}
        for family, entry in families.items()
    }


# ------------------------------------------------------------------ outputs


def _table_json(table: Any) -> dict[str, Any]:
    """A :class:`~equiglass.analysis.evaluate.PearsonTable` as plain JSON values."""
    return {
        "times": [float(t) for t in table.times],
        "rows": [
            {"model": row.model, "type": row.particle_type, "mean": row.mean.tolist(), "std": row.std.tolist(),
             "configurations": row.n_configurations, "pooled": row.pooled.tolist()}
            for row in table.rows
        ],
    }


def _plot_matrices(matrices: Mapping[str, list[list[dict[str, float]]]], labels: Sequence[str], path: Path) -> None:
    """One heat map per run: train temperature (rows) × test temperature (columns)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

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
    atomic_write(path, lambda stream: figure.savefig(stream, format="png", dpi=120))
    plt.close(figure)


def _plot_features(analyses: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    """Bar chart of the mean R² per descriptor family, trained vs untrained, one panel per run."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

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
    atomic_write(path, lambda stream: figure.savefig(stream, format="png", dpi=120))
    plt.close(figure)


def results_markdown(results: Mapping[str, Any]) -> str:
    """``results.md``: title, data, runs (parameters, epochs, wall time), then the kind's tables."""
    lines = [f"# {results['title']}", "", f"Spec `{results['spec']}`, scale `{results['scale']}`"
             + (f", epochs overridden to {results['epochs_override']}" if results["epochs_override"] else "") + ".", ""]
    lines += ["| dataset | T | N | configurations | trajectories | τ_α |", "|---|---|---|---|---|---|"]
    for facts in results["datasets"]:
        tau = facts["tau_alpha"]
        lines.append(f"| {facts['path']} | {facts['temperature']} | {facts['n_particles']} | {facts['configurations']} "
                     f"| {facts['trajectories']} | {'' if tau is None else f'{tau:.3g}'} |")
    lines += ["", "| run | parameters | epochs | best epoch | validation Pearson | training wall s |",
              "|---|---|---|---|---|---|"]
    for label, run in results["runs"].items():
        lines.append(f"| {label} | {run['parameters']} | {run['epochs']} | {run['best_epoch']} "
                     f"| {run['best_val_pearson_mean']:.3f} | {run['training_wall_s']:.0f} |")
    for name, reason in results.get("skipped", {}).items():
        lines.append(f"Run {name} skipped: {reason}.")
    lines.append("")
    kind = results["kind"]
    if kind == "compare":
        lines += [results["pearson_markdown"], f"![Pearson vs time]({results['plot']})"]
    elif kind == "transfer":
        for title, entry in results["tables"].items():
            lines += [f"## {title}", "", entry["pearson_markdown"], f"![{title}]({entry['plot']})", ""]
    elif kind == "temperatures":
        labels = results["labels"]
        for name, matrix in results["matrices"].items():
            lines += [f"## {name}: Pearson (A) at t ≈ τ_α, per configuration, mean ± std over test configurations",
                      "", "| trained at \\ tested at | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
            for label, row in zip(labels, matrix):
                lines.append(f"| {label} | " + " | ".join(f"{c['mean']:.3f} ± {c['std']:.3f}" for c in row) + " |")
            lines.append("")
        lines.append(f"![temperature matrix]({results['plot']})")
    else:
        for name, families in results["families"].items():
            lines += [f"## {name}: R² of each descriptor family from the first layer's invariant features "
                      "(type A, out of sample; mean over the family)", "",
                      "| family | descriptors | R² trained | R² untrained |", "|---|---|---|---|"]
            for family, entry in families.items():
                shown = family.replace("|", ", coarse-grained ")
                lines.append(f"| {shown} | {entry['count']} | {entry['trained']:.3f} | {entry['untrained']:.3f} |")
            lines.append("")
        lines.append(f"![features]({results['plot']})")
    return "\n".join(lines) + "\n"
