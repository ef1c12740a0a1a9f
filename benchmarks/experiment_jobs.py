"""Wall time of an experiment's runs trained one at a time or side by side (``equiglass experiment --jobs``).

Trains the same runs of a spec (default: two seeds of the demo-sized equivariant model of
``experiments/recipe.toml`` on ``data/demo``, a few epochs each) into fresh directories, first one
run at a time on every core (``--jobs 1 --threads <cores>``), then ``cores`` runs at once on one
thread each (``--jobs <cores> --threads 1``), and reports the wall time of each, their ratio, and
whether the runs' numbers agree (they need not to the last digit: thread counts differ).

Writes benchmarks/results/experiment_jobs-cpu.json.

    python benchmarks/experiment_jobs.py --epochs 6
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from common import machine_info

from equiglass.experiments.runner import run_experiment

REPOSITORY = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=REPOSITORY / "experiments" / "recipe.toml")
    parser.add_argument("--runs", nargs="+", default=["60ep-loss-AB-readout-norms-displacement",
                                                      "60ep-loss-AB-readout-norms-displacement-seed1"])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    timings = {}
    scores = {}
    with tempfile.TemporaryDirectory() as scratch:
        for label, jobs, threads in (("one at a time", 1, args.cores), ("side by side", args.cores, 1)):
            began = time.perf_counter()
            results = run_experiment(args.spec, "cpu", out=Path(scratch) / f"jobs{jobs}", epochs=args.epochs,
                                     progress=False, threads=threads, runs=args.runs, jobs=jobs)
            timings[label] = {"jobs": jobs, "threads": threads, "wall_s": time.perf_counter() - began}
            scores[label] = {name: run["best_val_pearson_mean"] for name, run in results["runs"].items()}
            print(f"{label}: --jobs {jobs} --threads {threads}: {timings[label]['wall_s']:.1f} s")
    speedup = timings["one at a time"]["wall_s"] / timings["side by side"]["wall_s"]
    print(f"side by side is {speedup:.2f}x faster; best validation Pearson {scores}")
    out = REPOSITORY / "benchmarks" / "results" / "experiment_jobs-cpu.json"
    out.write_text(json.dumps({"machine": machine_info(torch.device("cpu")), "spec": str(args.spec.relative_to(REPOSITORY)),
                               "runs": args.runs, "epochs": args.epochs, "timings": timings, "speedup": speedup,
                               "best_val_pearson_mean": scores}, indent=2) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
