"""Inherent states for a dataset that lacks them: `equiglass inherent-states`.

Bapst et al.'s and Shiba et al.'s files hold no inherent states, so the displacement d from
the inherent state (the recipe's input, ``[data] with_is_displacement``) cannot be used on them
as converted. This module minimises every configuration's potential energy with the same
LAMMPS engine and minimiser as `equiglass generate` and adds the fields the generator writes:
``is_positions`` [N, 3] (wrapped, LJ lengths), ``is_potential_energy`` [N] and, where absent,
``potential_energy`` [N] (LJ energies) of the thermal positions. Every other array is kept as
it was.

The model is the Kob-Andersen mixture at the dataset's own N and box (cubic; the manifest's
density): the system of every dataset equiglass reads. Each configuration file is rewritten
atomically once its minimisation is done, so an interrupted run loses nothing and a rerun
minimises only the configurations still without an inherent state. The manifest declares the
new fields present (and records how they were made) once every configuration has them: until
then the dataset reads as before.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from equiglass.data.format import Dataset, load_dataset, write_configuration, write_manifest
from equiglass.data.geometry import minimum_image
from equiglass.errors import DataError
from equiglass.simulate.lammps import lammps_version
from equiglass.simulate.protocol import GenerationProtocol
from equiglass.simulate.workers import inherent_state_task, running_executor

logger = logging.getLogger(__name__)

#: The fields a minimisation adds (``potential_energy`` only where the dataset lacks it).
INHERENT_FIELDS = ("is_positions", "is_potential_energy", "potential_energy")


@dataclass(frozen=True)
class InherentStatesReport:
    """What :func:`add_inherent_states` did.

    Attributes:
        minimised: indices of the configurations minimised by this call.
        present: indices of those that already had an inherent state.
    """

    minimised: list[int]
    present: list[int]


def add_inherent_states(
    directory: str | Path,
    *,
    workers: int = 0,
    minimizer: str = "fire",
    force_tolerance: float = 1e-6,
    max_iterations: int = 100_000,
    command: str = "",
) -> InherentStatesReport:
    """Minimise every configuration of ``directory`` that has no inherent state, and record them.

    Args:
        directory: an equiglass dataset (e.g. converted from Bapst et al.'s or Shiba et al.'s files).
        workers: worker processes, one LAMMPS instance each; 0 runs in this process (same results).
        minimizer: ``"fire"`` or ``"cg"`` (LAMMPS ``min_style``), as ``equiglass generate --minimizer``.
        force_tolerance: stop when max_i |F_i| is below this (LJ force units).
        max_iterations: iteration limit of one minimisation (an error if it is not converged by then).
        command: the command line, recorded in the manifest.

    Returns:
        The configurations minimised now and those that already had their inherent state.

    Raises:
        DataError: naming the file: an unreadable dataset or configuration, a box that is not
            cubic, or a minimisation that does not converge.
        ValueError: a malformed option.
    """
    if not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be a non-negative integer, got {workers!r}")
    dataset = load_dataset(directory)
    missing, present, side, held = _scan(dataset)
    n_particles = int(dataset.manifest["n_particles"])
    protocol = GenerationProtocol(  # the density that gives the files' box to rounding
        n_particles=n_particles, density=n_particles / side**3,
        minimizer=minimizer, force_tolerance=force_tolerance, minimizer_max_iterations=max_iterations,
    )  # fmt: skip
    logger.info("%s: %d configurations, %d with an inherent state, %d to minimise",
                dataset.directory, len(dataset), len(present), len(missing))
    if missing:
        _minimise(dataset, protocol, missing, workers)
    _declare_present(dataset, protocol, command, held)
    return InherentStatesReport(minimised=missing, present=present)


def _scan(dataset: Dataset) -> tuple[list[int], list[int], float, set[str]]:
    """Indices of the configurations without and with ``is_positions``, the side of their common
    cubic box (LJ lengths), and the :data:`INHERENT_FIELDS` that every configuration with
    ``is_positions`` holds (GlassBench's files have inherent positions without their energies);
    every file is read and checked."""
    if not dataset.files:
        raise DataError(dataset.directory / "manifest.json", "lists no configuration")
    missing, present, side, held = [], [], None, set(INHERENT_FIELDS)
    for index, path in enumerate(dataset.files):
        fields = dataset.read(path)
        box = fields["box"]
        side = float(box[0]) if side is None else side
        if not np.allclose(box, side, rtol=1e-12, atol=0):
            raise DataError(path, f"box {box.tolist()} is not the cube of side {side} of the dataset's first "
                                  "configuration: the Kob-Andersen engine takes one cubic box")
        if "is_positions" in fields:
            present.append(index)
            held &= set(fields)
        else:
            missing.append(index)
    return missing, present, side, held


def _minimise(dataset: Dataset, protocol: GenerationProtocol, missing: list[int], workers: int) -> None:
    """Minimise the configurations ``missing`` and rewrite each file once its own is done, in order,
    with at most two minimisations per worker in flight (memory stays bounded on large datasets)."""
    progress = tqdm(total=len(missing), desc="inherent states", unit="configuration", disable=None, dynamic_ncols=True)
    in_flight: list[tuple[int, dict[str, np.ndarray], Future, float]] = []

    def write_oldest() -> None:
        index, fields, future, started = in_flight.pop(0)
        wait([future])
        try:
            minimum = future.result()
        except RuntimeError as error:  # the engine's minimisation did not converge
            raise DataError(dataset.files[index], f"no inherent state: {error}") from error
        _write(dataset, index, fields, minimum, started)
        progress.update()

    with running_executor(protocol, min(workers, len(missing)), progress) as executor:
        for index in missing:
            fields = dataset.read(index)
            started = time.perf_counter()
            future = executor.submit(inherent_state_task, fields["positions"], fields["types"])
            in_flight.append((index, fields, future, started))
            if len(in_flight) > 2 * max(workers, 1):
                write_oldest()
        while in_flight:
            write_oldest()


def _write(dataset: Dataset, index: int, fields: dict[str, np.ndarray], minimum: dict[str, np.ndarray],
           started: float) -> None:
    """Rewrite configuration ``index`` with its inherent state (the stored thermal energy is kept)."""
    path = dataset.files[index]
    added = {name: minimum[name] for name in INHERENT_FIELDS if name not in fields}
    write_configuration(path, {**fields, **added}, **dataset.checks())
    logger.info("%s: u = %.4f, u_IS = %.4f, rms |d| = %.4f [%.1f s]", path.name,
                float(np.mean(minimum["potential_energy"])), float(np.mean(minimum["is_potential_energy"])),
                float(np.sqrt(np.mean(np.sum(minimum_image(fields["positions"] - minimum["is_positions"],
                                                            fields["box"]) ** 2, axis=1)))),
                time.perf_counter() - started)


def _declare_present(dataset: Dataset, protocol: GenerationProtocol, command: str, held: set[str]) -> None:
    """Once every configuration has them, drop the inherent fields from the manifest's absent ones:
    those ``held`` by the configurations that had an inherent state before, and all of them on
    those minimised now."""
    absent = [name for name in dataset.absent_fields if name not in held]
    if absent == list(dataset.absent_fields):
        return
    manifest = dict(dataset.manifest)
    manifest["absent_fields"] = absent
    manifest["inherent_states"] = (
        f"{protocol.minimizer} minimisation to max_i |F_i| < {protocol.force_tolerance:g} with LAMMPS "
        f"{lammps_version()}, added by: {command or 'equiglass.simulate.inherent.add_inherent_states'}"
    )
    write_manifest(dataset.directory, manifest)
