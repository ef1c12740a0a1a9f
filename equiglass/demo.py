"""The demo (``make demo``): train the PCL22 model and the baselines on the embedded data, compare them.

``equiglass demo [--out DIR] [--epochs N]`` trains, on ``data/demo`` (KA, T = 0.6, N = 1000,
24 configurations), one run per model from the TOML configs ``demo_<model>.toml``
that ship with the package (:mod:`equiglass.resources`):

* ``equivariant``: the PCL22 rotation-equivariant GNN;
* ``bapst``: the invariant GNN of Bapst et al. (2020);
* ``ridge``: ridge regression on structural descriptors;
* ``displacement``: the displacement baseline, each particle's distance |d| from its inherent
  state (coarse-grained, a ridge fit): the cage vibration every model is also given;
* ``force``: the force baseline, the magnitude of the KA force on each particle (a ridge fit
  on that one feature): what a model must beat at the shortest times;
* ``equivariant_l0`` (with ``--models``): the same equivariant code with l_max = 0 at a matched
  parameter count, the distances-only ablation.

Each run is left in ``DIR/<model>`` with its ``best.pt`` (usable by ``equiglass evaluate``,
``predict`` and ``check-equivariance``). Then every model is evaluated on its test
configurations (:mod:`equiglass.analysis.evaluate`): the Pearson table is printed and written, with
its plot, into ``DIR``. The default models train in about four minutes on 2 idle CPU cores.
Rerunning the command resumes unfinished runs and re-evaluates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from equiglass.resources import DEMO_CONFIGS

if TYPE_CHECKING:  # importing torch is slow; the command line imports this module for its constants
    from equiglass.analysis.evaluate import PearsonTable

log = logging.getLogger(__name__)

#: Models trained by default, in the order of the table.
DEMO_MODELS: tuple[str, ...] = ("equivariant", "bapst", "ridge", "displacement", "force")
#: Every model with a demo config.
ALL_DEMO_MODELS: tuple[str, ...] = (*DEMO_MODELS, "equivariant_l0")


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` produced.

    Attributes:
        runs: model name -> run directory.
        table: the Pearson table of every model on the test configurations.
        wall_time: seconds the demo took (training and evaluation).
    """

    runs: dict[str, Path]
    table: PearsonTable
    wall_time: float


def demo_config(name: str, configs: str | Path = DEMO_CONFIGS) -> Path:
    """The config file of demo model ``name`` in ``configs``.

    Raises:
        ValueError: no such file (a package installed without its repository, or a typo).
    """
    path = Path(configs) / f"demo_{name}.toml"
    if not path.is_file():
        raise ValueError(
            f"no demo config {path}: the demo configs ship with the package (equiglass/resources/configs); "
            "pass --configs"
        )
    return path


def run_demo(
    out: str | Path = "runs/demo",
    *,
    epochs: int | None = None,
    models: Sequence[str] = DEMO_MODELS,
    configs: str | Path = DEMO_CONFIGS,
) -> DemoResult:
    """Train every model of ``models`` (resuming), evaluate them on the test split, write the table and a picture.

    Args:
        out: directory of the runs (``out/<model>``), of ``pearson.{md,csv,png}`` and of
            ``propensity_<configuration>.png`` (the first model on its first test configuration,
            :mod:`equiglass.analysis.render`).
        epochs: override the configs' number of epochs (None: as configured).
        models: demo model names (see :data:`ALL_DEMO_MODELS`).
        configs: directory holding ``demo_<model>.toml``; the models are evaluated on the
            dataset of the first one's config (the demo dataset).

    Returns:
        The runs, the table and the wall time.
    """
    from equiglass.analysis.evaluate import evaluate, held_out_indices
    from equiglass.analysis.render import render
    from equiglass.training.config import load_config
    from equiglass.training.loop import train

    start = time.perf_counter()
    out = Path(out)
    runs: dict[str, Path] = {}
    datasets: list[Path] = []
    for name in models:
        config = load_config(demo_config(name, configs))
        runs[name] = out / name
        datasets.append(config.data.dataset)
        log.info("demo: training %s (%s) in %s", name, config.path, runs[name])
        train(config, runs[name], resume=True, epochs=epochs)
    table = evaluate(list(runs.values()), datasets[0], out=out, split="test")
    first = next(iter(runs.values()))
    render(first, datasets[0], out, configuration=int(held_out_indices(first, datasets[0])[0]))
    return DemoResult(runs, table, time.perf_counter() - start)
