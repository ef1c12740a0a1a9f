"""Tests of equiglass.simulate.lammps: the LAMMPS engine against the independent numpy Kob-Andersen code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from equiglass.physics import kob_andersen as ka
from equiglass.simulate import lammps as lammps_engine
from equiglass.simulate.lammps import KobAndersenLammps, import_lammps, lammps_version

T_LIQUID = 0.8


def cubic_box(n: int) -> np.ndarray:
    return np.full(3, ka.box_length(n))


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """||actual - expected|| / ||expected||, norms over all entries."""
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def assert_matches_numpy(engine: KobAndersenLammps, types: np.ndarray, box: np.ndarray) -> None:
    """LAMMPS per-particle energies, forces and total energy equal the numpy reference to 1e-8."""
    energy, forces = ka.potential_energy_and_forces(engine.positions(), types, box)
    assert relative_error(engine.per_particle_potential_energy(), energy) < 1e-8
    assert relative_error(engine.forces(), forces) < 1e-8
    assert engine.potential_energy() == pytest.approx(energy.sum(), rel=1e-10)


def virial_pressure(positions: np.ndarray, types: np.ndarray, box: np.ndarray) -> float:
    """sum_{i<j} r_ij . F_ij / (3 V) by brute force over minimum-image pairs."""
    i, j = np.triu_indices(len(positions), k=1)
    delta = positions[i] - positions[j]
    delta -= box * np.round(delta / box)
    r2 = np.einsum("ij,ij->i", delta, delta)
    a, b = types[i], types[j]
    inside = r2 < ka.CUTOFF[a, b] ** 2
    s6 = (ka.SIGMA[a, b][inside] ** 2 / r2[inside]) ** 3
    r_dot_f = 24 * ka.EPSILON[a, b][inside] * (2 * s6 * s6 - s6)
    return float(r_dot_f.sum() / (3 * np.prod(box)))


@pytest.fixture(scope="module")
def liquid() -> dict[str, np.ndarray]:
    """N = 500 equilibrated for 10 time units at T = 0.8 (Nose-Hoover) from a relaxed random start."""
    n = 500
    box = cubic_box(n)
    positions, types = ka.initial_positions(n, box, np.random.default_rng(0), start="random")
    with KobAndersenLammps(positions, types, box, temperature=T_LIQUID, seed=1) as engine:
        engine.relax_overlaps()
        engine.draw_velocities(T_LIQUID, seed=1)
        engine.reset_thermostat()
        engine.run(2000)
        return {"positions": engine.positions(), "velocities": engine.velocities(), "types": types, "box": box}


# ---------------------------------------------------------------- import


def test_import_lammps_and_version() -> None:
    assert callable(import_lammps())
    version = lammps_version()
    assert version.isdigit() and len(version) == 8  # e.g. 20250722


def test_import_error_names_both_packages(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = "/nonexistent/lib/libmpi.so.12"
    not_a_library = tmp_path / "libmpi.so.12"
    not_a_library.write_text("not an ELF file")
    monkeypatch.setattr(lammps_engine, "_libmpi_candidates", lambda: [missing, str(not_a_library)])
    with pytest.raises(ImportError) as info:
        import_lammps()
    message = str(info.value)
    for needle in ("lammps[mpi]", "mpich", missing, str(not_a_library)):
        assert needle in message


def test_libmpi_candidates_start_with_the_environment_prefix() -> None:
    candidates = lammps_engine._libmpi_candidates()
    assert candidates[0] == str(Path(sys.prefix) / "lib" / "libmpi.so.12")
    assert len(candidates) == len(set(candidates))


MPI_AT_EXIT = """
import os, sys
import numpy as np
from equiglass.simulate.lammps import KobAndersenLammps, lammps_version
lammps_version()
box = np.full(3, 6.0)
positions = np.random.default_rng(0).uniform(0, 6.0, (10, 3))
kept = KobAndersenLammps(positions, np.zeros(10, dtype=int), box, temperature=1.0, seed=0)  # left open
with KobAndersenLammps(positions, np.zeros(10, dtype=int), box, temperature=1.0, seed=0) as closed:
    closed.run(1)
print(os.getpid())
"""


def test_mpi_is_finalised_at_exit() -> None:
    """mpich's shared memory of the process is removed at exit, even with an instance left open."""
    result = subprocess.run([sys.executable, "-c", MPI_AT_EXIT], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    pid = int(result.stdout)
    leaked = list(Path("/dev/shm").glob(f"mpich_shm_{pid:x}_*"))
    for path in leaked:
        path.unlink()
    assert leaked == []


# ---------------------------------------------------------------- construction


def test_constructor_validates_input() -> None:
    n = 500
    box = cubic_box(n)
    positions, types = ka.initial_positions(n, box, np.random.default_rng(0), start="lattice")
    good = {"temperature": 1.0, "seed": 0}
    bad_calls = [
        (positions[:, :2], types, box, good),
        (positions, types[:-1], box, good),
        (positions, types + 1, box, good),  # types 1, 2
        (positions, types.astype(float), box, good),
        (np.where(np.arange(n)[:, None] == 3, np.nan, positions), types, box, good),
        (positions, types, box * [1, 1, 1.1], good),
        (positions, types, box[:2], good),
        (positions, types, box, {"temperature": -1.0, "seed": 0}),
        (positions, types, box, {"temperature": 1.0, "seed": -1}),
        (positions, types, box, {"temperature": 1.0, "seed": 0, "thermostat": "berendsen"}),
        (positions, types, box, {"temperature": 1.0, "seed": 0, "timestep": 0.0}),
        (positions, types, box, {"temperature": 1.0, "seed": 0, "thermostat_damping": 0.0}),
        (positions, types, box, {"temperature": 1.0, "seed": 0, "threads": 0}),
    ]
    for pos, typ, bx, kwargs in bad_calls:
        with pytest.raises(ValueError):
            KobAndersenLammps(pos, typ, bx, **kwargs)


def test_state_round_trip_and_ordering() -> None:
    n = 500
    box = cubic_box(n)
    positions, types = ka.initial_positions(n, box, np.random.default_rng(5), start="lattice")
    shifted = positions + np.array([1, -2, 0]) * box  # input outside the box is wrapped
    with KobAndersenLammps(shifted, types, box, temperature=1.0, seed=0) as engine:
        np.testing.assert_allclose(engine.positions(), positions, atol=1e-12)
        np.testing.assert_array_equal(engine.image_flags(), 0)
        np.testing.assert_array_equal(engine.velocities(), 0)
        velocities = np.random.default_rng(0).normal(size=(n, 3))
        engine.set_velocities(velocities)
        np.testing.assert_array_equal(engine.velocities(), velocities)
        assert engine.kinetic_temperature() == pytest.approx((velocities**2).sum() / (3 * n - 3), rel=1e-14)
        with pytest.raises(ValueError):
            engine.set_velocities(velocities[:-1])
        with pytest.raises(ValueError):
            engine.set_positions(positions * np.inf)


# ---------------------------------------------------------------- energies and forces


@pytest.mark.parametrize("n", [500, 1000])
def test_energies_and_forces_match_numpy(n: int) -> None:
    box = cubic_box(n)
    positions, types = ka.initial_positions(n, box, np.random.default_rng(n), start="random")
    with KobAndersenLammps(positions, types, box, temperature=1.0, seed=2) as engine:
        relaxed = engine.relax_overlaps()
        assert relaxed["max_force"] < 1.0
        assert np.linalg.norm(ka.potential_energy_and_forces(relaxed["positions"], types, box)[1], axis=1).max() < 1.0
        assert_matches_numpy(engine, types, box)
        engine.draw_velocities(1.0, seed=3)
        engine.reset_thermostat()
        engine.run(500)  # first run after a reset: full LAMMPS setup
        assert_matches_numpy(engine, types, box)
        engine.run(137)  # later runs skip the setup (run N pre no post no)
        assert_matches_numpy(engine, types, box)
        assert np.abs(engine.image_flags()).max() >= 1  # some particles crossed the boundary
        p_virial = virial_pressure(engine.positions(), types, box)
        p_kinetic = (engine.velocities() ** 2).sum() / (3 * np.prod(box))
        assert engine.pressure() == pytest.approx(p_virial + p_kinetic, rel=1e-9)


def test_energies_and_forces_straddling_each_cutoff() -> None:
    """Isolated pairs at distances just inside and just outside their own cutoff."""
    offsets = [-3e-2, -1e-4, -1e-7, 1e-7, 1e-4]
    spacing = 6.0  # > 2 * 2.5: pairs do not see each other
    positions, types = [], []
    rng = np.random.default_rng(4)
    slot = 0
    for a, b in [(0, 0), (0, 1), (1, 1)]:
        for offset in offsets:
            centre = (np.array(np.unravel_index(slot, (3, 3, 3))) + 0.5) * spacing
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            half = 0.5 * (ka.CUTOFF[a, b] + offset) * direction
            positions += [centre - half, centre + half]
            types += [a, b]
            slot += 1
    positions, types = np.array(positions), np.array(types)
    box = np.full(3, 3 * spacing)
    with KobAndersenLammps(positions, types, box, temperature=1.0, seed=0) as engine:
        assert_matches_numpy(engine, types, box)
        forces = engine.forces().reshape(3, len(offsets), 2, 3)
        assert (forces[:, :3] != 0).all() and (forces[:, 3:] == 0).all()


def test_forces_exclude_langevin_noise(liquid: dict[str, np.ndarray]) -> None:
    with KobAndersenLammps(
        liquid["positions"], liquid["types"], liquid["box"], temperature=T_LIQUID, thermostat="langevin", seed=3
    ) as engine:
        engine.set_velocities(liquid["velocities"])
        engine.run(200)
        assert_matches_numpy(engine, liquid["types"], liquid["box"])


def test_set_positions_resets_images_and_refreshes_forces(liquid: dict[str, np.ndarray]) -> None:
    types, box = liquid["types"], liquid["box"]
    with KobAndersenLammps(liquid["positions"], types, box, temperature=T_LIQUID, seed=3) as engine:
        engine.set_velocities(liquid["velocities"])
        engine.run(300)
        assert np.abs(engine.image_flags()).max() >= 1
        moved = liquid["positions"] + np.random.default_rng(0).normal(scale=0.02, size=liquid["positions"].shape)
        moved[0] += box  # an image outside the box
        engine.set_positions(moved)
        np.testing.assert_array_equal(engine.image_flags(), 0)
        np.testing.assert_allclose(engine.positions(unwrapped=True), np.mod(moved, box), atol=1e-12)
        assert_matches_numpy(engine, types, box)
        engine.reset_thermostat()
        engine.run(10)
        assert_matches_numpy(engine, types, box)


# ---------------------------------------------------------------- inherent states


@pytest.mark.parametrize("method", ["fire", "cg"])
def test_inherent_state(liquid: dict[str, np.ndarray], method: str) -> None:
    types, box = liquid["types"], liquid["box"]
    with KobAndersenLammps(liquid["positions"], types, box, temperature=T_LIQUID, seed=3) as engine:
        engine.set_velocities(liquid["velocities"])
        thermal_energy = engine.potential_energy() / len(types)
        result = engine.minimize(method, force_tolerance=1e-6)
        energy, forces = ka.potential_energy_and_forces(result["positions"], types, box)
        assert np.linalg.norm(forces, axis=1).max() < 1e-6
        assert result["max_force"] < 1e-6 and result["iterations"] > 0
        assert result["energy_per_particle"] == pytest.approx(energy.mean(), rel=1e-12)
        assert result["energy_per_particle"] < thermal_energy - 1.0  # about -7.5 against -5.1 at T = 0.8
        np.testing.assert_array_equal(engine.positions(), result["positions"])
        np.testing.assert_array_equal(engine.velocities(), liquid["velocities"])  # restored after FIRE
        engine.reset_thermostat()
        engine.run(20)  # dynamics restart cleanly from the minimum
        assert_matches_numpy(engine, types, box)


def test_minimize_raises_when_not_converged(liquid: dict[str, np.ndarray]) -> None:
    with KobAndersenLammps(liquid["positions"], liquid["types"], liquid["box"], temperature=T_LIQUID, seed=3) as engine:
        with pytest.raises(RuntimeError, match="did not converge"):
            engine.minimize("cg", force_tolerance=1e-6, max_iterations=3)
        with pytest.raises(ValueError):
            engine.minimize("bfgs")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            engine.minimize("fire", force_tolerance=0.0)
        with pytest.raises(ValueError):
            engine.relax_overlaps(max_iterations=0)


# ---------------------------------------------------------------- dynamics


def test_nve_conserves_energy(liquid: dict[str, np.ndarray]) -> None:
    """Velocity Verlet: the total energy fluctuates by O(dt^2) and does not drift.

    Measured here (N = 500, T = 0.8, 2000 steps): per particle, the standard
    deviation of E(t) is 7.2e-4, 1.9e-4 and 4.6e-5 at dt = 0.01, 0.005 and
    0.0025 (the dt^2 scaling of a symplectic integrator), max |E(t) - E(0)| =
    3.6e-4 and the fitted slope -3e-5 per LJ time unit (within its noise) at
    dt = 0.005. Bounds: max |E(t) - E(0)| / N < 2e-3 (0.04 % of |E| / N ~ 5.1)
    and |slope| < 2e-4; inconsistent forces and energies drift by far more.
    """
    n = len(liquid["types"])
    with KobAndersenLammps(
        liquid["positions"], liquid["types"], liquid["box"], temperature=T_LIQUID, thermostat="nve", seed=0
    ) as engine:
        engine.set_velocities(liquid["velocities"])
        energies = []
        for _ in range(21):
            energies.append(engine.potential_energy() + 0.5 * ka.MASS * (engine.velocities() ** 2).sum())
            engine.run(100)
        energies = np.array(energies) / n
        assert np.abs(energies - energies[0]).max() < 2e-3
        slope = np.polyfit(np.arange(21) * 100 * engine.timestep, energies, 1)[0]
        assert abs(slope) < 2e-4
        np.testing.assert_allclose(engine.velocities().sum(axis=0), 0, atol=1e-10)  # momentum conserved


@pytest.mark.parametrize("thermostat", ["nose-hoover", "langevin"])
def test_thermostat_temperature(liquid: dict[str, np.ndarray], thermostat: str) -> None:
    """Mean and fluctuations of the kinetic temperature are canonical.

    10,000 steps (50 LJ time units, 100 thermostat damping times) sampled every
    20 steps; the standard error of the mean comes from 20 block averages, each
    of 2.5 time units, longer than the correlation time of the kinetic
    temperature (~ the 0.5 damping time). Canonical per-sample fluctuations are
    sigma_T = T sqrt(2 / (3N - 3)) = 0.029 here.
    """
    n = len(liquid["types"])
    with KobAndersenLammps(
        liquid["positions"], liquid["types"], liquid["box"], temperature=T_LIQUID, thermostat=thermostat, seed=7
    ) as engine:
        engine.draw_velocities(1.5 * T_LIQUID, seed=0)  # start hot: the thermostat must pull it down
        engine.run(1000)
        samples = []
        for _ in range(500):
            engine.run(20)
            samples.append(engine.kinetic_temperature())
    samples = np.array(samples)
    standard_error = samples.reshape(20, -1).mean(axis=1).std(ddof=1) / np.sqrt(20)
    assert standard_error < 0.01 * T_LIQUID
    assert abs(samples.mean() - T_LIQUID) < 4 * standard_error
    assert samples.std() == pytest.approx(T_LIQUID * np.sqrt(2 / (3 * n - 3)), rel=0.2)


def test_draw_velocities(liquid: dict[str, np.ndarray]) -> None:
    n = len(liquid["types"])
    with KobAndersenLammps(liquid["positions"], liquid["types"], liquid["box"], temperature=T_LIQUID, seed=0) as engine:
        first = engine.draw_velocities(0.6, seed=11)
        np.testing.assert_array_equal(engine.velocities(), first)
        np.testing.assert_allclose(first.sum(axis=0), 0, atol=1e-12)
        assert engine.kinetic_temperature() == pytest.approx(0.6, rel=1e-13)
        assert (first**2).sum() / (3 * n - 3) == pytest.approx(0.6, rel=1e-13)
        np.testing.assert_array_equal(engine.draw_velocities(0.6, seed=11), first)
        other = engine.draw_velocities(0.6, seed=12)
        assert np.abs(other - first).max() > 0.1
        # Components look Gaussian with variance T (mean 0 removed, norm fixed).
        assert np.std(other) == pytest.approx(np.sqrt(0.6), rel=0.01)
        with pytest.raises(ValueError):
            engine.draw_velocities(0.0, seed=1)


def test_unwrapped_positions_follow_a_drift(liquid: dict[str, np.ndarray]) -> None:
    """At an inherent state with zero thermal velocity, a common velocity carries every particle
    across the box several times in NVE; the unwrapped displacement must be v t exactly."""
    types, box = liquid["types"], liquid["box"]
    with KobAndersenLammps(liquid["positions"], types, box, temperature=T_LIQUID, thermostat="nve", seed=0) as engine:
        start = engine.minimize("cg", force_tolerance=1e-8)["positions"]
        engine.set_positions(start)
        drift = np.array([4.0, -2.5, 1.5])  # 0.02 per step: below the skin / 2
        engine.set_velocities(np.tile(drift, (len(types), 1)))
        engine.run(2000)
        elapsed = 2000 * engine.timestep
        unwrapped = engine.positions(unwrapped=True)
        np.testing.assert_allclose(unwrapped - start, np.tile(drift * elapsed, (len(types), 1)), atol=1e-6)
        assert np.abs(drift * elapsed / box).max() > 5  # crossed the box more than 5 times along x
        wrapped = engine.positions()
        assert ((wrapped >= 0) & (wrapped < box)).all()
        np.testing.assert_allclose(wrapped + engine.image_flags() * box, unwrapped, atol=1e-9)
        np.testing.assert_array_equal(engine.image_flags(), np.floor(unwrapped / box).astype(int))


@pytest.mark.parametrize("thermostat", ["nose-hoover", "langevin"])
def test_same_seed_gives_bit_identical_trajectories(liquid: dict[str, np.ndarray], thermostat: str) -> None:
    def trajectory(seed: int, resets: int = 0) -> np.ndarray:
        with KobAndersenLammps(
            liquid["positions"], liquid["types"], liquid["box"], temperature=T_LIQUID, thermostat=thermostat, seed=seed
        ) as engine:
            for _ in range(resets):
                engine.reset_thermostat()
            engine.draw_velocities(T_LIQUID, seed=5)
            engine.run(150)
            engine.run(150)
            return np.concatenate([engine.positions(unwrapped=True), engine.velocities()])

    reference = trajectory(seed=1)
    np.testing.assert_array_equal(trajectory(seed=1), reference)
    if thermostat == "langevin":  # the noise depends on the seed and on the number of resets
        assert np.abs(trajectory(seed=2) - reference).max() > 1e-3
        assert np.abs(trajectory(seed=1, resets=1) - reference).max() > 1e-3
        np.testing.assert_array_equal(trajectory(seed=1, resets=1), trajectory(seed=1, resets=1))


@pytest.mark.parametrize("thermostat", ["nose-hoover", "langevin"])
def test_trajectory_does_not_depend_on_the_engine_history(liquid: dict[str, np.ndarray], thermostat: str) -> None:
    """set_positions + draw_velocities + reset_thermostat(seed) start the same trajectory whatever ran before
    (dynamics, a FIRE minimisation that adapts its own time step), as an instance reused for many
    iso-configurational trajectories needs."""
    positions, types, box = liquid["positions"], liquid["types"], liquid["box"]

    def trajectory(engine: KobAndersenLammps) -> np.ndarray:
        engine.set_positions(positions)
        engine.draw_velocities(T_LIQUID, seed=9)
        engine.reset_thermostat(seed=9)
        engine.run(100)
        engine.run(200)
        return np.concatenate([engine.positions(unwrapped=True), engine.velocities()])

    options = {"temperature": T_LIQUID, "thermostat": thermostat, "seed": 4}
    with KobAndersenLammps(positions, types, box, **options) as fresh:
        expected = trajectory(fresh)
    with KobAndersenLammps(positions + 0.01, types, box, **options) as used:
        used.draw_velocities(1.2, seed=1)
        used.run(250)
        first = trajectory(used)
        used.minimize("fire", force_tolerance=1e-4)
        second = trajectory(used)
    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(second, expected)


def test_reference_thermodynamics() -> None:
    """KA at rho = 1.2, T = 1.028: u = -5.974, P = 10.17 (Pedersen, Schroder & Dyre, PRL 2018).

    N = 500, 10 LJ time units (~8 tau_alpha) of equilibration, 50 of sampling.
    Measured here: u = -5.970 +- 0.010, P = 10.19 +- 0.07 (block standard errors).
    """
    n, temperature = 500, 1.028
    box = cubic_box(n)
    positions, types = ka.initial_positions(n, box, np.random.default_rng(8), start="random")
    with KobAndersenLammps(positions, types, box, temperature=temperature, seed=8) as engine:
        engine.relax_overlaps()
        engine.draw_velocities(temperature, seed=8)
        engine.reset_thermostat()
        engine.run(2000)
        energy, pressure = [], []
        for _ in range(100):
            engine.run(100)
            energy.append(engine.potential_energy() / n)
            pressure.append(engine.pressure())
    assert np.mean(energy) == pytest.approx(-5.974, abs=0.04)
    assert np.mean(pressure) == pytest.approx(10.17, abs=0.35)


def test_a_worker_stopped_while_mpi_starts_finalises_it_once_the_instance_is_registered(monkeypatch):
    """A pool worker's stop (its SIGTERM handler, which Python runs between two bytecodes of the
    main thread, here inside the LAMMPS constructor where MPI creates its shared-memory segment)
    waits until `finalize_mpi` knows of the instance; then the worker's on_exit runs and it exits.
    Run at once, on_exit would find nothing to finalise and the segment would stay in /dev/shm."""
    import signal
    import weakref

    from equiglass import process_pool

    class Exited(Exception):
        pass

    class Instance:
        lib = object()

        def __init__(self, cmdargs: list[str]):
            process_pool._exit_on_signal(signal.SIGTERM, None)  # the worker's handler, mid-constructor
            calls.append("constructed")

    calls = []
    monkeypatch.setattr(lammps_engine, "import_lammps", lambda: Instance)
    monkeypatch.setattr(lammps_engine, "_LIBRARY", [])
    monkeypatch.setattr(lammps_engine, "_OPEN_INSTANCES", weakref.WeakSet())
    monkeypatch.setattr(process_pool, "_ON_EXIT", lambda: calls.append(f"on_exit, registered: {bool(lammps_engine._LIBRARY)}"))
    monkeypatch.setattr(process_pool, "_STOP_PENDING", False)
    monkeypatch.setattr(process_pool.os, "_exit", lambda status: (_ for _ in ()).throw(Exited(status)))
    with pytest.raises(Exited, match=str(128 + signal.SIGTERM)):
        lammps_engine.open_lammps()
    assert calls == ["constructed", "on_exit, registered: True"]
    assert process_pool._STOP_HELD == 0
