"""How the cost of graph construction and of the models grows with the number of particles.

For each N (KA at density 1.2, one LAMMPS-melted configuration per size, cutoff 2.0):
the time to build the graph (`configuration_graph`: validation, vesin neighbour list,
`Data`), and for the default equivariant model and the Bapst GNN the time of a no-grad
forward (eval mode) and of forward + the training loss + backward (train mode), each the median of
up to `--repeats` calls, with peak memory (see `common.py`). Prints a table of
microseconds per particle, the log-log slope of time against N (1 = linear), and per model
and N the fraction of a graph build + training step (forward + backward) spent building
the graph (the graph built anew for every step: an upper bound, training caches graphs).

A point is skipped, and the reason recorded, when a linear extrapolation from the
previous size of the same model and phase predicts more than `--max-seconds` for one
call, or more than `--memory-fraction` of the memory available (CPU: `MemAvailable`;
CUDA: free device memory). Writes benchmarks/results/scaling-<device>[-<tensor product>].json.

    python benchmarks/scaling.py                                    # N = 500 ... 32768
    python benchmarks/scaling.py --sizes 1000 4096 --repeats 2 --start lattice
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import (
    CUTOFF,
    N_TIMESCALES,
    RESULTS,
    add_cpu_options,
    apply_cpu_options,
    forward_backward,
    inference,
    ka_configurations,
    load_average,
    machine_info,
    measure,
    measure_point,
    median,
    model_section,
    resolve_device,
    to_batch,
    training_objective,
    write_json,
)

from equiglass.data.graphs import configuration_graph
from equiglass.nn.convolution import TENSOR_PRODUCTS
from equiglass.nn.registry import build_model
from equiglass.training.objective import Objective

#: Models compared (names of `common.MODEL_NAMES`) and the phases timed for each: ``(model, batch, objective)``.
SCALING_MODELS = ("equivariant", "bapst")
PHASES: dict[str, Callable[[torch.nn.Module, Any, Objective], None]] = {
    "forward": lambda model, batch, _: inference(model, batch),
    "forward_backward": forward_backward,
}


def log_log_slope(sizes: list[int], seconds: list[float]) -> float:
    """Least-squares slope of log(seconds) against log(N) (NaN with fewer than two points)."""
    if len(sizes) < 2:
        return math.nan
    return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


def slopes(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Log-log slopes of ``row[key]["seconds"]`` over every measured size and over the three largest."""
    measured = [(row["n_particles"], row[key]["seconds"]) for row in rows if "seconds" in row[key]]
    sizes, seconds = [n for n, _ in measured], [s for _, s in measured]
    return {"all": log_log_slope(sizes, seconds), "largest_3": log_log_slope(sizes[-3:], seconds[-3:])}


def graph_fractions(rows: list[dict[str, Any]]) -> dict[str, dict[int, float]]:
    """Per model and N: graph seconds / (graph seconds + forward-backward seconds), where both were measured."""
    fractions: dict[str, dict[int, float]] = {}
    for name in SCALING_MODELS:
        step = f"{name}:forward_backward"
        fractions[name] = {
            row["n_particles"]: row["graph"]["seconds"] / (row["graph"]["seconds"] + row[step]["seconds"])
            for row in rows
            if "seconds" in row[step]
        }
    return fractions


def format_cell(result: dict[str, Any], n_particles: int) -> str:
    """``µs per particle`` of a point, or ``skip`` / ``fail``."""
    if "seconds" in result:
        return f"{1e6 * result['seconds'] / n_particles:.1f}"
    return "skip" if "skipped" in result else "fail"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2048, 4096, 8192, 16384, 32768])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per point (median reported)")
    parser.add_argument("--max-seconds", type=float, default=60.0,
                        help="skip a point predicted to take longer than this per call; stop repeating after this long")
    parser.add_argument("--memory-fraction", type=float, default=0.6,
                        help="skip a point predicted to need more than this fraction of the available memory")
    parser.add_argument("--tensor-product", choices=TENSOR_PRODUCTS, default="fused",
                        help="tensor product of the equivariant model (default: fused)")
    parser.add_argument("--start", choices=["melt", "lattice"], default="melt", help="how configurations are made")
    add_cpu_options(parser)
    parser.add_argument("--out", type=Path, default=None, help="default: results/scaling-<device>[-<tensor product>].json")
    args = parser.parse_args()
    apply_cpu_options(args)
    device = resolve_device(args.device)
    suffix = ("" if args.tensor_product == "fused" else f"-{args.tensor_product}") + (
        "" if args.malloc == "retain" else "-malloc-default")
    out = args.out or RESULTS / f"scaling-{device.type}{suffix}.json"
    machine = machine_info(device)
    print(json.dumps(machine), flush=True)

    sizes = sorted(args.sizes)
    torch.manual_seed(0)
    models = {
        name: build_model(model_section(name, args.tensor_product), N_TIMESCALES).to(device) for name in SCALING_MODELS
    }
    rows: list[dict[str, Any]] = []
    columns = [f"{name}:{phase}" for name in SCALING_MODELS for phase in PHASES]
    header = f"{'N':>6} {'edges':>8} {'graph':>7} " + " ".join(f"{column:>28}" for column in columns)
    print("microseconds per particle (median); 'skip': predicted over a limit (see the JSON)")
    print(header, flush=True)
    for index, n_particles in enumerate(sizes):
        configurations = ka_configurations(n_particles, 1, start=args.start)
        fields = configurations.fields(0)
        build = partial(configuration_graph, fields, cutoff=CUTOFF)
        graph_times = measure(build, device, args.repeats, args.max_seconds)
        graph = build()
        batch = to_batch([graph], device)
        objective = training_objective([graph])
        row: dict[str, Any] = {
            "n_particles": n_particles,
            "n_edges": int(graph.edge_index.shape[1]),
            "configuration": configurations.origin,
            "graph": {"seconds": median(graph_times), "times_s": graph_times},
        }
        previous = rows[-1] if rows else None
        growth = n_particles / previous["n_particles"] if previous else 1.0
        for name, model in models.items():
            for phase, run in PHASES.items():
                key = f"{name}:{phase}"
                model.train(phase == "forward_backward")
                if index == 0:
                    run(model, batch, objective)  # warm-up, once per model and phase, at the smallest size
                row[key] = measure_point(
                    partial(run, model, batch, objective),
                    device,
                    args.repeats,
                    args.max_seconds,
                    previous[key] if previous else None,
                    growth,
                    args.memory_fraction,
                )
                model.zero_grad(set_to_none=True)
        row["load_average_1_5_15"] = load_average()
        rows.append(row)
        cells = [format_cell(row[column], n_particles) for column in columns]
        print(
            f"{n_particles:>6} {row['n_edges']:>8} {1e6 * row['graph']['seconds'] / n_particles:>7.2f} "
            + " ".join(f"{cell:>28}" for cell in cells),
            flush=True,
        )

    fits = {key: slopes(rows, key) for key in ["graph", *columns]}
    print("log-log slope of time vs N (all measured sizes / three largest):")
    for key, fit in fits.items():
        print(f"  {key:>28}: {fit['all']:.3f} / {fit['largest_3']:.3f}")
    fractions = graph_fractions(rows)
    for name, by_size in fractions.items():
        print(f"graph fraction of graph + step, {name}: " + ", ".join(f"N={n}: {f:.4f}" for n, f in by_size.items()))
    write_json(
        out,
        {
            "machine": machine,
            "command_options": vars(args) | {"out": str(out)},
            "cutoff": CUTOFF,
            "parameters": {name: sum(p.numel() for p in model.parameters()) for name, model in models.items()},
            "results": rows,
            "log_log_slopes": fits,
            "graph_fraction_of_step": fractions,
            "load_average_end_1_5_15": load_average(),
        },
    )


if __name__ == "__main__":
    main()
