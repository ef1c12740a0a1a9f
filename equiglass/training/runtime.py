"""CPU memory allocator settings for training: reuse freed memory instead of returning it.

A training step on 4096-particle configurations allocates and frees gigabytes of tensors
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
