"""equiglass.training.runtime: freed memory stays with the process and serves the next steps."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from equiglass.training.runtime import retain_freed_memory

MIB = 2**20


def resident_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def step() -> None:
    """A stand-in for a training step: large tensors (far above glibc's default mmap
    threshold, so normally mapped and unmapped each time) allocated, used and freed."""
    tensors = [torch.ones(size * MIB // 4) for size in (64, 128, 96, 160)]
    del tensors


def measure() -> dict[str, float]:
    """Resident memory (MiB) before a step, after it, after 10 more steps and after 10 more."""
    assert retain_freed_memory()
    before = resident_mib()
    step()
    kept = resident_mib()
    for _ in range(10):
        step()
    settled = resident_mib()
    for _ in range(10):
        step()
    return {"before": before, "kept": kept, "settled": settled, "final": resident_mib()}


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or not Path("/proc/self/status").exists(),
                    reason="glibc malloc and /proc only")
def test_freed_step_memory_is_kept_and_reused_by_the_next_steps():
    """The 448 MiB a step frees stays resident, and repeated steps reuse it: the process
    stops growing, below 2.5x one step's memory (heap fragmentation: 1.4-2x for these mixed
    sizes; a training loop repeats its sizes exactly and settles lower, see benchmarks/README.md).
    Without retain_freed_memory the first assertion fails (about 0 MiB kept).

    Measured in a fresh process: in the test session's own process the heap already holds
    what earlier tests left, and the numbers would depend on the order of the tests."""
    result = subprocess.run([sys.executable, __file__], capture_output=True, text=True, check=True)
    memory = json.loads(result.stdout)
    assert memory["kept"] - memory["before"] > 400, memory
    assert memory["final"] - memory["settled"] < 32, memory
    assert memory["final"] - memory["before"] < 2.5 * 448, memory


if __name__ == "__main__":
    print(json.dumps(measure()))
