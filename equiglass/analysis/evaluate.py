"""Pearson correlation of predicted and measured propensities, per timescale and particle type.

The metric follows Bapst et al. (2020) and PCL22: for every configuration, the Pearson
correlation between the predicted and the measured propensity of the particles of one type
at one time; then the mean and standard deviation of these per-configuration values over the
configurations. The pooled value (every particle of the type in every configuration
correlated at once, higher at long times) is computed too, but only reported in the CSV's
``pearson_pooled`` column, so that a number is never ambiguous: the table and the plot are
per-configuration.

Every Pearson value stands beside the noise ceiling of the same targets over the same
configurations (:mod:`equiglass.analysis.noise_ceiling`: the Pearson a perfect model would reach
against R-replica targets) and the ratio Pearson / ceiling.

Where the dataset stores the predictions of published models (GlassBench test files:
``published_<MODEL>``, :data:`~equiglass.data.format.PUBLISHED_MODELS`), each is one more row,
``"SE3 (published)"``, computed by the same metric on the same configurations and particles as
the models evaluated (for models evaluated on different configurations, one row per set).

``equiglass evaluate RUN_OR_CHECKPOINT... DATASET`` compares any number of trained models
on one dataset and writes ``pearson.md`` (rows model × type, columns times), ``pearson.csv``
(one row per model, type and time) and ``pearson.png`` (Pearson vs time, the ceiling as a band).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch_geometric.data import Data

from equiglass.analysis.noise_ceiling import NoiseCeiling, dataset_ceiling
from equiglass.data.format import PUBLISHED_MODELS, Dataset, atomic_write, load_dataset
from equiglass.data.geometry import particles_of_types
from equiglass.errors import DataError
from equiglass.metrics import PER_CONFIGURATION, pearson_per_timescale, pooled_pearson_per_timescale, summarise
from equiglass.training.checkpoint import BEST_CHECKPOINT, load_checkpoint
from equiglass.training.rundir import RUN_RECORD

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

#: Particle species as stored in ``types``: 0 = A (large), 1 = B (small).
TYPE_NAMES: tuple[str, ...] = ("A", "B")
#: How the table's numbers are computed, written beside every output.
CONVENTION = (
    f"{PER_CONFIGURATION} Pearson correlation between predicted and measured propensity over the particles "
    "of one type in one configuration; mean ± std over configurations (Bapst et al. 2020 / PCL22 convention, "
    "not pooled)"
)
#: The configurations :func:`evaluate` can select by name.
SPLITS = ("test", "all")


@dataclass(frozen=True)
class PearsonRow:
    """One model's Pearson correlation for one particle type at every time.

    Attributes:
        model: the model's label (run directory name, or checkpoint path).
        particle_type: ``"A"`` or ``"B"``.
        mean: [T] mean over configurations of the per-configuration Pearson correlation.
        std: [T] standard deviation over configurations (as :func:`equiglass.metrics.summarise`).
        n_configurations: number of configurations averaged over.
        pooled: [T] Pearson correlation over the particles of the type in all those
            configurations at once (pooled convention, :mod:`equiglass.metrics`).
        ceiling: [T] noise ceiling of the type's targets, mean over the same configurations
            (NaN where unknown, :mod:`equiglass.analysis.noise_ceiling`).
        ceiling_method: how ``ceiling`` was estimated.
    """

    model: str
    particle_type: str
    mean: np.ndarray
    std: np.ndarray
    n_configurations: int
    pooled: np.ndarray
    ceiling: np.ndarray
    ceiling_method: str

    @property
    def fraction_of_ceiling(self) -> np.ndarray:
        """[T] mean Pearson / noise ceiling (NaN where the ceiling is unknown or 0)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.ceiling > 0, self.mean / self.ceiling, np.nan)


@dataclass(frozen=True)
class PearsonTable:
    """Pearson correlation of several models on one dataset (see the module docstring).

    Attributes:
        times: [T] the dataset's time points (LJ units), the table's columns.
        rows: one row per model and particle type, in the order the models were given.
        dataset: the evaluated dataset directory.
        split: which configurations: ``"test"`` (each run's test configurations, where the
            dataset is the run's own), ``"all"``, or ``"configurations [i, j, ...]"``.
    """

    times: np.ndarray
    rows: tuple[PearsonRow, ...]
    dataset: Path
    split: str

    @property
    def models(self) -> list[str]:
        """Model labels, in order, each once."""
        return list(dict.fromkeys(row.model for row in self.rows))

    def row(self, model: str, particle_type: str) -> PearsonRow:
        """The row of ``model`` and ``particle_type`` (``"A"`` or ``"B"``)."""
        for row in self.rows:
            if row.model == model and row.particle_type == particle_type:
                return row
        raise KeyError(f"no row for model {model!r} and type {particle_type!r}")

    def caption(self) -> str:
        """One sentence saying what the numbers are and which data they come from."""
        methods = ", ".join(dict.fromkeys(row.ceiling_method for row in self.rows))
        return (f"{CONVENTION}. Dataset {self.dataset}, split: {self.split}. In parentheses: the noise ceiling "
                f"of the targets over the same configurations (estimated from {methods}) and Pearson / ceiling. "
                "Pooled values (all configurations correlated at once): pearson_pooled in pearson.csv.")

    def to_markdown(self) -> str:
        """Markdown: the caption, then a table with rows model × type and columns times; each cell
        ``mean ± std (ceiling C, ratio mean / C)``."""
        header = ["model", "type", "configurations", *(f"t = {t:.4g}" for t in self.times)]
        lines = [self.caption(), "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in self.rows:
            cells = [f"{m:.3f} ± {s:.3f} ({_ceiling_text(c, f)})"
                     for m, s, c, f in zip(row.mean, row.std, row.ceiling, row.fraction_of_ceiling)]
            lines.append("| " + " | ".join([row.model, row.particle_type, str(row.n_configurations), *cells]) + " |")
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """CSV with a header and one line per model, type and time: model, type, time, per-configuration
        mean and std (``pearson_mean``, ``pearson_std``), configurations, pooled (``pearson_pooled``),
        ``noise_ceiling`` (nan where unknown), ``pearson_over_ceiling`` and ``ceiling_method``."""
        stream = io.StringIO()
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["model", "type", "time", "pearson_mean", "pearson_std", "n_configurations", "pearson_pooled",
                         "noise_ceiling", "pearson_over_ceiling", "ceiling_method"])
        for row in self.rows:
            for time, mean, std, pooled, ceiling, fraction in zip(
                self.times, row.mean, row.std, row.pooled, row.ceiling, row.fraction_of_ceiling
            ):
                writer.writerow([row.model, row.particle_type, repr(float(time)), repr(float(mean)),
                                 repr(float(std)), row.n_configurations, repr(float(pooled)),
                                 repr(float(ceiling)), repr(float(fraction)), row.ceiling_method])
        return stream.getvalue()

    def figure(self) -> Figure:
        """Pearson vs time (log time axis): one colour per model, A solid and B dashed, error
        bars of one standard deviation over configurations; grey bands above each distinct noise
        ceiling (out of any model's reach), edged A solid and B dashed. Close it with ``pyplot.close``."""
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        figure, axes = plt.subplots(figsize=(7, 4.5))
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        self._draw_ceilings(axes)
        for k, model in enumerate(self.models):
            for particle_type, style in zip(TYPE_NAMES, ("-", "--")):
                row = self.row(model, particle_type)
                axes.errorbar(self.times, row.mean, yerr=row.std, color=colours[k % len(colours)], linestyle=style,
                              marker="o", markersize=3, capsize=2, label=f"{model} ({particle_type})")
        axes.set_xscale("log")
        axes.set_xlabel("t (LJ time units)")
        axes.set_ylabel("Pearson correlation (per configuration)")
        axes.set_title(f"{self.dataset.name}, split {self.split}: mean ± std over configurations", fontsize=10)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
        figure.tight_layout()
        return figure

    def _draw_ceilings(self, axes: Any) -> None:
        """Shade from each distinct known noise ceiling up to 1, one band per type and ceiling."""
        for particle_type, style in zip(TYPE_NAMES, ("-", "--")):
            ceilings = {row.ceiling.tobytes(): row.ceiling for row in self.rows if row.particle_type == particle_type}
            for ceiling in ceilings.values():
                if np.all(np.isnan(ceiling)):
                    continue
                axes.fill_between(self.times, ceiling, 1.0, color="grey", alpha=0.15, linestyle=style,
                                  edgecolor="dimgrey", label=f"above the noise ceiling ({particle_type})")

    def plot(self, path: str | Path) -> Path:
        """Write :meth:`figure` as a PNG image, atomically."""
        from matplotlib import pyplot as plt

        figure = self.figure()
        try:
            return atomic_write(path, lambda stream: figure.savefig(stream, format="png", dpi=120))
        finally:
            plt.close(figure)

    def write(self, directory: str | Path) -> dict[str, Path]:
        """Write ``pearson.md``, ``pearson.csv`` and ``pearson.png`` into ``directory``; returns their paths."""
        directory = Path(directory)
        markdown, table = self.to_markdown(), self.to_csv()
        return {
            "md": atomic_write(directory / "pearson.md", lambda stream: stream.write(markdown), binary=False),
            "csv": atomic_write(directory / "pearson.csv", lambda stream: stream.write(table), binary=False),
            "png": self.plot(directory / "pearson.png"),
        }


def _ceiling_text(ceiling: float, fraction: float) -> str:
    """``ceiling 0.918, ratio 0.468``, or ``ceiling unknown``, for a table cell."""
    return "ceiling unknown" if np.isnan(ceiling) else f"ceiling {ceiling:.3f}, ratio {fraction:.3f}"


def run_directory(source: str | Path) -> Path | None:
    """The run directory of a run directory or of a checkpoint inside one (the folder holding
    ``run.json``), or None for a checkpoint outside any run."""
    source = Path(source)
    directory = source if source.is_dir() else source.parent
    return directory if (directory / RUN_RECORD).is_file() else None


def model_label(source: str | Path) -> str:
    """A short name for a model: its run directory's name, else the checkpoint's path."""
    run = run_directory(source)
    source = Path(source)
    if run is None:
        return str(source)
    return run.name if source.is_dir() or source.name == BEST_CHECKPOINT else f"{run.name}/{source.name}"


def held_out_indices(source: str | Path, dataset: str | Path) -> np.ndarray | None:
    """The test configurations of the run that ``source`` belongs to, if ``dataset`` is that run's dataset.

    Returns None (meaning every configuration) when ``source`` is not part of a run or the
    run was trained on another dataset (its ``[data] test_dataset``, say).

    Raises:
        ValueError: the run kept no test configurations of ``dataset`` because it names a
            ``test_dataset`` (the message names it).
    """
    run = run_directory(source)
    if run is None:
        return None
    path = run / RUN_RECORD
    try:
        record = json.loads(path.read_text())
        trained_on = Path(record["dataset"])
        indices = np.asarray(record["split"]["test"], dtype=np.int64)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise DataError(path, f"cannot read the dataset and test split of the run: {error}") from error
    if trained_on.resolve() != Path(dataset).resolve():
        return None
    if indices.size == 0 and "test_dataset" in record:
        raise ValueError(f"{source}: the run is tested on its [data] test_dataset {record['test_dataset']}: "
                         "evaluate it on that dataset")
    return indices


@torch.no_grad()
def pearson_rows(
    label: str, predictions: Sequence[torch.Tensor], graphs: Sequence[Data], ceiling: NoiseCeiling
) -> list[PearsonRow]:
    """One :class:`PearsonRow` per type in :data:`TYPE_NAMES` for ``predictions`` of ``graphs``' targets.

    Args:
        label: the rows' model name.
        predictions: ``[N, T]`` per graph, in the order of ``graphs``.
        graphs: graphs of one dataset, as :meth:`TrainedModel.graphs` builds them; a particle
            enters only if every one of its targets exists (``target_mask``).
        ceiling: the noise ceiling of the targets of the same configurations.
    """
    targets = [data.y for data in graphs]
    present = [data.target_mask.all(dim=1) for data in graphs]
    rows = []
    for code, name in enumerate(TYPE_NAMES):
        masks = [mask & particles_of_types(data.types, (code,)) for mask, data in zip(present, graphs)]
        per_configuration = torch.stack([
            pearson_per_timescale(prediction, target, mask)
            for prediction, target, mask in zip(predictions, targets, masks)
        ])
        mean, std = summarise(per_configuration)
        pooled = pooled_pearson_per_timescale(predictions, targets, masks)
        rows.append(PearsonRow(label, name, mean.numpy(), std.numpy(), len(graphs), pooled.numpy(),
                               ceiling.values[code], ceiling.method))
    return rows


def require_model_times(source: str | Path, model_times: Sequence[float], dataset: str | Path, times: np.ndarray) -> None:
    """Check that the model of ``source`` predicts at ``times`` [T] (LJ units), those of ``dataset``.

    Raises:
        ValueError: naming both, when the times differ (in number or, relatively, by more than 1e-6).
    """
    model_times = np.asarray(model_times, dtype=np.float64)
    if model_times.shape != times.shape or not np.allclose(model_times, times, rtol=1e-6):
        raise ValueError(f"{source} predicts at times {model_times.tolist()}, dataset {dataset} stores {times.tolist()}")


def published_predictions(dataset: Dataset, indices: Sequence[int]) -> dict[str, list[torch.Tensor]]:
    """The predictions of the published models (:data:`~equiglass.data.format.PUBLISHED_MODELS`) that
    ``dataset`` stores (GlassBench test files: ``published_<MODEL>``), ``[N, T]`` float32 per configuration
    of ``indices``, by model name; empty when it stores none.

    Raises:
        DataError: a configuration lacks a prediction that the first one has.
    """
    first = dataset.read(int(indices[0]))
    names = [name for name in PUBLISHED_MODELS if f"published_{name}" in first]
    out: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for index in indices:
        fields = first if index == indices[0] else dataset.read(int(index))
        for name in names:
            if f"published_{name}" not in fields:
                raise DataError(dataset.files[int(index)], f"lacks the published {name} predictions the other configurations have")
            out[name].append(torch.from_numpy(np.ascontiguousarray(fields[f"published_{name}"].T, dtype=np.float32)))
    return out


def evaluate(
    models: str | Path | Sequence[str | Path],
    dataset: str | Path,
    indices: Sequence[int] | np.ndarray | None = None,
    *,
    out: str | Path | None = None,
    split: str = "test",
) -> PearsonTable:
    """Pearson correlation of every model on ``dataset``, per time and type (see the module docstring).

    Args:
        models: a run directory (its ``best.pt`` is used) or checkpoint file, or a sequence of them.
        dataset: dataset directory; its times must be the models' times.
        indices: configurations of ``dataset`` to evaluate every model on; when given, ``split``
            is not used.
        out: if given, directory for ``pearson.md``, ``pearson.csv`` and ``pearson.png``.
        split: ``"test"``: each run's test configurations when ``dataset`` is the dataset the
            run was trained on, every configuration otherwise; ``"all"``: every configuration.

    Returns:
        The table, one row per model and type (A, B), in the order of ``models``.

    Raises:
        ValueError: no models, an unknown split, no configuration to evaluate, or a model
            trained on other times than the dataset's.
        DataError: an unreadable dataset, checkpoint or ``run.json``.
        OSError: ``out`` cannot be created or written.
        IndexError: an index out of range.
    """
    models = [models] if isinstance(models, (str, Path)) else list(models)
    if not models:
        raise ValueError("evaluate needs at least one model")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if indices is not None:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size == 0:
            raise ValueError("indices select no configuration")
    opened = load_dataset(dataset)
    times = opened.times
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)  # an unusable output directory fails before the work
    rows: list[PearsonRow] = []
    labels: list[str] = []
    evaluated: dict[tuple[int, ...] | None, tuple[str, list[Data]]] = {}  # configurations -> first model's label, graphs
    ceiling_of = functools.cache(lambda chosen: dataset_ceiling(opened, chosen))  # tuple of indices or None
    for source in models:
        label = model_label(source)
        labels.append(label if label not in labels else f"{label} ({len(labels) + 1})")
        trained = load_checkpoint(source)
        require_model_times(source, trained.times, dataset, times)
        chosen = indices
        if chosen is None and split == "test":
            chosen = held_out_indices(source, dataset)
            if chosen is not None and chosen.size == 0:
                raise ValueError(f"{source}: the run has no test configurations; evaluate with split 'all'")
        graphs = trained.graphs(dataset, indices=chosen)
        log.info("%s: evaluating on %d configurations of %s", labels[-1], len(graphs), dataset)
        key = None if chosen is None else tuple(chosen.tolist())
        rows += pearson_rows(labels[-1], [trained.predict(data) for data in graphs], graphs, ceiling_of(key))
        evaluated.setdefault(key, (labels[-1], graphs))
    for key, (label, graphs) in evaluated.items():
        chosen = range(len(opened)) if key is None else key
        for name, predictions in published_predictions(opened, chosen).items():
            suffix = f", configurations of {label}" if len(evaluated) > 1 else ""
            rows += pearson_rows(f"{name} (published{suffix})", predictions, graphs, ceiling_of(key))
    selection = split if indices is None else f"configurations {indices.tolist()}"
    table = PearsonTable(times, tuple(rows), Path(dataset), selection)
    if out is not None:
        table.write(out)
    return table
