"""The datasets of an experiment: Bapst et al.'s files converted once, and the facts a results
table states about each dataset (temperature, N, τ_α, stored times).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from equiglass.data.format import MANIFEST_NAME, load_dataset
from equiglass.simulate.protocol import SOURCE

log = logging.getLogger(__name__)


def prepare_dataset(source: Path, out: Path) -> Path:
    """An equiglass dataset for ``source``: itself when it holds a manifest, else Bapst et al.'s
    files converted (once, resumably) into ``out/datasets/<name>``. A generated dataset whose
    configurations are missing (committed as its manifest alone) is first completed by
    :func:`~equiglass.simulate.generate.complete_dataset`, one worker per CPU core."""
    if (source / MANIFEST_NAME).is_file():
        dataset = load_dataset(source, require_complete=False)
        if len(dataset) < len(dataset.manifest["configurations"]) and dataset.manifest.get("source") == SOURCE:
            from equiglass.simulate.generate import complete_dataset

            missing = len(dataset.manifest["configurations"]) - len(dataset)
            log.info("%s: generating its %d missing configurations from the manifest's protocol (resumable; "
                     "2-4 CPU-minutes each for N = 1000 at T = 0.6)", source, missing)
            complete_dataset(source, workers=os.cpu_count() or 1)
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
