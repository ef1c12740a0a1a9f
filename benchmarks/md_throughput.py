"""MD throughput of the Kob-Andersen LAMMPS engine: time steps per second.

Equilibrates a random KA configuration briefly at temperature T, then times
`run(steps)` under the Nose-Hoover thermostat for each N and thread count.
Prints a table and writes benchmarks/results/md_throughput-cpu.json.

    python benchmarks/md_throughput.py                     # N = 500, 1000, 4096; 1 and 2 threads
    python benchmarks/md_throughput.py --sizes 1000 --threads 1 --seconds 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from equiglass.physics import kob_andersen
from equiglass.simulate.lammps import KobAndersenLammps, lammps_version


def steps_per_second(n_particles: int, threads: int, temperature: float, seconds: float, seed: int) -> float:
    """Steps/s of an equilibrated-ish KA system of `n_particles` at `temperature`."""
    box_side = kob_andersen.box_length(n_particles, kob_andersen.DENSITY)
    box = np.full(3, box_side)
    positions, types = kob_andersen.initial_positions(n_particles, box, np.random.default_rng(seed), start="lattice")
    with KobAndersenLammps(positions, types, box, temperature=temperature, seed=seed, threads=threads) as engine:
        engine.draw_velocities(temperature, seed)
        engine.run(2000)  # melt the lattice and fill neighbour lists before timing
        steps = 500
        while True:
            start = time.perf_counter()
            engine.run(steps)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return steps / elapsed
            steps = int(steps * max(2.0, 1.2 * seconds / max(elapsed, 1e-3)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 4096])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--seconds", type=float, default=10.0, help="minimum timed wall time per point")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "md_throughput-cpu.json")
    args = parser.parse_args()

    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "lammps": lammps_version(),
    }
    print(json.dumps(machine))
    rows = []
    print(f"{'N':>6} {'threads':>7} {'steps/s':>10} {'particle-steps/s':>17}")
    for n_particles in args.sizes:
        for threads in args.threads:
            rate = steps_per_second(n_particles, threads, args.temperature, args.seconds, seed=1)
            rows.append({"n_particles": n_particles, "threads": threads, "steps_per_second": rate})
            print(f"{n_particles:>6} {threads:>7} {rate:>10.0f} {rate * n_particles:>17.3g}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "temperature": args.temperature, "results": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
