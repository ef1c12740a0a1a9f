"""The parameters of a generated dataset: `GenerationProtocol`, the quantities derived from it
(box, stored times, run lengths in MD steps, chains) and the seed of every chain and trajectory.

Also the provenance strings a generated manifest records (`SOURCE`, `PROPENSITY_DEFINITION`).
LJ units throughout.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from equiglass.physics import kob_andersen as ka

SOURCE = "equiglass generate: Kob-Andersen iso-configurational ensemble simulated with LAMMPS"
PROPENSITY_DEFINITION = (
    "mean over R iso-configurational trajectories of |r_i(t) - r_i(0)|, centre-of-mass drift removed; "
    "msd holds the mean squared displacement"
)
HALVES_DEFINITION = (
    "propensity_halves: the same mean over the first and over the second half of the R trajectories "
    "(the first holds one more for odd R), for the split-half noise ceiling"
)
_CHAIN_STREAM = 1
_VELOCITY_STREAM = 2


def _option(default: Any, help: str) -> Any:
    """A dataclass field whose help text the command line shows."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class GenerationProtocol:
    """Every parameter of a generated dataset (LJ units; JSON-serialisable).

    The defaults make the demo dataset: N = 1000 at T = 0.6 (tau_alpha about
    13.4), 24 configurations in 6 chains, 16 trajectories each to 3 tau_alpha.
    Lengths of runs are multiples of ``tau_alpha_estimate``, which the user
    supplies; the generator measures tau_alpha and warns if the estimate was
    too small for the sampled configurations to be decorrelated.
    """

    n_particles: int = _option(1000, "number of particles N (80:20 A:B; at least 500 at density 1.2)")
    density: float = _option(ka.DENSITY, "number density N / V")
    temperature: float = _option(0.6, "temperature T (LJ units)")
    timestep: float = _option(0.005, "MD time step (LJ time)")
    thermostat: Literal["nose-hoover", "langevin", "nve"] = _option("nose-hoover", "thermostat of all runs")
    thermostat_damping: float = _option(
        0.5, "thermostat relaxation time (LJ time): LAMMPS Tdamp of fix nvt or fix langevin; 100 time steps is usual"
    )
    tau_alpha_estimate: float = _option(
        13.4, "estimate of tau_alpha at this temperature (LJ time); sets the lengths of all runs"
    )
    equilibration_tau: float = _option(10.0, "equilibration of each chain, in units of tau_alpha_estimate")
    sampling_interval_tau: float = _option(
        2.0, "time between configurations of a chain, in units of tau_alpha_estimate (at least 1)"
    )
    n_configurations: int = _option(24, "number of configurations in the dataset")
    configurations_per_chain: int = _option(4, "configurations sampled from each independent chain")
    replicas: int = _option(16, "iso-configurational trajectories per configuration")
    n_times: int = _option(10, "number of log-spaced stored time points")
    time_min: float = _option(0.05, "first stored time (LJ time)")
    time_max_tau: float = _option(3.0, "last stored time, in units of tau_alpha_estimate")
    q: float = _option(7.25, "wave number of F_s(q, t) (near the first peak of S(q) at density 1.2)")
    minimizer: Literal["fire", "cg"] = _option("fire", "minimiser for inherent states")
    force_tolerance: float = _option(1e-6, "inherent states: stop when max_i |F_i| is below this")
    minimizer_max_iterations: int = _option(100_000, "inherent states: iteration limit (error if not converged)")
    start: Literal["random", "lattice"] = _option("random", "initial configuration of each chain")
    seed: int = _option(0, "protocol seed, from which every chain and velocity seed is derived")
    threads: int = _option(1, "OpenMP threads per LAMMPS instance")

    def __post_init__(self) -> None:
        positive = (
            "density", "temperature", "timestep", "thermostat_damping", "tau_alpha_estimate",
            "equilibration_tau", "time_min", "time_max_tau", "q", "force_tolerance",
        )  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        at_least_one = (
            "n_configurations", "configurations_per_chain", "replicas", "n_times",
            "minimizer_max_iterations", "threads",
        )  # fmt: skip
        for name in at_least_one:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not self.sampling_interval_tau >= 1:
            raise ValueError(
                f"sampling_interval_tau must be at least 1 (configurations at least tau_alpha apart), "
                f"got {self.sampling_interval_tau!r}"
            )
        for name, choices in (
            ("thermostat", ("nose-hoover", "langevin", "nve")),
            ("minimizer", ("fire", "cg")),
            ("start", ("random", "lattice")),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if not isinstance(self.n_particles, int) or self.box_side < 2 * ka.MAX_CUTOFF:
            raise ValueError(
                f"n_particles = {self.n_particles!r} at density {self.density} gives a box side below twice "
                f"the largest cutoff ({2 * ka.MAX_CUTOFF}); use at least 500 particles at density 1.2"
            )
        if not self.time_max_tau * self.tau_alpha_estimate > self.time_min:
            raise ValueError("the last stored time (time_max_tau * tau_alpha_estimate) must exceed time_min")
        steps = self.time_steps
        if steps[0] < 1 or np.any(np.diff(steps) < 1):
            raise ValueError(
                f"the {self.n_times} log-spaced times from {self.time_min} to "
                f"{self.time_max_tau * self.tau_alpha_estimate:g} round to repeated numbers of time steps "
                f"{steps.tolist()}: use fewer times, a larger time_min or a smaller timestep"
            )

    @property
    def box_side(self) -> float:
        """Side of the cubic box (LJ lengths)."""
        return ka.box_length(self.n_particles, self.density)

    @property
    def box(self) -> np.ndarray:
        """[3] box sides (LJ lengths)."""
        return np.full(3, self.box_side)

    @property
    def time_steps(self) -> np.ndarray:
        """[T] int64: the stored times as whole numbers of time steps after the start of a trajectory."""
        times = np.geomspace(self.time_min, self.time_max_tau * self.tau_alpha_estimate, self.n_times)
        return np.rint(times / self.timestep).astype(np.int64)

    @property
    def times(self) -> np.ndarray:
        """[T] float64 stored times (LJ time): `time_steps` x timestep, the requested times rounded to whole steps."""
        return self.time_steps * self.timestep

    @property
    def equilibration_steps(self) -> int:
        """MD steps of each chain's equilibration."""
        return round(self.equilibration_tau * self.tau_alpha_estimate / self.timestep)

    @property
    def sampling_interval_steps(self) -> int:
        """MD steps between successive configurations of a chain."""
        return round(self.sampling_interval_tau * self.tau_alpha_estimate / self.timestep)

    @property
    def n_chains(self) -> int:
        """Number of chains; the last one is shorter if n_configurations is not a multiple."""
        return -(-self.n_configurations // self.configurations_per_chain)

    def chain_configurations(self, chain: int) -> range:
        """Indices of the configurations chain `chain` samples, in order."""
        first = chain * self.configurations_per_chain
        return range(first, min(first + self.configurations_per_chain, self.n_configurations))

    def chain_of(self, configuration: int) -> int:
        """The chain that samples configuration `configuration`."""
        return configuration // self.configurations_per_chain

    def chain_seed(self, chain: int) -> int:
        """Seed of chain `chain` (initial positions, types, velocities): SeedSequence([seed, 1, chain])."""
        return _derived_seed(self.seed, _CHAIN_STREAM, chain)

    def velocity_seed(self, configuration: int, replica: int) -> int:
        """Seed of one trajectory's initial velocities (and Langevin noise).

        Derived as SeedSequence([seed, 2, configuration, replica]).
        """
        return _derived_seed(self.seed, _VELOCITY_STREAM, configuration, replica)

    def engine_options(self) -> dict[str, Any]:
        """Keyword arguments of `equiglass.simulate.lammps.KobAndersenLammps` (all but positions, types, box, seed)."""
        return {
            "timestep": self.timestep,
            "temperature": self.temperature,
            "thermostat": self.thermostat,
            "thermostat_damping": self.thermostat_damping,
            "threads": self.threads,
        }

    def to_json(self) -> dict[str, Any]:
        """The protocol as the JSON object stored in (and compared with) the manifest."""
        return json.loads(json.dumps(asdict(self)))


def _derived_seed(*entropy: int) -> int:
    """A uint32 seed from integers: SeedSequence(entropy).generate_state(1, uint32)."""
    return int(np.random.SeedSequence(list(entropy)).generate_state(1, dtype=np.uint32)[0])
