"""Iso-configurational Kob-Andersen datasets generated with LAMMPS (``equiglass generate``): the scheduler.

A dataset is made of independent *chains*. Chain c starts from its own seed:
a random (or lattice) start, overlap relaxation, NVT equilibration for
``equilibration_tau`` x ``tau_alpha_estimate``, then ``configurations_per_chain``
configurations sampled ``sampling_interval_tau`` x ``tau_alpha_estimate`` apart.
For every sampled configuration:

(a) the inherent state is found by energy minimisation from a copy (per-particle
    potential energies of the thermal and the inherent state are kept);
(b) R iso-configurational trajectories start from the same positions with fresh
    Maxwell-Boltzmann velocities (seed derived from the protocol seed, the
    configuration index and the replica), under the same thermostat (reset for
    each trajectory); unwrapped positions are recorded at the stored times;
(c) propensity, mean squared displacement and F_s,A(q, t) are averaged over the
    R trajectories, and the propensity over each half of them (``propensity_halves``,
    for the split-half noise ceiling, `equiglass.analysis.noise_ceiling`), and
    written to ``configuration_XXXXX.npz`` (`equiglass.data.format`).

Chains are the unit of sharding (``shard=(i, n)`` takes the chains c with
c % n == i), so array jobs can split one dataset without coordination. Every
configuration is written atomically and a rerun skips those already present,
so an interrupted run resumes; a chain is deterministic given its seed (LAMMPS
with one thread is bit-reproducible), so the chain's equilibration is rerun and
only the missing configurations' trajectories are computed, with results
identical to an uninterrupted run.

This module is the scheduler: `generate` claims (or checks) the manifest,
holding the directory's lock (`LOCK_NAME`) so that two runs with different
protocols cannot both claim it, takes its shard's lock for the whole run (a
second run of the same shard is refused; shards run concurrently), scans what
already exists, runs the chains in the main process, submits a
configuration's tasks as soon as it is sampled and writes each configuration
when its tasks are done (workers never touch the directory), then records
tau_alpha once the dataset is complete. The tasks run in worker processes, each
holding one persistent LAMMPS instance (`equiglass.simulate.workers`); the
parameters and seeds are `equiglass.simulate.protocol.GenerationProtocol`.
Ctrl-C (and SIGTERM, under `equiglass.process_pool.interrupt_on_sigterm`) stops the main process and
terminates the workers at once; rerun the same command to resume.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import equiglass
from equiglass.data.format import (
    MANIFEST_NAME,
    arrays_sha256,
    configuration_filename,
    read_configuration,
    write_configuration,
    write_manifest,
)
from equiglass.errors import DataError
from equiglass.physics import kob_andersen as ka
from equiglass.physics import observables
from equiglass.simulate.lammps import KobAndersenLammps, lammps_version
from equiglass.simulate.protocol import HALVES_DEFINITION, PROPENSITY_DEFINITION, SOURCE, GenerationProtocol
from equiglass.simulate.workers import inherent_state_task, running_executor, trajectory_task

logger = logging.getLogger(__name__)

CHAIN_CHUNK_STEPS = 2000
"""The chains run in pieces of at most this many steps, between which finished configurations are written
and an interrupt (Ctrl-C) is handled; part of the protocol's arithmetic, so that results never depend on timing."""

LOCK_NAME = ".generate.lock"
"""File of the dataset directory locked (``flock``) while a run checks or updates the manifest."""


@dataclass(frozen=True)
class GenerationReport:
    """What one `generate` call did.

    Attributes:
        written: configuration indices computed and written by this call.
        skipped: indices of this shard already present and valid (not recomputed).
        corrupt: indices of this shard whose existing file was unreadable or
            invalid, and which were regenerated (also in `written`).
        complete: whether every configuration of the dataset now exists.
        tau_alpha: dataset tau_alpha (LJ time) if complete and F_s reached 1/e, else None.
    """

    written: list[int]
    skipped: list[int]
    corrupt: list[int]
    complete: bool
    tau_alpha: float | None


def generate(
    directory: str | Path,
    protocol: GenerationProtocol,
    *,
    workers: int = 0,
    shard: tuple[int, int] = (0, 1),
    command: str = "",
) -> GenerationReport:
    """Generate (or complete) the dataset of `protocol` in `directory`.

    Args:
        directory: the dataset directory (created if needed).
        protocol: every physical and numerical parameter.
        workers: worker processes, each with one LAMMPS instance; 0 runs all
            tasks in this process (same results, bit for bit).
        shard: (i, n): generate only the chains c with c % n == i.
        command: the command line to record in the manifest.

    Returns:
        A `GenerationReport`.

    Raises:
        DataError: if `directory` holds a dataset made with another protocol
            or LAMMPS version, or another process is generating the same shard there.
        ValueError: on a malformed shard or worker count.
    """
    index, count = shard
    if not (isinstance(count, int) and isinstance(index, int) and count >= 1 and 0 <= index < count):
        raise ValueError(f"shard must be i/n with 0 <= i < n, got {index}/{count}")
    if not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be a non-negative integer, got {workers!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with _directory_lock(directory):
        _open_manifest(directory, protocol, command)

    with _shard_lock(directory, shard):
        chains = [chain for chain in range(protocol.n_chains) if chain % count == index]
        missing, skipped, corrupt = _scan(directory, protocol, chains)
        logger.info(
            "%s: shard %d/%d holds %d chains and %d configurations; %d already present and skipped, %d to generate",
            directory, index, count, len(chains), len(missing) + len(skipped), len(skipped), len(missing),
        )  # fmt: skip
        if missing:
            _generate_missing(directory, protocol, missing, workers)
    with _directory_lock(directory):
        complete, tau_alpha = _finalise(directory, protocol)
    return GenerationReport(written=missing, skipped=skipped, corrupt=corrupt, complete=complete, tau_alpha=tau_alpha)


# ------------------------------------------------------------------ locks


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """Hold the directory's `LOCK_NAME` lock, waiting for it: makes reading and writing the manifest atomic."""
    with open(directory / LOCK_NAME, "a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def _shard_lock(directory: Path, shard: tuple[int, int]) -> Iterator[None]:
    """Hold the lock of `shard` in `directory` for a run; the OS releases it if the process dies.

    Raises:
        DataError: if another process holds it (is generating this shard here).
    """
    index, count = shard
    path = directory / f".generate-shard-{index}-of-{count}.lock"
    with open(path, "a") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise DataError(
                path, f"another 'equiglass generate' is running shard {index}/{count} in this directory: wait for it"
            ) from error
        yield


# ------------------------------------------------------------------ manifest


def _open_manifest(directory: Path, protocol: GenerationProtocol, command: str) -> None:
    """Write the manifest of a new dataset, or check that an existing one has the same protocol and engine."""
    path = directory / MANIFEST_NAME
    engine = {"name": "LAMMPS", "version": lammps_version()}
    if path.is_file():
        try:
            existing = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DataError(path, f"manifest is not valid JSON: {error}") from error
        if not isinstance(existing, dict) or existing.get("source") != SOURCE:
            raise DataError(path, "this directory holds a dataset not made by 'equiglass generate': choose another")
        wanted = protocol.to_json()
        stored = existing.get("protocol", {})
        differences = [
            f"{name}: {stored.get(name)!r} in the manifest, {wanted.get(name)!r} now"
            for name in sorted(set(stored) | set(wanted))
            if stored.get(name) != wanted.get(name)
        ]
        if differences:
            raise DataError(
                path,
                "the dataset here was generated with a different protocol ("
                + "; ".join(differences)
                + "): use another directory, or the same options to resume",
            )
        if existing.get("engine") != engine:
            raise DataError(
                path,
                f"the dataset here was generated with {existing.get('engine')}, this run would use {engine}: "
                "results would not match bit for bit; use another directory",
            )
        return
    configurations = [
        {
            "file": configuration_filename(i),
            "chain": protocol.chain_of(i),
            "chain_seed": protocol.chain_seed(protocol.chain_of(i)),
            "velocity_seeds": [protocol.velocity_seed(i, r) for r in range(protocol.replicas)],
        }
        for i in range(protocol.n_configurations)
    ]
    manifest = {
        "source": SOURCE,
        "equiglass_version": equiglass.__version__,
        "engine": engine,
        "model": {
            "name": "Kob-Andersen 80:20 binary Lennard-Jones mixture, truncated at 2.5 sigma_ab and shifted",
            "epsilon": ka.EPSILON.tolist(),
            "sigma": ka.SIGMA.tolist(),
            "cutoff_ratio": ka.CUTOFF_RATIO,
            "fraction_a": ka.FRACTION_A,
            "mass": ka.MASS,
        },
        "n_particles": protocol.n_particles,
        "density": protocol.density,
        "temperature": protocol.temperature,
        "box": protocol.box.tolist(),
        "times": protocol.times.tolist(),
        "time_steps": protocol.time_steps.tolist(),
        "q": protocol.q,
        "propensity_definition": PROPENSITY_DEFINITION,
        "self_intermediate_scattering": "F_s,A(q, t): mean over replicas and A particles of sin(q|dr|)/(q|dr|)",
        "inherent_states": f"{protocol.minimizer} minimisation to max_i |F_i| < {protocol.force_tolerance:g}",
        "propensity_halves": HALVES_DEFINITION,
        "absent_fields": [] if protocol.replicas >= 2 else ["propensity_halves"],
        "protocol": protocol.to_json(),
        "seeds": {
            "chain": "numpy SeedSequence([protocol seed, 1, chain]).generate_state(1, uint32)",
            "velocities": "numpy SeedSequence([protocol seed, 2, configuration, replica]).generate_state(1, uint32)",
        },
        "n_chains": protocol.n_chains,
        "equilibration_steps": protocol.equilibration_steps,
        "sampling_interval_steps": protocol.sampling_interval_steps,
        "tau_alpha": None,
        "tau_alpha_per_configuration": None,
        "command": command,
        "configurations": configurations,
    }
    write_manifest(directory, manifest)


def complete_dataset(directory: str | Path, *, workers: int = 0) -> GenerationReport:
    """Generate the configurations missing from a dataset of ``equiglass generate`` whose manifest
    is present (e.g. a committed manifest whose arrays were too large to commit), with the
    protocol and seeds the manifest records; see :func:`generate` (``workers``, errors)."""
    path = Path(directory) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
        protocol = GenerationProtocol(**manifest["protocol"])
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise DataError(path, f"not the manifest of a generated dataset: {error}") from error
    return generate(directory, protocol, workers=workers, command=manifest.get("command", ""))


def _finalise(directory: Path, protocol: GenerationProtocol) -> tuple[bool, float | None]:
    """If every configuration exists, measure tau_alpha and record it in the manifest, with the
    :func:`~equiglass.data.format.arrays_sha256` of every configuration.

    tau_alpha is where F_s,A(q, t), averaged over replicas and configurations,
    crosses 1/e. Checksums already in the manifest (one committed without its arrays)
    are kept, and a configuration whose regenerated arrays differ is named in a warning.
    Returns (complete, tau_alpha or None).
    """
    paths = [directory / configuration_filename(i) for i in range(protocol.n_configurations)]
    if not all(path.is_file() for path in paths):
        return False, None
    try:
        # one configuration in memory at a time: its F_s and the checksum of its arrays
        read = [(arrays["self_intermediate_scattering"], arrays_sha256(arrays))
                for arrays in (read_configuration(path, **_checks(protocol)) for path in paths)]
    except DataError as error:
        logger.warning("cannot measure tau_alpha yet: %s (rerun to regenerate it)", error)
        return False, None
    fs = np.stack([scattering for scattering, _ in read])
    times = protocol.times
    tau_alpha = _finite_or_none(observables.relaxation_time(times, fs.mean(axis=0)))
    per_configuration = [_finite_or_none(observables.relaxation_time(times, row)) for row in fs]
    if tau_alpha is None:
        logger.warning(
            "F_s,A(q = %g, t) averaged over the dataset stays above 1/e up to t = %g (or is already below at t = %g): "
            "tau_alpha is not measured; tau_alpha_estimate = %g is probably far off",
            protocol.q, times[-1], times[0], protocol.tau_alpha_estimate,
        )  # fmt: skip
    else:
        logger.info("tau_alpha = %.4g (estimate %g)", tau_alpha, protocol.tau_alpha_estimate)
        separation = protocol.sampling_interval_tau * protocol.tau_alpha_estimate
        if tau_alpha > separation:
            logger.warning(
                "measured tau_alpha = %.4g exceeds the sampling interval %.4g (tau_alpha_estimate x "
                "sampling_interval_tau): successive configurations of a chain are not decorrelated; "
                "regenerate with a larger tau_alpha_estimate",
                tau_alpha, separation,
            )  # fmt: skip
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    manifest.update(tau_alpha=tau_alpha, tau_alpha_per_configuration=per_configuration)
    differing = []
    for entry, (_, checksum) in zip(manifest["configurations"], read):
        if entry.setdefault("arrays_sha256", checksum) != checksum:
            differing.append(entry["file"])
    if differing:
        logger.warning(
            "%s: the arrays of %d configurations differ from the checksums the manifest records (%s): this "
            "machine's LAMMPS build does not reproduce the recorded dataset bit for bit",
            directory, len(differing), ", ".join(differing[:5]) + (" ..." if len(differing) > 5 else ""),
        )  # fmt: skip
    write_manifest(directory, manifest)
    return True, tau_alpha


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _checks(protocol: GenerationProtocol) -> dict[str, Any]:
    return {"n_particles": protocol.n_particles, "density": protocol.density, "times": protocol.times}


def _scan(directory: Path, protocol: GenerationProtocol, chains: list[int]) -> tuple[list[int], list[int], list[int]]:
    """Sort the configurations of `chains` into (missing, present and valid, corrupt).

    Corrupt (unreadable or invalid) files are reported and also count as missing.
    """
    missing, skipped, corrupt = [], [], []
    for chain in chains:
        for i in protocol.chain_configurations(chain):
            path = directory / configuration_filename(i)
            if not path.is_file():
                missing.append(i)
                continue
            try:
                read_configuration(path, **_checks(protocol))
            except DataError as error:
                logger.warning("%s; it will be regenerated", error)
                corrupt.append(i)
                missing.append(i)
            else:
                skipped.append(i)
    return sorted(missing), skipped, corrupt


# ------------------------------------------------------------------ main process: chains and bookkeeping


@dataclass
class _Pending:
    """A sampled configuration whose tasks are running."""

    index: int
    positions: np.ndarray  # [N, 3] wrapped thermal positions
    types: np.ndarray  # [N]
    inherent: Future
    trajectories: list[Future]
    started: float

    def done(self) -> bool:
        return self.inherent.done() and all(future.done() for future in self.trajectories)

    def futures(self) -> list[Future]:
        return [self.inherent, *self.trajectories]


def _generate_missing(directory: Path, protocol: GenerationProtocol, missing: list[int], workers: int) -> None:
    """Run the chains that own `missing` configurations and write those configurations."""
    wanted = set(missing)
    pending: list[_Pending] = []
    progress = tqdm(
        total=len(missing) * protocol.replicas, desc="trajectories", unit="traj", disable=None, dynamic_ncols=True
    )
    with running_executor(protocol, workers, progress) as executor:

        def submit(index: int, positions: np.ndarray, types: np.ndarray) -> None:
            started = time.perf_counter()
            inherent = executor.submit(inherent_state_task, positions, types)
            trajectories = []
            for replica in range(protocol.replicas):
                future = executor.submit(trajectory_task, positions, types, protocol.velocity_seed(index, replica))
                future.add_done_callback(lambda _: progress.update())
                trajectories.append(future)
            pending.append(_Pending(index, positions, types, inherent, trajectories, started))

        def write_finished() -> None:
            _write_finished(directory, protocol, pending, block=False)

        for chain in sorted({protocol.chain_of(i) for i in wanted}):
            _run_chain(protocol, chain, wanted, submit, write_finished)
        _write_finished(directory, protocol, pending, block=True)


def _write_finished(directory: Path, protocol: GenerationProtocol, pending: list[_Pending], block: bool) -> None:
    """Write the configurations whose tasks are all done (all of them, waiting, if `block`), oldest first."""
    while pending and (block or pending[0].done()):
        item = pending.pop(0)
        wait(item.futures())
        _write_configuration(directory, protocol, item)


def _write_configuration(directory: Path, protocol: GenerationProtocol, item: _Pending) -> None:
    inherent = item.inherent.result()
    trajectories = np.stack([future.result() for future in item.trajectories])  # [R, T, N, 3]
    delta = observables.displacements(trajectories, item.positions, remove_centre_of_mass=True)
    fields = {
        "positions": item.positions,
        "types": item.types,
        "box": protocol.box,
        "is_positions": inherent["is_positions"],
        "potential_energy": inherent["potential_energy"],
        "is_potential_energy": inherent["is_potential_energy"],
        "times": protocol.times,
        "propensity": observables.propensity(delta),
        "msd": observables.mean_squared_displacement(delta),
        **({"propensity_halves": observables.propensity_halves(delta)} if protocol.replicas >= 2 else {}),
        "self_intermediate_scattering": observables.self_intermediate_scattering(
            delta, protocol.q, item.types == 0
        ),
    }
    path = write_configuration(directory / configuration_filename(item.index), fields, **_checks(protocol))
    logger.info(
        "%s (chain %d): u = %.4f, u_IS = %.4f, at t = %g mean propensity of A = %.3f, F_s,A = %.3f [%.1f s]",
        path.name, protocol.chain_of(item.index), fields["potential_energy"].mean(),
        fields["is_potential_energy"].mean(), protocol.times[-1], fields["propensity"][-1][item.types == 0].mean(),
        fields["self_intermediate_scattering"][-1], time.perf_counter() - item.started,
    )  # fmt: skip


def _run_chain(
    protocol: GenerationProtocol,
    chain: int,
    wanted: set[int],
    submit: Callable[[int, np.ndarray, np.ndarray], None],
    between_chunks: Callable[[], None],
) -> None:
    """Equilibrate chain `chain` and hand each of its configurations in `wanted` to `submit(index, positions, types)`.

    MD runs in pieces of at most `CHAIN_CHUNK_STEPS` steps, with a call to
    `between_chunks()` after each. The chain stops after its last wanted
    configuration. Given the protocol, the configurations depend only on the
    chain's seed.
    """
    seed = protocol.chain_seed(chain)
    box = protocol.box
    positions, types = ka.initial_positions(protocol.n_particles, box, np.random.default_rng(seed), protocol.start)
    configurations = protocol.chain_configurations(chain)
    last = max(i for i in configurations if i in wanted)
    started = time.perf_counter()
    with KobAndersenLammps(positions, types, box, **protocol.engine_options(), seed=seed) as engine:

        def advance(n_steps: int) -> None:
            for start in range(0, n_steps, CHAIN_CHUNK_STEPS):
                engine.run(min(CHAIN_CHUNK_STEPS, n_steps - start))
                between_chunks()

        engine.relax_overlaps()
        engine.draw_velocities(protocol.temperature, seed)
        advance(protocol.equilibration_steps)
        logger.info(
            "chain %d: equilibrated %d steps in %.1f s: T = %.3f, u = %.4f, P = %.3f",
            chain, protocol.equilibration_steps, time.perf_counter() - started, engine.kinetic_temperature(),
            engine.potential_energy() / protocol.n_particles, engine.pressure(),
        )  # fmt: skip
        for index in range(configurations.start, last + 1):
            if index > configurations.start:
                advance(protocol.sampling_interval_steps)
            if index in wanted:
                submit(index, engine.positions(), types)
