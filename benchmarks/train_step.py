"""Training-step and inference throughput of the propensity models on 4096-particle KA liquids.

For each model (`common.MODEL_NAMES`: the default equivariant model, its l_max = 0
ablation, the Bapst GNN and an equivariant model of Bapst's parameter count) and each batch
size: the wall time of one training step as training takes it (`equiglass.training.loop.take_step`:
forward, the training objective's masked MSE loss, backward, gradient clipping, Adam step)
and of one no-grad forward in eval mode, as the median of several repeats, in
particles/s, with the peak memory of each (see `common.py` for what is measured on CPU
and CUDA).

Configurations: a 2000-step LAMMPS melt at T = 0.6 (density 1.2), cached in
benchmarks/results/ka-N4096-T0.6.npz; graphs at cutoff 2.0 (about 166k directed edges).
Data loading is timed two ways, per batch:

* ``uncached`` (the first epoch of a run, or a run with more data than memory): read the
  `.npz`, validate, neighbour list, `Data`, batch, move to the device, through a
  `PropensityDataset` over a temporary equiglass dataset of these configurations;
* ``cached`` (every later epoch: training keeps the graphs in memory): batch and move.

Headline keys of the JSON written to benchmarks/results/train_step-<device>[-<tensor product>][-compile][-<precision>][-quick].json:

* ``equivariant_over_bapst_cost_ratio``: training-step time of ``equivariant_matched``
  over that of ``bapst`` (parameter counts within 1 %), at the smallest batch size;
* ``graph_and_loading_fraction``: uncached loading / (uncached loading + training step) of
  ``equivariant_matched`` at the smallest batch size (loading and steps timed separately).

Roofline (``roofline`` of each model, smallest batch size): the matrix-product FLOPs of one
training step and of one inference call as ``torch.profiler`` counts them (``with_flops``: mm,
bmm, addmm, matmul, convolutions; element-wise work is not counted), the bytes the call's
operators allocate (``profile_memory``: every tensor an operator writes is allocated, so this
is a lower bound on the memory traffic) with the five largest allocators, the achieved
GFLOP/s (counted FLOPs over the measured median time), arithmetic intensity (FLOPs per
allocated byte) and, measured in the same process just before, the rate of a fixed
2048 x 2048 x 2048 float32 matrix product on the same threads and device. The ratio
``fraction_of_matmul_rate`` says how close a model runs to what this machine's matrix
units can do, and is comparable across machines where absolute times are not.

    python benchmarks/train_step.py --quick          # equivariant_matched and bapst, batch 1, one repeat
    python benchmarks/train_step.py                  # every model, batch sizes 1 2 4 8, up to 3 repeats
    python benchmarks/train_step.py --tensor-product e3nn   # the plain e3nn tensor product
    python benchmarks/train_step.py --tensor-product cuequivariance   # NVIDIA's kernels (on a GPU)
    python benchmarks/train_step.py --quick --profile       # also a torch.profiler table of one equivariant step
    python benchmarks/train_step.py --models equivariant bapst --batch-sizes 1   # the roofline of the issue's step
    python benchmarks/train_step.py --compile --models equivariant bapst --batch-sizes 1   # torch.compile
    python benchmarks/train_step.py --message-sum both --models equivariant --batch-sizes 1   # kernel vs PyTorch

Message sum (``--message-sum``, CPU, fused tensor product): ``compiled`` (what the model runs
where a C compiler works, :mod:`equiglass.nn.message_sum`), ``pytorch`` (its PyTorch operators,
what runs on GPUs and ran on CPUs before the kernel), or ``both``: every equivariant model
measured both ways in this one process (the second as ``<model>/pytorch``), with the speed-ups
``compiled_kernel_speedup`` (PyTorch time over kernel time, train step and inference).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from common import (
    CUTOFF,
    DENSITY,
    MODEL_NAMES,
    N_TIMESCALES,
    RESULTS,
    TEMPERATURE,
    Configurations,
    add_cpu_options,
    apply_cpu_options,
    inference,
    ka_configurations,
    load_average,
    machine_info,
    measure,
    measure_point,
    median,
    model_section,
    resolve_device,
    synchronize,
    to_batch,
    training_objective,
    training_step,
    write_json,
)
from e3nn import nn as e3nn_nn
from e3nn import o3
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from equiglass.data.format import configuration_filename, write_configuration, write_manifest
from equiglass.data.graphs import PropensityDataset
from equiglass.nn.convolution import TENSOR_PRODUCTS, EquivariantConvolution, SphericalCouplings
from equiglass.nn.embedding import NodeEmbedding
from equiglass.nn.message_sum import kernel_available
from equiglass.nn.radial import RadialEmbedding
from equiglass.nn.registry import build_model
from equiglass.training.config import PRECISIONS

#: Where each kind of equivariant module's forward shows up in the profile (exact types:
#: the gate's ElementwiseTensorProduct subclasses TensorProduct and is counted in "gate";
#: "tensor product" shows only with --tensor-product e3nn, the fused one is part of the convolution).
PROFILE_LABELS: dict[type, str] = {
    NodeEmbedding: "forward: embedding",
    o3.SphericalHarmonics: "forward: spherical harmonics",
    SphericalCouplings: "forward: spherical couplings (fused tensor product)",
    RadialEmbedding: "forward: radial embedding (Bessel x cutoff)",
    EquivariantConvolution: "forward: convolution, all of it",
    e3nn_nn.FullyConnectedNet: "forward: convolution: radial MLP",
    o3.TensorProduct: "forward: convolution: tensor product",
    e3nn_nn.BatchNorm: "forward: BatchNorm",
    e3nn_nn.Gate: "forward: gate",
}


def write_dataset(directory: Path, configurations: Configurations, count: int) -> PropensityDataset:
    """Write ``count`` configurations as an equiglass dataset and open it uncached, as training reads it."""
    names = []
    fields = configurations.fields(0)
    for index in range(count):
        names.append(configuration_filename(index))
        write_configuration(directory / names[-1], configurations.fields(index))
    write_manifest(
        directory,
        {
            "source": "benchmarks/train_step.py (placeholder targets)",
            "n_particles": int(fields["types"].shape[0]),
            "density": DENSITY,
            "temperature": TEMPERATURE,
            "times": fields["times"].tolist(),
            "configurations": [{"file": name} for name in names],
            "absent_fields": [],
            "propensity_definition": "placeholder",
        },
    )
    return PropensityDataset(directory, cutoff=CUTOFF, cache=False)


def time_loading(graphs: Any, batch_size: int, device: torch.device, repeats: int) -> float:
    """Median seconds to get ``batch_size`` graphs from ``graphs`` (indexable), batch them and move them to ``device``."""
    def load() -> None:
        to_batch([graphs[k % len(graphs)] for k in range(batch_size)], device)

    return median(measure(load, device, repeats, budget_s=30.0))


def benchmark_model(
    name: str,
    graphs: list[Any],
    batch_sizes: list[int],
    device: torch.device,
    options: argparse.Namespace,
) -> dict[str, Any]:
    """Training-step and inference timings and peak memory of model ``name`` at every batch size.

    Each point is a :func:`~common.measure_point` (skipped when extrapolated from the previous
    batch size past ``--max-seconds`` or ``--memory-fraction``), with ``particles_per_s`` added.
    The untimed warm-up calls (batch size 1) are timed too: with ``--compile`` the first of
    each phase holds the compilation.
    """
    torch.manual_seed(0)
    model = build_model(model_section(name, options.tensor_product), N_TIMESCALES).to(device)
    runner = torch.compile(model, dynamic=True) if options.compile else model
    step = training_step(model, runner, training_objective(graphs), device, options.precision)
    n_particles = graphs[0].num_nodes
    single = to_batch(graphs[:1], device)
    phases = {
        "train": (True, step),
        "inference": (False, lambda batch: inference(runner, batch, options.precision)),
    }
    warmup_s: dict[str, list[float]] = {phase: [] for phase in phases}
    for _ in range(options.warmup):
        for phase, (train, call) in phases.items():
            model.train(train)
            warmup_s[phase] += measure(functools.partial(call, single), device, 1, math.inf)
    rows: list[dict[str, Any]] = []
    for batch_size in batch_sizes:
        batch = to_batch([graphs[k % len(graphs)] for k in range(batch_size)], device)
        row: dict[str, Any] = {
            "batch_size": batch_size,
            "n_particles": batch_size * n_particles,
            "n_edges": int(batch.edge_index.shape[1]),
        }
        for phase, (train, call) in phases.items():
            model.train(train)
            point = measure_point(
                functools.partial(call, batch),
                device,
                options.repeats,
                options.max_seconds,
                rows[-1][phase] if rows else None,
                batch_size / rows[-1]["batch_size"] if rows else 1.0,
                options.memory_fraction,
            )
            if "seconds" in point:
                point["particles_per_s"] = batch_size * n_particles / point["seconds"]
            row[phase] = point
        row["load_average_1_5_15"] = load_average()
        rows.append(row)
        print(f"{name:>20} {batch_size:>5} {format_point(row['train'])} {format_point(row['inference'])}", flush=True)
    first = rows[0]
    measured = {phase: first[phase]["seconds"] for phase in phases if "seconds" in first[phase]}
    calls = {}
    for phase, (train, call) in phases.items():
        if phase in measured:
            calls[phase] = functools.partial(_in_mode, model, train, call, to_batch(graphs[:first["batch_size"]], device))
    line = roofline(calls, measured, device)
    print(f"{name:>20} roofline: matmul reference {line['matmul_reference_gflops']:.0f} GFLOP/s; " + "; ".join(
        f"{phase} {line[phase]['flops'] / 1e9:.1f} GFLOP, {line[phase]['allocated_bytes'] / 2**30:.1f} GiB allocated, "
        f"{line[phase]['achieved_gflops']:.1f} GFLOP/s = {line[phase]['fraction_of_matmul_rate']:.3f} of it"
        for phase in calls), flush=True)
    return {"parameters": sum(p.numel() for p in model.parameters() if p.requires_grad), "config": repr(model.config),
            "warmup_s": warmup_s, "results": rows, "roofline": line}


def _in_mode(model: nn.Module, train: bool, call: Any, batch: Any) -> None:
    """``call(batch)`` with ``model`` in training (``train``) or eval mode."""
    model.train(train)
    call(batch)


def matmul_rate_gflops(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a ``size``³ float32 matrix product on ``device`` (best of ``repeats`` after a warm-up):
    the reference rate of the roofline."""
    a, b = (torch.randn(size, size, device=device) for _ in range(2))
    seconds = min(measure(lambda: a @ b, device, repeats + 1, math.inf)[1:])
    return 2.0 * size**3 / seconds / 1e9


def counted_work(call: Any, device: torch.device) -> dict[str, Any]:
    """FLOPs (matrix products, as ``torch.profiler`` counts them) and bytes allocated by the
    operators of one ``call()``, with the five operators that allocate most."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, with_flops=True, profile_memory=True) as profiler:
        call()
        synchronize(device)
    events = profiler.key_averages()
    memory = "self_device_memory_usage" if device.type == "cuda" else "self_cpu_memory_usage"
    allocated = {event.key: max(getattr(event, memory), 0) for event in events}
    largest = sorted(allocated.items(), key=lambda item: -item[1])[:5]
    return {
        "flops": int(sum(event.flops for event in events)),
        "allocated_bytes": int(sum(allocated.values())),
        "largest_allocators_bytes": dict(largest),
    }


def roofline(calls: dict[str, Any], seconds: dict[str, float], device: torch.device) -> dict[str, Any]:
    """The roofline figures (see the module docstring) of each phase's ``calls[phase]()``, whose
    measured median time is ``seconds[phase]``."""
    reference = matmul_rate_gflops(device)
    out: dict[str, Any] = {"matmul_reference_gflops": reference}
    for phase, call in calls.items():
        work = counted_work(call, device)
        achieved = work["flops"] / seconds[phase] / 1e9
        out[phase] = work | {
            "seconds": seconds[phase],
            "achieved_gflops": achieved,
            "fraction_of_matmul_rate": achieved / reference,
            "flops_per_allocated_byte": work["flops"] / max(work["allocated_bytes"], 1),
        }
    return out


def format_point(point: dict[str, Any]) -> str:
    """``seconds  particles/s  MiB  repeats`` of a measured point, or why it did not run."""
    if "seconds" not in point:
        return f"{point.get('skipped') or point['failed']:>36}"
    return (f"{point['seconds']:>9.3f} {point['particles_per_s']:>10.0f} {point['peak_memory_mib']:>9.0f} "
            f"{len(point['times_s']):>3}")


def profile_training_step(graph: Any, device: torch.device, tensor_product: str, path: Path) -> dict[str, Any]:
    """Profile one training step of the default equivariant model (after one unprofiled step).

    Writes the profiler's table (top 30 ops by self time) to ``path`` and returns
    :func:`profile_summary`.
    """
    torch.manual_seed(0)
    model = build_model(model_section("equivariant", tensor_product), N_TIMESCALES).to(device).train()
    step = training_step(model, model, training_objective([graph]), device)
    batch = to_batch([graph], device)
    step(batch)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with module_ranges(model), profile(activities=activities) as profiler:
        step(batch)
        synchronize(device)
    events = profiler.key_averages()
    table = events.table(sort_by="self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total", row_limit=30)
    path.write_text(table + "\n")
    print(table)
    return profile_summary(events) | {"table": path.name}


@contextmanager
def module_ranges(model: nn.Module) -> Iterator[None]:
    """Open a profiler range named by :data:`PROFILE_LABELS` (or "forward: decoder") around the
    forward of each such module of ``model`` (nested ranges include their children)."""
    ranges: dict[int, list[record_function]] = {}

    def label(module: nn.Module) -> str:
        return "forward: decoder" if module is getattr(model, "decoder", None) else PROFILE_LABELS[type(module)]

    def enter(module: nn.Module, args: object) -> None:
        ranges.setdefault(id(module), []).append(record_function(label(module)).__enter__())

    def leave(module: nn.Module, args: object, output: object) -> None:
        ranges[id(module)].pop().__exit__(None, None, None)

    hooks = []
    for module in model.modules():
        if type(module) in PROFILE_LABELS or module is getattr(model, "decoder", None):
            hooks += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def profile_summary(events: Any) -> dict[str, Any]:
    """The profiler's total self CPU time, its top 10 aten ops by self CPU time, the forward
    CPU time of each labelled module kind, and the 10 costliest autograd backward functions."""
    total = sum(event.self_cpu_time_total for event in events)
    ops = sorted((e for e in events if e.key.startswith("aten::")), key=lambda e: e.self_cpu_time_total, reverse=True)
    backward = sorted((e for e in events if e.key.startswith("autograd::engine::evaluate_function: ")),
                      key=lambda e: e.cpu_time_total, reverse=True)
    labels = set(PROFILE_LABELS.values()) | {"forward: decoder"}
    return {
        "self_cpu_total_s": total / 1e6,
        "top_ops_by_self_cpu": [
            {"op": e.key, "self_cpu_s": e.self_cpu_time_total / 1e6, "share": e.self_cpu_time_total / total,
             "calls": e.count}
            for e in ops[:10]
        ],
        "forward_cpu_by_module": {e.key: e.cpu_time_total / 1e6 for e in events if e.key in labels},
        "top_backward_functions_by_cpu_total": [
            {"function": e.key.split(": ", 1)[1], "cpu_total_s": e.cpu_time_total / 1e6, "calls": e.count}
            for e in backward[:10]
        ],
    }


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--n-particles", type=int, default=4096)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES))
    parser.add_argument("--tensor-product", choices=TENSOR_PRODUCTS, default="fused",
                        help="tensor product of the equivariant models (default: fused)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per point (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per model, at batch size 1")
    parser.add_argument("--max-seconds", type=float, default=60.0,
                        help="skip a point predicted to take longer than this per call; stop repeating after this long")
    parser.add_argument("--memory-fraction", type=float, default=0.6,
                        help="skip a point predicted to need more than this fraction of the available memory")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="autocast the forward passes to this dtype, as [train] precision does")
    parser.add_argument("--message-sum", choices=("compiled", "pytorch", "both"), default="compiled",
                        help="the fused tensor product's CPU message sum (see the module docstring)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile(dynamic=True) every model; the first warm-up call of each phase compiles")
    add_cpu_options(parser)
    parser.add_argument("--quick", action="store_true",
                        help="only equivariant_matched and bapst, batch size 1, one repeat, no warmup")
    parser.add_argument("--profile", action="store_true", help="profile one equivariant training step")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: results/train_step-<device>[-<tensor product>][-compile][-<precision>][-quick].json")
    args = parser.parse_args()
    if args.quick:
        args.models, args.batch_sizes, args.repeats, args.warmup = ["equivariant_matched", "bapst"], [1], 1, 0
    if args.compile:
        args.warmup = max(args.warmup, 1)
    return args


def time_loading_both_ways(
    configurations: Configurations, batch_sizes: list[int], device: torch.device, repeats: int
) -> tuple[list[Any], dict[str, dict[int, float]]]:
    """The graphs of ``configurations`` (as training builds them) and the median loading
    seconds per batch size, ``{"uncached": {...}, "cached": {...}}`` (see the module docstring)."""
    with tempfile.TemporaryDirectory() as directory:
        dataset = write_dataset(Path(directory), configurations, len(configurations.positions))
        graphs = [dataset[k] for k in range(len(dataset))]
        uncached = {b: time_loading(dataset, b, device, repeats) for b in batch_sizes}
    cached = {b: time_loading(graphs, b, device, repeats) for b in batch_sizes}
    return graphs, {"uncached": uncached, "cached": cached}


@contextmanager
def pytorch_message_sum(enabled: bool) -> Iterator[None]:
    """Within: the fused tensor product sums messages with PyTorch operators (``enabled``) or as the model would."""
    previous = os.environ.get("EQUIGLASS_COMPILED_KERNELS")
    if enabled:
        os.environ["EQUIGLASS_COMPILED_KERNELS"] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("EQUIGLASS_COMPILED_KERNELS", None)
        else:
            os.environ["EQUIGLASS_COMPILED_KERNELS"] = previous


def _seconds(entry: dict[str, Any], phase: str) -> float:
    """Median seconds of ``phase`` at the smallest batch size of a model's entry (NaN where it did not run)."""
    return entry["results"][0][phase].get("seconds", math.nan)


def main() -> None:
    args = parse_arguments()
    apply_cpu_options(args)
    device = resolve_device(args.device)
    suffix = ("" if args.tensor_product == "fused" else f"-{args.tensor_product}") + ("-compile" if args.compile else "") + (
        "" if args.precision == "float32" else f"-{args.precision}") + (
        "" if args.malloc == "retain" else "-malloc-default") + (
        "" if args.message_sum == "compiled" else f"-message-sum-{args.message_sum}") + (
        "-quick" if args.quick else "")
    out = args.out or RESULTS / f"train_step-{device.type}{suffix}.json"

    machine = machine_info(device)
    print(json.dumps(machine), flush=True)
    configurations = ka_configurations(
        args.n_particles, min(max(args.batch_sizes), 4), cache=RESULTS / f"ka-N{args.n_particles}-T{TEMPERATURE}.npz"
    )
    print(f"configurations: {configurations.origin}")
    graphs, loading = time_loading_both_ways(configurations, args.batch_sizes, device, max(args.repeats, 3))
    print(f"N = {args.n_particles}, {graphs[0].edge_index.shape[1]} edges per configuration, T = {N_TIMESCALES}")
    for kind, seconds in loading.items():
        print(f"loading, {kind}, s: " + ", ".join(f"batch {b}: {t:.3f}" for b, t in seconds.items()))

    print(f"{'model':>20} {'batch':>5} {'train s':>9} {'train p/s':>10} {'train MiB':>9} {'rep':>3} "
          f"{'infer s':>9} {'infer p/s':>10} {'infer MiB':>9} {'rep':>3}")
    models: dict[str, Any] = {}
    for name in args.models:
        equivariant = name != "bapst"
        for message_sum in (("compiled", "pytorch") if args.message_sum == "both" else (args.message_sum,)):
            if message_sum == "compiled" or equivariant:
                with pytorch_message_sum(message_sum == "pytorch"):
                    label = f"{name}/pytorch" if args.message_sum == "both" and message_sum == "pytorch" else name
                    models[label] = benchmark_model(name, graphs, args.batch_sizes, device, args)
    steps = {
        name: {row["batch_size"]: row["train"]["seconds"] for row in entry["results"] if "seconds" in row["train"]}
        for name, entry in models.items()
    }
    smallest = min(args.batch_sizes)
    payload: dict[str, Any] = {
        "machine": machine,
        "command_options": vars(args) | {"out": str(out)},
        "configurations": configurations.origin,
        "n_particles": args.n_particles,
        "cutoff": CUTOFF,
        "density": DENSITY,
        "edges_per_configuration": int(graphs[0].edge_index.shape[1]),
        "loading_s": loading,
        "models": models,
    }
    payload["compiled_kernel_available"] = kernel_available()
    if args.message_sum == "both":
        payload["compiled_kernel_speedup"] = speedups = {
            name: {phase: _seconds(models[f"{name}/pytorch"], phase) / _seconds(models[name], phase)
                   for phase in ("train", "inference")}
            for name in args.models if f"{name}/pytorch" in models
        }
        print(f"compiled_kernel_speedup (batch {min(args.batch_sizes)}): {speedups}")
    if {"equivariant_matched", "bapst"} <= steps.keys():
        matched, bapst = steps["equivariant_matched"], steps["bapst"]
        ratios = {b: matched[b] / bapst[b] for b in args.batch_sizes if b in matched and b in bapst}
        payload["equivariant_over_bapst_cost_ratio"] = ratios.get(smallest)
        payload["equivariant_over_bapst_cost_ratio_by_batch_size"] = ratios
        payload["matched_parameters"] = {name: models[name]["parameters"] for name in ("equivariant_matched", "bapst")}
        print(f"equivariant_over_bapst_cost_ratio (batch {smallest}): {ratios.get(smallest)} "
              f"({payload['matched_parameters']})")
    fractions = {
        kind: {
            name: {b: seconds[b] / (seconds[b] + step) for b, step in by_batch.items()} for name, by_batch in steps.items()
        }
        for kind, seconds in loading.items()
    }
    payload["graph_and_loading_fraction_by_model"] = fractions
    if "equivariant_matched" in steps:
        payload["graph_and_loading_fraction"] = fractions["uncached"]["equivariant_matched"].get(smallest)
    for kind, by_model in fractions.items():
        for name, by_batch in by_model.items():
            print(f"graph_and_loading_fraction ({kind}) {name}: "
                  + ", ".join(f"batch {b}: {f:.4f}" for b, f in by_batch.items()))
    if args.profile:
        table = out.with_name(f"train_step-profile-{device.type}{suffix}.txt")
        with pytorch_message_sum(args.message_sum == "pytorch"):
            payload["profile"] = profile_training_step(graphs[0], device, args.tensor_product, table)
    payload["load_average_end_1_5_15"] = load_average()
    write_json(out, payload)


if __name__ == "__main__":
    main()
