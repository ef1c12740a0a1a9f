"""The worker side of `equiglass generate`: executors, the per-process LAMMPS worker and its tasks.

The tasks are single iso-configurational trajectories (`trajectory_task`) and
inherent-state minimisations (`inherent_state_task`). Each process that runs
them holds one persistent LAMMPS instance (`Worker`). `open_executor` gives
either a pool of worker processes or an executor that runs every task in the
calling process at submission (same results, bit for bit).

Pool workers are :class:`~equiglass.process_pool.ProcessPool` processes (``spawn``; Ctrl-C
handled by the main process, which terminates them at once; no worker outlives its run).
Stopped by SIGTERM, or by the death of the main process, a worker closes its LAMMPS instance
and finalises MPI before it exits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from typing import Any

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from equiglass.process_pool import ProcessPool
from equiglass.simulate.lammps import KobAndersenLammps, finalize_mpi
from equiglass.simulate.protocol import GenerationProtocol


@contextlib.contextmanager
def running_executor(protocol: GenerationProtocol, workers: int, progress: tqdm) -> Iterator[Executor]:
    """:func:`open_executor`, shut down when the block ends: after its tasks are done, or at once,
    pending tasks cancelled, on an error or an interrupt; log lines print above ``progress``,
    which is closed either way."""
    executor = open_executor(protocol, workers)
    try:
        with logging_redirect_tqdm():
            yield executor
        executor.shutdown(wait=True)
    except BaseException:
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        progress.close()


def open_executor(protocol: GenerationProtocol, workers: int) -> Executor:
    """An executor for the tasks of `protocol`: `workers` processes, or this process when `workers` is 0.

    Shut it down (``shutdown``) to release the LAMMPS instances.
    """
    if workers == 0:
        return InlineExecutor(protocol)
    return ProcessPool(workers, initializer=_start_worker, initargs=(protocol,), on_exit=_release_lammps)


class InlineExecutor(Executor):
    """Runs each task at submission, in this process (``workers=0``), whose `Worker` it sets up until `shutdown`."""

    def __init__(self, protocol: GenerationProtocol):
        _start_worker(protocol)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as error:
            future.set_exception(error)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        _stop_worker()


class Worker:
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
                positions, types, self.protocol.box, **self.protocol.engine_options(), seed=self.protocol.seed
            )
            self.types = types.copy()
        self.engine.set_positions(positions)
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None


_WORKER: Worker | None = None


def _start_worker(protocol: GenerationProtocol) -> None:
    """Set up this process's `Worker` (with workers=0, the main process's)."""
    global _WORKER
    _stop_worker()
    _WORKER = Worker(protocol)


def _release_lammps() -> None:
    """What a pool worker does before it exits on SIGTERM: close LAMMPS, finalise MPI."""
    _stop_worker()
    finalize_mpi()


def _stop_worker() -> None:
    global _WORKER
    if _WORKER is not None:
        _WORKER.close()
        _WORKER = None


def _current_worker() -> Worker:
    if _WORKER is None:
        raise RuntimeError("generation task run outside a started worker")
    return _WORKER


def inherent_state_task(positions: np.ndarray, types: np.ndarray) -> dict[str, np.ndarray]:
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


def trajectory_task(positions: np.ndarray, types: np.ndarray, velocity_seed: int) -> np.ndarray:
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
