"""Process settings for training: threads, deterministic algorithms, the CPU memory
allocator, the device, seeding and the global random states.

:func:`cpu_settings` sets the threads and deterministic algorithms for the duration of a
run and makes glibc keep freed memory (:func:`retain_freed_memory`); :func:`choose_device`
resolves ``[train] device``; :func:`seed_everything`, :func:`random_states` and
:func:`set_random_states` seed, save and restore python's, numpy's and torch's generators.

**Allocator.** A training step on 4096-particle configurations allocates and frees gigabytes of tensors
(per-edge features, activations kept for the backward pass). glibc's ``malloc`` serves every
block above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and unmaps it when
freed, so every step pays a page fault, and the kernel's zero-filling, for every page of
every large tensor, again and again. :func:`retain_freed_memory` makes ``malloc`` take
every block from its heap and keep freed memory for the next step: the process's resident
memory then stays near the step's peak, which the next step needs anyway (a little above
it: heap fragmentation, 1.02-1.14x measured on training loops, then flat). Measured in
benchmarks/README.md (training steps 1.2-2x faster on the CPU, more at larger batches).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

# mallopt parameters (glibc <malloc.h>)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def retain_freed_memory() -> bool:
    """Serve all allocations of this process from glibc's heap and never give freed memory back
    to the OS (``mallopt(M_MMAP_MAX, 0)``; ``mallopt(M_TRIM_THRESHOLD, -1)``, which mallopt(3)
    documents as disabling trimming; a 2 GiB threshold, the largest positive value, still
    trimmed between the steps of a 7 GB batch and lost a third of the gain).

    Process-wide and lasting: call it in processes that train or benchmark. Returns whether
    it was applied (False where the C library is not glibc, which is then left as it is).
    """
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, -1))


def release_freed_memory() -> None:
    """Hand the heap's free memory back to the OS now (``malloc_trim(0)``; a no-op off glibc).

    For measurements: the benchmarks' memory probe calls it so that a peak is not hidden by
    memory kept from an earlier step.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@contextmanager
def cpu_settings(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch CPU threads (None: unchanged) and deterministic algorithms,
    restoring both afterwards; and with glibc's ``malloc`` keeping freed memory for the next
    step (:func:`retain_freed_memory`, process-wide and lasting).

    Deterministic algorithms: with several CPU threads the backward of an index (``x[sender]``)
    otherwise accumulates in a thread-dependent order, and two identical runs of the Bapst GNN
    drift apart from the first epoch (measured: validation Pearson 0.045 vs 0.058 after one
    epoch). ``warn_only`` keeps CUDA ops without a deterministic version usable.
    """
    previous = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if threads is not None:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    retain_freed_memory()
    try:
        yield
    finally:
        torch.set_num_threads(previous)
        torch.use_deterministic_algorithms(previous_deterministic, warn_only=previous_warn_only)


def choose_device(name: str) -> torch.device:
    """The device of ``[train] device``: ``"auto"`` is CUDA when available, else the CPU.

    Raises:
        ValueError: ``"cuda"`` without a CUDA device.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("[train] device = 'cuda' but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators (model initialisation)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def random_states(device: torch.device) -> dict[str, Any]:
    """The global random states, as tensors and primitives (``weights_only`` checkpoints)."""
    name, key, position, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (name, key.tolist(), position, has_gauss, gauss),
        "python": random.getstate(),
    }
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_random_states(states: dict[str, Any]) -> None:
    """Restore what :func:`random_states` saved."""
    torch.set_rng_state(states["torch"])
    name, key, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, np.asarray(key, dtype=np.uint32), position, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])
