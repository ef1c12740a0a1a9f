"""Iso-configurational Kob-Andersen datasets generated with LAMMPS (``equiglass generate``).

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
    R trajectories and written to ``configuration_XXXXX.npz``
    (`equiglass.data.format`).

Chains are the unit of sharding (``shard=(i, n)`` takes the chains c with
c % n == i), so array jobs can split one dataset without coordination. Every
configuration is written atomically and a rerun skips those already present,
so an interrupted run resumes; a chain is deterministic given its seed (LAMMPS
with one thread is bit-reproducible), so the chain's equilibration is rerun and
only the missing configurations' trajectories are computed, with results
identical to an uninterrupted run.

Work is spread over a pool of worker processes, each holding one persistent
LAMMPS instance; the tasks are single trajectories and minimisations. The main
process runs the chains and submits a configuration's tasks as soon as it is
sampled, and writes each configuration when its tasks are done (workers never
touch the directory). Workers are started with the ``spawn`` method: forking a
process that has initialised MPI (mpich, through LAMMPS) and may run other
threads is unsafe even where it happens to work. Ctrl-C stops the main process
and terminates the workers at once; rerun the same command to resume.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import signal
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

import equiglass
from equiglass.data.format import (
    MANIFEST_NAME,
    configuration_filename,
    read_configuration,
    write_configuration,
    write_manifest,
)
from equiglass.errors import DataError
from equiglass.physics import kob_andersen as ka
from equiglass.physics import observables
from equiglass.simulate.lammps import KobAndersenLammps, lammps_version

logger = logging.getLogger(__name__)

SOURCE = "equiglass generate: Kob-Andersen iso-configurational ensemble simulated with LAMMPS"
PROPENSITY_DEFINITION = (
    "mean over R iso-configurational trajectories of |r_i(t) - r_i(0)|, centre-of-mass drift removed; "
    "msd holds the mean squared displacement"
)
_CHAIN_STREAM = 1
_VELOCITY_STREAM = 2
CHAIN_CHUNK_STEPS = 2000
"""The chains run in pieces of at most this many steps, between which finished configurations are written
and an interrupt (Ctrl-C) is handled; part of the protocol's arithmetic, so that results never depend on timing."""


def _option(default: Any, help: str) -> Any:
    """A dataclass field whose help text the command line shows."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class GenerationProtocol:
    """Every parameter of a generated dataset (LJ units; JSON-serialisable).

    The defaults make the demo dataset: N = 1000 at T = 0.6 (tau_alpha about
    13.4), 24 configurations in 6 chains, 16 trajectories each to 3 tau_alpha.
    Lengths of runs are multiples of ``tau_alpha_estimate``, which the user
    supplies; the generator measures tau_alpha and warns if the estimate was
    too small for the sampled configurations to be decorrelated.
    """

    n_particles: int = _option(1000, "number of particles N (80:20 A:B; at least 500 at density 1.2)")
    density: float = _option(ka.DENSITY, "number density N / V")
    temperature: float = _option(0.6, "temperature T (LJ units)")
    timestep: float = _option(0.005, "MD time step (LJ time)")
    thermostat: Literal["nose-hoover", "langevin", "nve"] = _option("nose-hoover", "thermostat of all runs")
    thermostat_damping: float = _option(
        0.5, "thermostat relaxation time (LJ time): LAMMPS Tdamp of fix nvt or fix langevin; 100 time steps is usual"
    )
    tau_alpha_estimate: float = _option(
        13.4, "estimate of tau_alpha at this temperature (LJ time); sets the lengths of all runs"
    )
    equilibration_tau: float = _option(10.0, "equilibration of each chain, in units of tau_alpha_estimate")
    sampling_interval_tau: float = _option(
        2.0, "time between configurations of a chain, in units of tau_alpha_estimate (at least 1)"
    )
    n_configurations: int = _option(24, "number of configurations in the dataset")
    configurations_per_chain: int = _option(4, "configurations sampled from each independent chain")
    replicas: int = _option(16, "iso-configurational trajectories per configuration")
    n_times: int = _option(10, "number of log-spaced stored time points")
    time_min: float = _option(0.05, "first stored time (LJ time)")
    time_max_tau: float = _option(3.0, "last stored time, in units of tau_alpha_estimate")
    q: float = _option(7.25, "wave number of F_s(q, t) (near the first peak of S(q) at density 1.2)")
    minimizer: Literal["fire", "cg"] = _option("fire", "minimiser for inherent states")
    force_tolerance: float = _option(1e-6, "inherent states: stop when max_i |F_i| is below this")
    minimizer_max_iterations: int = _option(100_000, "inherent states: iteration limit (error if not converged)")
    start: Literal["random", "lattice"] = _option("random", "initial configuration of each chain")
    seed: int = _option(0, "protocol seed, from which every chain and velocity seed is derived")
    threads: int = _option(1, "OpenMP threads per LAMMPS instance")

    def __post_init__(self) -> None:
        positive = (
            "density", "temperature", "timestep", "thermostat_damping", "tau_alpha_estimate",
            "equilibration_tau", "time_min", "time_max_tau", "q", "force_tolerance",
        )  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        at_least_one = (
            "n_configurations", "configurations_per_chain", "replicas", "n_times",
            "minimizer_max_iterations", "threads",
        )  # fmt: skip
        for name in at_least_one:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not self.sampling_interval_tau >= 1:
            raise ValueError(
                f"sampling_interval_tau must be at least 1 (configurations at least tau_alpha apart), "
                f"got {self.sampling_interval_tau!r}"
            )
        for name, choices in (
            ("thermostat", ("nose-hoover", "langevin", "nve")),
            ("minimizer", ("fire", "cg")),
            ("start", ("random", "lattice")),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if not isinstance(self.n_particles, int) or self.box_side < 2 * ka.MAX_CUTOFF:
            raise ValueError(
                f"n_particles = {self.n_particles!r} at density {self.density} gives a box side below twice "
                f"the largest cutoff ({2 * ka.MAX_CUTOFF}); use at least 500 particles at density 1.2"
            )
        if not self.time_max_tau * self.tau_alpha_estimate > self.time_min:
            raise ValueError("the last stored time (time_max_tau * tau_alpha_estimate) must exceed time_min")
        steps = self.time_steps
        if steps[0] < 1 or np.any(np.diff(steps) < 1):
            raise ValueError(
                f"the {self.n_times} log-spaced times from {self.time_min} to "
                f"{self.time_max_tau * self.tau_alpha_estimate:g} round to repeated numbers of time steps "
                f"{steps.tolist()}: use fewer times, a larger time_min or a smaller timestep"
            )

    @property
    def box_side(self) -> float:
        """Side of the cubic box (LJ lengths)."""
        return ka.box_length(self.n_particles, self.density)

    @property
    def box(self) -> np.ndarray:
        """[3] box sides (LJ lengths)."""
        return np.full(3, self.box_side)

    @property
    def time_steps(self) -> np.ndarray:
        """[T] int64: the stored times as whole numbers of time steps after the start of a trajectory."""
        times = np.geomspace(self.time_min, self.time_max_tau * self.tau_alpha_estimate, self.n_times)
        return np.rint(times / self.timestep).astype(np.int64)

    @property
    def times(self) -> np.ndarray:
        """[T] float64 stored times (LJ time): `time_steps` x timestep, the requested times rounded to whole steps."""
        return self.time_steps * self.timestep

    @property
    def equilibration_steps(self) -> int:
        """MD steps of each chain's equilibration."""
        return round(self.equilibration_tau * self.tau_alpha_estimate / self.timestep)

    @property
    def sampling_interval_steps(self) -> int:
        """MD steps between successive configurations of a chain."""
        return round(self.sampling_interval_tau * self.tau_alpha_estimate / self.timestep)

    @property
    def n_chains(self) -> int:
        """Number of chains; the last one is shorter if n_configurations is not a multiple."""
        return -(-self.n_configurations // self.configurations_per_chain)

    def chain_configurations(self, chain: int) -> range:
        """Indices of the configurations chain `chain` samples, in order."""
        first = chain * self.configurations_per_chain
        return range(first, min(first + self.configurations_per_chain, self.n_configurations))

    def chain_of(self, configuration: int) -> int:
        """The chain that samples configuration `configuration`."""
        return configuration // self.configurations_per_chain

    def chain_seed(self, chain: int) -> int:
        """Seed of chain `chain` (initial positions, types, velocities): SeedSequence([seed, 1, chain])."""
        return _derived_seed(self.seed, _CHAIN_STREAM, chain)

    def velocity_seed(self, configuration: int, replica: int) -> int:
        """Seed of one trajectory's initial velocities (and Langevin noise).

        Derived as SeedSequence([seed, 2, configuration, replica]).
        """
        return _derived_seed(self.seed, _VELOCITY_STREAM, configuration, replica)

    def to_json(self) -> dict[str, Any]:
        """The protocol as the JSON object stored in (and compared with) the manifest."""
        return json.loads(json.dumps(asdict(self)))


def _derived_seed(*entropy: int) -> int:
    return int(np.random.SeedSequence(list(entropy)).generate_state(1, dtype=np.uint32)[0])


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
            or LAMMPS version.
        ValueError: on a malformed shard or worker count.
    """
    index, count = shard
    if not (isinstance(count, int) and isinstance(index, int) and count >= 1 and 0 <= index < count):
        raise ValueError(f"shard must be i/n with 0 <= i < n, got {index}/{count}")
    if not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be a non-negative integer, got {workers!r}")
    directory = Path(directory)
    _open_manifest(directory, protocol, command)

    chains = [chain for chain in range(protocol.n_chains) if chain % count == index]
    missing, skipped, corrupt = _scan(directory, protocol, chains)
    logger.info(
        "%s: shard %d/%d holds %d chains and %d configurations; %d already present and skipped, %d to generate",
        directory, index, count, len(chains), len(missing) + len(skipped), len(skipped), len(missing),
    )  # fmt: skip
    if missing:
        _generate_missing(directory, protocol, missing, workers)
    complete, tau_alpha = _finalise(directory, protocol)
    return GenerationReport(written=missing, skipped=skipped, corrupt=corrupt, complete=complete, tau_alpha=tau_alpha)


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
        "absent_fields": [],
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


def _finalise(directory: Path, protocol: GenerationProtocol) -> tuple[bool, float | None]:
    """If every configuration exists, measure tau_alpha and record it in the manifest.

    tau_alpha is where F_s,A(q, t), averaged over replicas and configurations,
    crosses 1/e. Returns (complete, tau_alpha or None).
    """
    paths = [directory / configuration_filename(i) for i in range(protocol.n_configurations)]
    if not all(path.is_file() for path in paths):
        return False, None
    try:
        fs = np.stack([read_configuration(path, **_checks(protocol))["self_intermediate_scattering"] for path in paths])
    except DataError as error:
        logger.warning("cannot measure tau_alpha yet: %s (rerun to regenerate it)", error)
        return False, None
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
    executor: Executor
    if workers == 0:
        executor = _InlineExecutor()
        _start_worker(protocol)
    else:
        executor = _PoolExecutor(workers, protocol)
    progress = tqdm(
        total=len(missing) * protocol.replicas, desc="trajectories", unit="traj", disable=None, dynamic_ncols=True
    )

    def submit(index: int, positions: np.ndarray, types: np.ndarray) -> None:
        started = time.perf_counter()
        inherent = executor.submit(_inherent_state_task, positions, types)
        trajectories = []
        for replica in range(protocol.replicas):
            future = executor.submit(_trajectory_task, positions, types, protocol.velocity_seed(index, replica))
            future.add_done_callback(lambda _: progress.update())
            trajectories.append(future)
        pending.append(_Pending(index, positions, types, inherent, trajectories, started))

    def write_finished() -> None:
        _write_finished(directory, protocol, pending, block=False)

    try:
        with logging_redirect_tqdm():
            for chain in sorted({protocol.chain_of(i) for i in wanted}):
                _run_chain(protocol, chain, wanted, submit, write_finished)
            _write_finished(directory, protocol, pending, block=True)
        executor.shutdown(wait=True)
    except BaseException:
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        progress.close()
        if workers == 0:
            _stop_worker()


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
    with KobAndersenLammps(positions, types, box, **_engine_options(protocol), seed=seed) as engine:

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


def _engine_options(protocol: GenerationProtocol) -> dict[str, Any]:
    return {
        "timestep": protocol.timestep,
        "temperature": protocol.temperature,
        "thermostat": protocol.thermostat,
        "thermostat_damping": protocol.thermostat_damping,
        "threads": protocol.threads,
    }


class _PoolExecutor(ProcessPoolExecutor):
    """Worker processes started with ``spawn``, each running `_start_pool_worker` first.

    A crashed worker fails the run (``BrokenProcessPool``) instead of hanging
    it, and ``shutdown(cancel_futures=True)`` also terminates the workers,
    so that an interrupted run stops without finishing the trajectories in flight.
    """

    def __init__(self, workers: int, protocol: GenerationProtocol):
        super().__init__(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_pool_worker,
            initargs=(protocol,),
        )

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            # No public way to stop running tasks before Python 3.14 (terminate_workers): use the process table.
            for process in list((self._processes or {}).values()):
                process.terminate()
        super().shutdown(wait=wait, cancel_futures=cancel_futures)


class _InlineExecutor(Executor):
    """Runs each task at submission, in this process (``workers=0``)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as error:
            future.set_exception(error)
        return future


# ------------------------------------------------------------------ worker side


class _Worker:
    """One persistent LAMMPS instance for the tasks of a process.

    The instance is re-created only when a task brings a different type
    assignment (a new chain); a trajectory does not depend on what the
    instance ran before (positions, velocities, image flags and thermostat
    are all reset, and LAMMPS rebuilds its neighbour lists).
    """

    def __init__(self, protocol: GenerationProtocol):
        self.protocol = protocol
        self.engine: KobAndersenLammps | None = None
        self.types: np.ndarray | None = None

    def engine_for(self, positions: np.ndarray, types: np.ndarray) -> KobAndersenLammps:
        """The instance, holding `types`, with its positions set to `positions` (image flags zero)."""
        if self.engine is None or not np.array_equal(self.types, types):
            self.close()
            self.engine = KobAndersenLammps(
                positions, types, self.protocol.box, **_engine_options(self.protocol), seed=self.protocol.seed
            )
            self.types = types.copy()
        self.engine.set_positions(positions)
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None


_WORKER: _Worker | None = None


def _start_worker(protocol: GenerationProtocol) -> None:
    """Set up this process's `_Worker` (with workers=0, the main process's)."""
    global _WORKER
    _stop_worker()
    _WORKER = _Worker(protocol)


def _start_pool_worker(protocol: GenerationProtocol) -> None:
    """Pool initializer: Ctrl-C reaches the whole process group, but only the main process handles it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _start_worker(protocol)


def _stop_worker() -> None:
    global _WORKER
    if _WORKER is not None:
        _WORKER.close()
        _WORKER = None


def _current_worker() -> _Worker:
    if _WORKER is None:
        raise RuntimeError("generation task run outside a started worker")
    return _WORKER


def _inherent_state_task(positions: np.ndarray, types: np.ndarray) -> dict[str, np.ndarray]:
    """Per-particle energy of `positions` [N, 3] and of its inherent state.

    Returns:
        dict with ``potential_energy`` [N], ``is_positions`` [N, 3] (wrapped)
        and ``is_potential_energy`` [N] (LJ units).
    """
    worker = _current_worker()
    protocol = worker.protocol
    engine = worker.engine_for(positions, types)
    energy = engine.per_particle_potential_energy()
    minimum = engine.minimize(protocol.minimizer, protocol.force_tolerance, protocol.minimizer_max_iterations)
    return {
        "potential_energy": energy,
        "is_positions": minimum["positions"],
        "is_potential_energy": engine.per_particle_potential_energy(),
    }


def _trajectory_task(positions: np.ndarray, types: np.ndarray, velocity_seed: int) -> np.ndarray:
    """One iso-configurational trajectory from `positions` [N, 3] with fresh Maxwell-Boltzmann velocities.

    Returns:
        [T, N, 3] unwrapped positions at the protocol's stored times (LJ lengths).
    """
    worker = _current_worker()
    protocol = worker.protocol
    engine = worker.engine_for(positions, types)
    engine.draw_velocities(protocol.temperature, velocity_seed)
    engine.reset_thermostat(velocity_seed)
    frames = np.empty((protocol.n_times, protocol.n_particles, 3))
    done = 0
    for k, step in enumerate(protocol.time_steps):
        engine.run(int(step) - done)
        done = int(step)
        frames[k] = engine.positions(unwrapped=True)
    return frames
