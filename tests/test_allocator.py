"""equiglass.allocator: freed memory stays with the process and is reused by the next allocation."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
import torch

from equiglass.allocator import retain_freed_memory

MIB = 2**20


def resident_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or not Path("/proc/self/status").exists(),
                    reason="glibc malloc and /proc only")
def test_freed_tensor_memory_is_kept_and_reused():
    """A 256 MiB tensor (far above glibc's default mmap threshold, so normally unmapped when
    freed) leaves its pages with the process, and the next one of that size reuses them."""
    assert retain_freed_memory()
    before = resident_mib()
    tensor = torch.ones(256 * MIB // 4)
    del tensor
    kept = resident_mib()
    assert kept - before > 200, (before, kept)
    tensor = torch.ones(256 * MIB // 4)
    assert resident_mib() - kept < 32
    del tensor
