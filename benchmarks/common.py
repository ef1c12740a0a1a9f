"""Helpers shared by the model benchmarks (`train_step.py`, `scaling.py`).

Kob-Andersen configurations (a short LAMMPS melt), the models compared (built by the
model registry, as training builds them), the training step as training takes it
(:func:`~equiglass.training.loop.take_step` with the default ``[train]`` settings and
the training objective), wall-clock timing with device synchronisation, peak-memory probes and the machine
description printed and stored beside every figure.

Peak memory is a *delta* over what the process held just before the measured call:

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the
  memory allocated before (tensors only, not the caching allocator's reserve);
* CPU (Linux): the resident-set high-water mark ``VmHWM``, reset through
  ``/proc/self/clear_refs``, minus the resident set ``VmRSS`` before, after glibc's
  ``malloc_trim(0)`` has handed freed heap memory back to the OS (else memory kept from
  an earlier, larger step would be reused unseen). It counts every allocation of the
  process (torch's and the allocator's slack), not tensors alone.
  Where ``clear_refs`` cannot be written the probe falls back to ``ru_maxrss`` (the
  high-water mark since the process started) and says so in its ``kind``, since it
  then misses peaks lower than an earlier one.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import e3nn
import numpy as np
import torch
import torch_geometric
import vesin
from torch import nn
from torch_geometric.data import Batch, Data

from equiglass.nn.registry import model_kind
from equiglass.physics import kob_andersen
from equiglass.training.config import TrainConfig
from equiglass.training.loop import grad_scaler, mixed_precision, take_step
from equiglass.training.objective import Objective
from equiglass.training.runtime import release_freed_memory, retain_freed_memory

#: Where the benchmarks write their JSON files (and the cached configurations).
RESULTS = Path(__file__).parent / "results"
#: Number density, graph cutoff (LJ units) and melt temperature of every benchmark.
DENSITY = kob_andersen.DENSITY
CUTOFF = 2.0
TEMPERATURE = 0.6
#: Timescales predicted by every model (the size of the demo dataset's targets).
N_TIMESCALES = 10

#: Models benchmarked: PCL22's published equivariant architecture (51,018 parameters: the
#: model's defaults without ``readout_norms``, which the recorded figures predate), its
#: distances-only ablation, the Bapst GNN (63,050) and an equivariant model of Bapst's
#: parameter count (63,434, +0.6 %: the same width with one more interaction block).
MODEL_NAMES = ("equivariant", "equivariant_l0", "bapst", "equivariant_matched")
#: ``[model]`` sections of the models (the equivariant ones also get ``tensor_product``).
MODEL_SECTIONS: dict[str, dict[str, Any]] = {
    "equivariant": {"kind": "equivariant", "readout_norms": False},
    "equivariant_l0": {"kind": "equivariant", "l_max": 0, "readout_norms": False},
    "bapst": {"kind": "bapst"},
    "equivariant_matched": {"kind": "equivariant", "n_layers": 6, "readout_norms": False},
}
#: The ``[train]`` defaults: optimiser, learning rate, weight decay and gradient clipping of the timed steps.
TRAIN_DEFAULTS = TrainConfig()
#: Particle types of the loss: type A, as when the recorded figures were measured (the
#: default of ``[data] particle_types`` is now A and B; the step's cost does not depend on it).
LOSS_TYPES = (0,)


def model_section(name: str, tensor_product: str = "fused") -> dict[str, Any]:
    """The ``[model]`` section of model ``name`` of :data:`MODEL_NAMES`, with ``tensor_product``
    (see :data:`~equiglass.nn.convolution.TENSOR_PRODUCTS`) where the kind has that option;
    :func:`~equiglass.nn.registry.build_model` builds it as training does."""
    section = MODEL_SECTIONS[name]
    entry, _ = model_kind(section)
    return {**section, "tensor_product": tensor_product} if "tensor_product" in entry.options() else dict(section)


def add_cpu_options(parser: argparse.ArgumentParser) -> None:
    """``--threads`` and ``--malloc``, applied by :func:`apply_cpu_options`."""
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--malloc", choices=["retain", "default"], default="retain",
                        help="retain: glibc malloc keeps freed memory, as training sets it (equiglass.training.runtime); "
                             "default: glibc's own behaviour")


def apply_cpu_options(args: argparse.Namespace) -> None:
    """Set the torch thread count and the allocator as ``args`` (see :func:`add_cpu_options`) say."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.malloc == "retain":
        retain_freed_memory()


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda[:k]"``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine")
    return device


def machine_info(device: torch.device) -> dict[str, Any]:
    """Machine, versions, threads, device and the load average at the time of the call."""
    info: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "e3nn": e3nn.__version__,
        "torch_geometric": torch_geometric.__version__,
        "vesin": vesin.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model(),
        "load_average_1_5_15": load_average(),
    }
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
    return info


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (empty where the OS does not report them)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return []


def _cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class Configurations:
    """Snapshots of one KA liquid: ``positions [C, N, 3]`` float64 wrapped into ``[0, box)``,
    ``types [N]`` int64, ``box [3]``; ``origin`` says how they were made."""

    positions: np.ndarray
    types: np.ndarray
    box: np.ndarray
    origin: str

    def fields(self, index: int, n_timescales: int = N_TIMESCALES, seed: int = 0) -> dict[str, np.ndarray]:
        """Configuration ``index % C`` as the arrays of an equiglass dataset file (every field).

        The structure is real; the targets and energies are placeholders (random,
        non-negative where required) of the stored shapes, so a file written from them
        has the size of a real one. Inherent-state fields repeat the thermal ones.
        """
        rng = np.random.default_rng(seed + index)
        positions = self.positions[index % len(self.positions)]
        n = positions.shape[0]
        energy = rng.normal(-7.0, 0.5, n)
        return {
            "positions": positions,
            "types": self.types,
            "box": self.box,
            "is_positions": positions,
            "potential_energy": energy,
            "is_potential_energy": energy,
            "times": np.logspace(-1, 3, n_timescales),
            "propensity": rng.uniform(0.0, 2.0, (n_timescales, n)),
            "msd": rng.uniform(0.0, 4.0, (n_timescales, n)),
            "self_intermediate_scattering": np.linspace(1.0, 0.0, n_timescales),
        }


def ka_configurations(
    n_particles: int,
    count: int,
    *,
    start: str = "melt",
    melt_steps: int = 2000,
    spacing: int = 200,
    seed: int = 1,
    cache: Path | None = None,
) -> Configurations:
    """``count`` KA configurations of ``n_particles`` at density 1.2.

    ``start="melt"``: a random-occupancy simple-cubic lattice melted by LAMMPS for
    ``melt_steps`` Nose-Hoover steps (dt = 0.005) at T = 0.6, then ``count`` snapshots
    ``spacing`` steps apart (one thread). ``start="lattice"``: the same lattice with
    Gaussian jitter (standard deviation 0.1), no LAMMPS needed; its neighbour count is
    that of the liquid (set by the density), its structure is not.

    With ``cache``, the configurations are read from that ``.npz`` when it holds at
    least ``count`` snapshots made the same way, else made and written there (positions
    as float32, about 50 kB per 4096-particle snapshot).
    """
    origin = (
        f"LAMMPS melt of a lattice: {melt_steps} steps at T={TEMPERATURE}, snapshots every {spacing} steps, seed {seed}"
        if start == "melt"
        else f"simple-cubic lattice + Gaussian jitter 0.1, seed {seed}"
    )
    side = kob_andersen.box_length(n_particles, DENSITY)
    box = np.full(3, side)
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as stored:
            if str(stored["origin"]) == origin and stored["positions"].shape[0] >= count:
                positions = np.mod(stored["positions"][:count].astype(np.float64), box)
                return Configurations(positions, stored["types"].astype(np.int64), box, origin)
    rng = np.random.default_rng(seed)
    lattice, types = kob_andersen.initial_positions(n_particles, box, rng, start="lattice")
    if start == "melt":
        from equiglass.simulate.lammps import KobAndersenLammps

        snapshots = []
        with KobAndersenLammps(lattice, types, box, temperature=TEMPERATURE, seed=seed) as engine:
            engine.draw_velocities(TEMPERATURE, seed)
            engine.run(melt_steps)
            for k in range(count):
                if k:
                    engine.run(spacing)
                snapshots.append(engine.positions())
        positions = np.stack(snapshots)
    elif start == "lattice":
        positions = np.stack([lattice + rng.normal(0.0, 0.1, lattice.shape) for _ in range(count)])
    else:
        raise ValueError(f"start must be 'melt' or 'lattice', got {start!r}")
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cache, positions=positions.astype(np.float32), types=types, origin=np.array(origin))
    return Configurations(np.mod(positions, box), types, box, origin)


def to_batch(graphs: list[Data], device: torch.device) -> Batch:
    """PyG batch of ``graphs`` on ``device``."""
    return Batch.from_data_list(graphs).to(device)


def training_objective(graphs: list[Data]) -> Objective:
    """The training objective (targets normalised with the statistics of ``graphs``, :data:`LOSS_TYPES`)."""
    return Objective.from_graphs(graphs, LOSS_TYPES)


def training_step(
    model: nn.Module, forward: Callable[[Batch], torch.Tensor], objective: Objective, device: torch.device,
    precision: str = "float32",
) -> Callable[[Batch], None]:
    """One optimiser step per call, as training takes it (:func:`~equiglass.training.loop.take_step`):
    an optimiser of ``model``'s parameters and the gradient clipping of the ``[train]`` defaults,
    the forward through ``forward`` (``model`` or its compiled version) under autocast to
    ``precision``, with training's gradient scaler."""
    optimiser_class = torch.optim.AdamW if TRAIN_DEFAULTS.optimiser == "adamw" else torch.optim.Adam
    optimiser = optimiser_class(model.parameters(), lr=TRAIN_DEFAULTS.lr, weight_decay=TRAIN_DEFAULTS.weight_decay)
    scaler = grad_scaler(device, precision)

    def step(batch: Batch) -> None:
        take_step(forward, batch, objective, optimiser, scaler, precision=precision, grad_clip=TRAIN_DEFAULTS.grad_clip)

    return step


def forward_backward(model: nn.Module, batch: Data, objective: Objective) -> None:
    """Forward, the training loss and backward, without an optimiser (gradients accumulate, harmlessly)."""
    objective.loss(model(batch), batch).backward()


def inference(model: nn.Module, batch: Data, precision: str = "float32") -> None:
    """Forward without autograd (the model should be in eval mode), under autocast to ``precision``."""
    with torch.no_grad(), mixed_precision(batch.pos.device, precision):
        model(batch)


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(call: Callable[[], object], device: torch.device, repeats: int, budget_s: float) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``call`` (device synchronised around each).

    Stops early once the calls have used ``budget_s`` seconds together; at least one call runs.
    """
    times: list[float] = []
    while len(times) < repeats and sum(times) < budget_s:
        synchronize(device)
        start = time.perf_counter()
        call()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def measure_point(
    call: Callable[[], object],
    device: torch.device,
    repeats: int,
    max_seconds: float,
    previous: dict[str, Any] | None,
    growth: float,
    memory_fraction: float,
) -> dict[str, Any]:
    """Median time and peak memory of ``call`` (see :func:`measure`), or why it did not run.

    One call measures the peak memory (and is timed as ``first_call_s``: it starts after
    :class:`PeakMemory` has returned freed memory to the OS), then ``repeats`` timed calls
    give the median: the steady state of a training loop.

    ``previous`` is the result of the same measurement at the next smaller size (None for
    the first), ``growth`` the ratio of the sizes. The point is skipped when the previous
    one did not run, or when its time or memory, scaled linearly by ``growth``, exceeds
    ``max_seconds`` per call or ``memory_fraction`` of :func:`available_memory_mib`.

    Returns:
        ``{"seconds", "times_s", "first_call_s", "peak_memory_mib", "memory_kind"}``, or ``{"skipped": why}``,
        or ``{"failed": why}`` after an out-of-memory error.
    """
    if previous is not None:
        if "seconds" not in previous:
            return {"skipped": "a smaller size did not run"}
        predicted_s = previous["seconds"] * growth
        predicted_mib = previous["peak_memory_mib"] * growth
        available_mib = available_memory_mib(device)
        if predicted_s > max_seconds:
            return {"skipped": f"predicted {predicted_s:.0f} s per call > --max-seconds {max_seconds:g}"}
        if predicted_mib > memory_fraction * available_mib:
            return {
                "skipped": f"predicted {predicted_mib:.0f} MiB > {memory_fraction:g} x {available_mib:.0f} MiB "
                "available"
            }
    try:
        # the memory probe hands freed memory back to the OS first, so this call pays the
        # first-touch page faults of every tensor: timed apart, not in the median
        with PeakMemory(device) as memory:
            first = measure(call, device, 1, max_seconds)
        times = measure(call, device, repeats, max_seconds - first[0])
    except (torch.OutOfMemoryError, MemoryError) as error:
        return {"failed": f"out of memory: {str(error).splitlines()[0]}"}
    return {"seconds": median(times), "times_s": times, "first_call_s": first[0], "peak_memory_mib": memory.mib,
            "memory_kind": memory.kind}


def median(values: list[float]) -> float:
    """Median of a non-empty list."""
    return float(statistics.median(values))


class PeakMemory:
    """Context manager: peak memory (MiB) used by the enclosed code above what was held before.

    ``kind`` names what was measured (see the module docstring); ``mib`` is set on exit.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = ""
        self.mib = math.nan
        self._before = 0.0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device) / 2**20
            self.kind = "cuda max_memory_allocated delta"
        else:
            gc.collect()
            release_freed_memory()
            try:
                Path("/proc/self/clear_refs").write_text("5")
                self.kind = "cpu RSS high-water delta (VmHWM after malloc_trim + clear_refs)"
            except OSError:
                self.kind = "cpu ru_maxrss delta (high-water since process start: a lower bound)"
            self._before = _proc_status_mib("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.mib = torch.cuda.max_memory_allocated(self.device) / 2**20 - self._before
        elif self.kind.startswith("cpu RSS"):
            self.mib = _proc_status_mib("VmHWM") - self._before
        else:
            self.mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - self._before


def _proc_status_mib(key: str) -> float:
    """A ``kB`` entry of ``/proc/self/status`` in MiB (NaN where it cannot be read)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def available_memory_mib(device: torch.device) -> float:
    """Free memory of ``device`` in MiB: CUDA free memory, or the OS's ``MemAvailable`` once this
    process has handed back the freed memory it keeps (see :mod:`equiglass.training.runtime`)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] / 2**20
    release_freed_memory()
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.inf


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON (creating the folder) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")
