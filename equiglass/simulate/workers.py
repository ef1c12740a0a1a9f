"""The worker side of `equiglass generate`: executors, the per-process LAMMPS worker and its tasks.

The tasks are single iso-configurational trajectories (`trajectory_task`) and
inherent-state minimisations (`inherent_state_task`). Each process that runs
them holds one persistent LAMMPS instance (`Worker`). `open_executor` gives
either a pool of worker processes or an executor that runs every task in the
calling process at submission (same results, bit for bit).

Pool workers are started with the ``spawn`` method: forking a process that has
initialised MPI (mpich, through LAMMPS) and may run other threads is unsafe
even where it happens to work. They ignore Ctrl-C, which the main process
handles by terminating them at once (``shutdown(cancel_futures=True)``, which
sends them SIGTERM). On SIGTERM a worker closes its LAMMPS instance, finalises
MPI and exits; it does the same when its parent dies (killed with SIGKILL, say),
which a watchdog thread notices within `PARENT_POLL_SECONDS`.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any

import numpy as np

from equiglass.simulate.lammps import KobAndersenLammps, finalize_mpi
from equiglass.simulate.protocol import GenerationProtocol

PARENT_POLL_SECONDS = 0.5
"""How often a pool worker checks that the process that started it is still alive."""


def open_executor(protocol: GenerationProtocol, workers: int) -> Executor:
    """An executor for the tasks of `protocol`: `workers` processes, or this process when `workers` is 0.

    Shut it down (``shutdown``) to release the LAMMPS instances.
    """
    return InlineExecutor(protocol) if workers == 0 else PoolExecutor(workers, protocol)


class PoolExecutor(ProcessPoolExecutor):
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
            initargs=(protocol, os.getpid()),
        )

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            # No public way to stop running tasks before Python 3.14 (terminate_workers): use the process table.
            for process in list((self._processes or {}).values()):
                process.terminate()
        super().shutdown(wait=wait, cancel_futures=cancel_futures)


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


def _start_pool_worker(protocol: GenerationProtocol, parent: int) -> None:
    """Pool initializer: Ctrl-C reaches the whole process group, but only the main process handles it.

    SIGTERM (from the main process, or anyone) and the death of the main
    process `parent` (this worker's parent) end the worker cleanly.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    threading.Thread(target=_watch_parent, args=(parent,), name="equiglass-parent-watchdog", daemon=True).start()
    _start_worker(protocol)


def _exit_on_signal(signum: int, frame: object) -> None:
    """Signal handler of pool workers: release LAMMPS and MPI, then exit at once (status 128 + signum)."""
    _stop_worker()
    finalize_mpi()
    os._exit(128 + signum)


def _watch_parent(parent: int) -> None:
    """Send SIGTERM to this process once its parent `parent` is gone (it was re-parented), so that it exits."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)


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
