"""The outputs every experiment kind shares: ``results.json``, the common head of ``results.md``
(title, datasets, runs), Pearson tables as JSON, and plots saved as PNG."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from equiglass.data.format import atomic_write


def table_json(table: Any) -> dict[str, Any]:
    """A :class:`~equiglass.analysis.evaluate.PearsonTable` as plain JSON values; each row carries the
    noise ceiling of its targets (``ceiling``, null where unknown), ``pearson_over_ceiling`` and
    ``ceiling_method``."""
    return {
        "times": [float(t) for t in table.times],
        "rows": [
            {"model": row.model, "type": row.particle_type, "mean": row.mean.tolist(), "std": row.std.tolist(),
             "configurations": row.n_configurations, "pooled": row.pooled.tolist(),
             "ceiling": _finite_or_null(row.ceiling), "pearson_over_ceiling": _finite_or_null(row.fraction_of_ceiling),
             "ceiling_method": row.ceiling_method}
            for row in table.rows
        ],
    }


def _finite_or_null(values: Any) -> list[float | None]:
    """[T] floats as a JSON list, NaN (unknown) as None."""
    return [float(value) if math.isfinite(value) else None for value in values]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def save_figure(figure: Any, path: Path) -> None:
    """Write ``figure`` to ``path`` as a 120 dpi PNG (atomically) and close it."""
    atomic_write(path, lambda stream: figure.savefig(stream, format="png", dpi=120))
    pyplot().close(figure)


def summary_markdown(results: Mapping[str, Any]) -> list[str]:
    """The head of ``results.md``: title, spec, the datasets, the runs (parameters, epochs, wall
    time) and the skipped runs, ending with a blank line; a kind's section follows it."""
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
    return lines


def write_results(out: Path, results: Mapping[str, Any], markdown: str) -> None:
    """Write ``out/results.json`` (``results``, indented) and ``out/results.md`` (``markdown``), atomically."""
    atomic_write(out / "results.json", lambda stream: stream.write(json.dumps(results, indent=2, default=str) + "\n"),
                 binary=False)
    atomic_write(out / "results.md", lambda stream: stream.write(markdown), binary=False)
