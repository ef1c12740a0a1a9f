"""Worker processes that stop with the run that started them.

:class:`ProcessPool` is the ``concurrent.futures`` process pool of equiglass's long jobs (the
trajectories of ``equiglass generate``, the training runs of ``equiglass experiment --jobs``):

* workers are started with ``spawn``: forking a process that has initialised MPI (mpich,
  through LAMMPS) or started threads (torch) is unsafe even where it happens to work;
* they ignore Ctrl-C, which reaches the whole process group: the main process handles it, by
  ``shutdown(cancel_futures=True)``, which terminates them at once (SIGTERM) instead of letting
  the tasks in flight finish;
* on SIGTERM a worker runs its ``on_exit`` hook (say, release LAMMPS and MPI) and exits; it does
  the same when the main process dies (killed with SIGKILL, say), which a watchdog thread
  notices within :data:`PARENT_POLL_SECONDS`, so no worker outlives its run;
* a crashed worker fails the run (``BrokenProcessPool``) instead of hanging it.

A task that must clean up after itself when stopped (remove a temporary file, say) runs under
:func:`interrupt_on_sigterm`, which turns SIGTERM into ``KeyboardInterrupt`` for its duration.
A step that ``on_exit`` can only undo once it is complete (starting MPI, say) runs under
:func:`stop_held`: a worker stopped meanwhile stops when the step ends.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

PARENT_POLL_SECONDS = 0.5
"""How often a worker checks that the process that started it is still alive."""

_ON_EXIT: Callable[[], None] | None = None
_STOP_HELD = 0  # depth of stop_held() blocks in this process
_STOP_PENDING = False  # a worker's stop arrived within one


class ProcessPool(ProcessPoolExecutor):
    """``workers`` processes started with ``spawn``, each running ``initializer(*initargs)`` first.

    Args:
        workers: number of processes.
        initializer: run once in each worker after its signal handling is set up (picklable).
        initargs: its arguments.
        on_exit: run in a worker that SIGTERM (or the death of the main process) stops, before it exits
            (picklable: a module-level function).
    """

    def __init__(self, workers: int, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = (),
                 on_exit: Callable[[], None] | None = None):
        super().__init__(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(os.getpid(), on_exit, initializer, initargs),
        )

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            # No public way to stop running tasks before Python 3.14 (terminate_workers): use the process table.
            for process in list((self._processes or {}).values()):
                process.terminate()
        super().shutdown(wait=wait, cancel_futures=cancel_futures)


@contextlib.contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """Within this block (in the main thread), SIGTERM raises KeyboardInterrupt, as Ctrl-C does.

    So a scheduler's or ``timeout``'s SIGTERM stops a run as Ctrl-C would: ``finally`` blocks run
    (temporary files removed, workers terminated) and what was already written is kept.
    """
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def stop_held() -> Iterator[None]:
    """Within this block a pool worker's stop (SIGTERM, or the death of its main process) waits:
    the worker runs ``on_exit`` and exits when the block ends. Outside pool workers it does nothing.

    The hold is in Python, not a signal mask: a mask holds a signal back from one thread only, and
    the kernel hands it to any other (the watchdog, a library's threads), whose Python handler then
    runs in the main thread all the same.
    """
    global _STOP_HELD
    _STOP_HELD += 1
    try:
        yield
    finally:
        _STOP_HELD -= 1
        if _STOP_HELD == 0 and _STOP_PENDING:
            _exit_now(signal.SIGTERM)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _start_worker(parent: int, on_exit: Callable[[], None] | None, initializer: Callable[..., None] | None,
                  initargs: tuple[Any, ...]) -> None:
    """Pool initializer: ignore Ctrl-C, exit on SIGTERM and when the main process ``parent`` is gone."""
    global _ON_EXIT
    _ON_EXIT = on_exit
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    threading.Thread(target=_watch_parent, args=(parent,), name="equiglass-parent-watchdog", daemon=True).start()
    if initializer is not None:
        initializer(*initargs)


def _exit_on_signal(signum: int, frame: object) -> None:
    """Signal handler of workers: run the pool's ``on_exit``, then exit at once (status 128 + signum);
    within :func:`stop_held`, once it ends."""
    global _STOP_PENDING
    if _STOP_HELD:
        _STOP_PENDING = True
        return
    _exit_now(signum)


def _exit_now(signum: int) -> None:
    """Run the pool's ``on_exit``, then exit at once with status 128 + ``signum``."""
    if _ON_EXIT is not None:
        _ON_EXIT()
    os._exit(128 + signum)


def _watch_parent(parent: int) -> None:
    """Send SIGTERM to this process once its parent ``parent`` is gone (it was re-parented), so that it exits."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)
