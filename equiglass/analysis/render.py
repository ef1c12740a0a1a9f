"""Pictures of one configuration: measured and predicted propensity in a slab of the box, side by side.

``equiglass render CHECKPOINT DATASET --out DIR`` draws, for one configuration, one row per
time: the particles of a slab of the box (``|z - L_z / 2| < thickness / 2``, seen along z,
radius by species) coloured by the measured propensity, the same particles coloured by the
model's prediction (each panel on its own colour scale, from its 2nd to its 98th percentile:
a model is judged by correlation, not by its units), and the scatter of predicted against
measured propensity over every particle of the configuration, with the Pearson of each
species. Matplotlib only, no display needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from equiglass.analysis.evaluate import require_model_times
from equiglass.data.format import atomic_write, load_dataset
from equiglass.errors import DataError
from equiglass.metrics import pearson_per_timescale
from equiglass.training.checkpoint import load_checkpoint

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Default slab thickness (LJ units): about one and a half shells of neighbours.
SLAB_THICKNESS = 1.5
#: Marker area (points²) of A and B particles in the slab panels (B is the smaller species).
MARKER_AREA = (30.0, 14.0)
#: Species names, by type code.
SPECIES = ("A", "B")


def slab(positions: np.ndarray, box: np.ndarray, thickness: float = SLAB_THICKNESS) -> np.ndarray:
    """``positions [N, 3]`` (box units, wrapped into ``[0, box)``), ``box [3]`` -> ``[N]`` bool:
    the particles with ``|z - box_z / 2| < thickness / 2``."""
    if not thickness > 0:
        raise ValueError(f"slab thickness must be positive, got {thickness}")
    return np.abs(positions[:, 2] - box[2] / 2) < thickness / 2


def propensity_figure(
    positions: np.ndarray,
    types: np.ndarray,
    box: np.ndarray,
    measured: np.ndarray,
    predicted: np.ndarray,
    times: Sequence[float],
    thickness: float = SLAB_THICKNESS,
) -> Figure:
    """The picture of the module docstring: one row per time, three panels per row.

    Args:
        positions: [N, 3] wrapped positions (LJ units); types: [N] 0 = A, 1 = B; box: [3].
        measured, predicted: [N, T] propensities (LJ lengths) at ``times`` [T].
        thickness: slab thickness (LJ units).

    Close the figure with ``pyplot.close``.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    inside = slab(positions, box, thickness)
    sizes = np.asarray(MARKER_AREA)[types[inside]]
    pearson = [pearson_per_timescale(torch.from_numpy(predicted), torch.from_numpy(measured), torch.from_numpy(types == code))
               for code in range(len(SPECIES))]
    figure, axes = plt.subplots(len(times), 3, figsize=(13, 4.2 * len(times)), squeeze=False)
    for k, time in enumerate(times):
        for ax, values, name in zip(axes[k, :2], (measured[:, k], predicted[:, k]), ("measured", "predicted")):
            low, high = np.percentile(values, [2, 98])
            image = ax.scatter(*positions[inside, :2].T, c=values[inside], s=sizes, cmap="inferno", vmin=low, vmax=high)
            ax.set(xlim=(0, box[0]), ylim=(0, box[1]), aspect="equal", xlabel="x", ylabel="y",
                   title=f"{name} propensity, t = {time:.4g}")
            figure.colorbar(image, ax=ax, fraction=0.046)
        scatter = axes[k, 2]
        for code, species in enumerate(SPECIES):
            chosen = types == code
            scatter.scatter(measured[chosen, k], predicted[chosen, k], s=3, alpha=0.4,
                            label=f"{species}: Pearson {float(pearson[code][k]):.3f}")
        scatter.set(xlabel="measured propensity", ylabel="predicted propensity", title=f"t = {time:.4g}")
        scatter.legend(loc="upper left", fontsize=8)
    figure.suptitle(f"slab |z - L/2| < {thickness / 2:g} ({int(inside.sum())} particles); scatter: all {len(types)}")
    figure.tight_layout()
    return figure


def render(
    checkpoint: str | Path,
    dataset: str | Path,
    out: str | Path,
    configuration: int = 0,
    thickness: float = SLAB_THICKNESS,
) -> Path:
    """Draw :func:`propensity_figure` for configuration ``configuration`` of ``dataset`` with the
    model of ``checkpoint`` (a checkpoint or run directory) into ``out/propensity_<file stem>.png``.

    Raises:
        DataError: an unreadable dataset or checkpoint, a dataset without measured propensity, or
            no configuration ``configuration``.
        ValueError: the model's times are not the dataset's.
    """
    from matplotlib import pyplot as plt

    opened = load_dataset(dataset)
    opened.require_targets("rendering measured against predicted propensity")
    trained = load_checkpoint(checkpoint)
    require_model_times(checkpoint, trained.times, dataset, opened.times)
    if not 0 <= configuration < len(opened):
        raise DataError(opened.directory, f"has {len(opened)} configurations, no configuration {configuration}")
    path = opened.files[configuration]
    fields = opened.read(configuration)
    graph = trained.graphs(dataset, indices=[configuration])[0]
    predicted = trained.predict(graph).double().numpy()
    figure = propensity_figure(fields["positions"], fields["types"], fields["box"], fields["propensity"].T, predicted,
                               opened.times.tolist(), thickness)
    try:
        return atomic_write(Path(out) / f"propensity_{path.stem}.png", lambda stream: figure.savefig(stream, format="png", dpi=80))
    finally:
        plt.close(figure)
