"""End-to-end tests of the iso-configurational generator on a tiny protocol (N = 500, T = 1)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from equiglass.cli import main
from equiglass.data.format import arrays_sha256, configuration_filename, load_dataset
from equiglass.errors import DataError
from equiglass.simulate import generate as generate_module
from equiglass.simulate.generate import complete_dataset, generate
from equiglass.simulate.lammps import lammps_version
from equiglass.simulate.protocol import PROPENSITY_DEFINITION, GenerationProtocol

# tau_alpha ~ 1.25 at T = 1: 500 steps of equilibration, 250 between configurations, 500 per trajectory.
TINY = GenerationProtocol(
    n_particles=500,
    temperature=1.0,
    tau_alpha_estimate=1.25,
    equilibration_tau=2.0,
    sampling_interval_tau=1.0,
    n_configurations=4,
    configurations_per_chain=2,
    replicas=2,
    n_times=5,
    time_max_tau=2.0,
    minimizer="cg",
)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny dataset generated in one unsharded, in-process run."""
    directory = tmp_path_factory.mktemp("reference")
    report = generate(directory, TINY, workers=0, command="equiglass generate reference")
    assert report.written == [0, 1, 2, 3] and report.skipped == [] and report.complete
    return directory


def copy_of(reference: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(reference, tmp_path / "dataset"))


def assert_same_configurations(a: Path, b: Path, indices: range = range(TINY.n_configurations)) -> None:
    for i in indices:
        with np.load(a / configuration_filename(i)) as left, np.load(b / configuration_filename(i)) as right:
            assert sorted(left.files) == sorted(right.files)
            for name in left.files:
                np.testing.assert_array_equal(left[name], right[name], err_msg=f"configuration {i}, field {name}")


def test_manifest_and_configurations(reference: Path) -> None:
    dataset = load_dataset(reference)
    manifest = dataset.manifest
    assert len(dataset) == TINY.n_configurations and manifest["absent_fields"] == []
    assert manifest["protocol"] == TINY.to_json()
    assert manifest["engine"] == {"name": "LAMMPS", "version": lammps_version()}
    assert manifest["n_particles"] == 500 and manifest["temperature"] == 1.0 and manifest["density"] == 1.2
    assert manifest["q"] == 7.25 and manifest["propensity_definition"] == PROPENSITY_DEFINITION
    assert manifest["command"] == "equiglass generate reference"
    assert "propensity_halves" in manifest
    # times are log-spaced, rounded to whole steps of 0.005, up to 2 tau_alpha_estimate
    np.testing.assert_allclose(manifest["times"], [0.05, 0.135, 0.355, 0.94, 2.5], rtol=1e-12)
    assert [entry["chain"] for entry in manifest["configurations"]] == [0, 0, 1, 1]
    assert len({seed for entry in manifest["configurations"] for seed in entry["velocity_seeds"]}) == 8
    # tau_alpha is known at T = 1 to be about 1.25 (N = 1000); the tiny runs measure it roughly
    assert 0.8 < manifest["tau_alpha"] < 2.5
    assert len(manifest["tau_alpha_per_configuration"]) == 4

    for fields in dataset:
        types = fields["types"]
        assert np.count_nonzero(types == 0) == 400
        assert fields["is_potential_energy"].mean() < fields["potential_energy"].mean() - 1.0
        assert -6.5 < fields["potential_energy"].mean() < -5.5  # u ~ -6.0 at T = 1
        assert np.all(np.diff(fields["propensity"].mean(axis=1)) > 0)  # particles move away on average
        assert np.all(fields["propensity"] ** 2 <= fields["msd"] * (1 + 1e-12))  # mean(|d|)^2 <= mean(|d|^2)
        halves = fields["propensity_halves"]  # one replica each: their mean is the propensity
        assert halves.shape == (2, 5, 500) and not np.array_equal(halves[0], halves[1])
        np.testing.assert_allclose(halves.mean(axis=0), fields["propensity"], rtol=1e-12)
        fs = fields["self_intermediate_scattering"]
        assert 0.9 < fs[0] <= 1.0 and fs[-1] < 0.5 and np.all(np.diff(fs) < 0)


def test_one_replica_has_no_halves(tmp_path: Path) -> None:
    protocol = dataclasses.replace(TINY, replicas=1, n_configurations=1, configurations_per_chain=1)
    assert generate(tmp_path, protocol, workers=0).complete
    dataset = load_dataset(tmp_path)
    assert dataset.manifest["absent_fields"] == ["propensity_halves"]
    assert "propensity_halves" not in dataset.read(0)


def test_workers_give_bit_identical_results(reference: Path, tmp_path: Path) -> None:
    report = generate(tmp_path, TINY, workers=2)
    assert report.complete
    assert_same_configurations(reference, tmp_path)
    assert load_dataset(tmp_path).manifest["tau_alpha"] == load_dataset(reference).manifest["tau_alpha"]


def test_langevin_workers_give_bit_identical_results(tmp_path: Path) -> None:
    protocol = dataclasses.replace(TINY, thermostat="langevin", n_configurations=2, configurations_per_chain=1)
    generate(tmp_path / "inline", protocol, workers=0)
    generate(tmp_path / "pool", protocol, workers=2)
    assert_same_configurations(tmp_path / "inline", tmp_path / "pool", range(2))


def command_line(protocol: GenerationProtocol) -> list[str]:
    """The ``equiglass generate`` options that give `protocol`."""
    options = dataclasses.asdict(protocol).items()
    return [text for name, value in options for text in ("--" + name.replace("_", "-"), str(value))]


def test_resume_from_the_command_line_skips_present_configurations(
    reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    directory = copy_of(reference, tmp_path)
    (directory / configuration_filename(1)).unlink()
    assert main(["generate", str(directory), *command_line(TINY), "--workers", "0"]) == 0
    assert "1 configurations written, 3 already present; dataset complete" in capsys.readouterr().out
    assert_same_configurations(reference, directory)
    report = generate(directory, TINY, workers=0)
    assert report.skipped == [0, 1, 2, 3] and report.written == [] and report.complete


def test_a_committed_manifest_alone_regenerates_the_same_arrays(
    reference: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A dataset too large to commit is committed as its manifest: complete_dataset regenerates
    every configuration from the recorded protocol and seeds, and the recorded array checksums
    say whether this machine reproduced them (a changed number is named in a warning)."""
    recorded = json.loads((reference / "manifest.json").read_text())
    checksums = [entry["arrays_sha256"] for entry in recorded["configurations"]]
    assert len(set(checksums)) == TINY.n_configurations and all(len(c) == 64 for c in checksums)
    with np.load(reference / configuration_filename(0)) as arrays:
        assert arrays_sha256(dict(arrays)) == checksums[0]
        changed = {**arrays, "positions": arrays["positions"] + 1e-12}
        assert arrays_sha256(changed) != checksums[0]

    directory = tmp_path / "committed"
    directory.mkdir()
    shutil.copy(reference / "manifest.json", directory)
    with caplog.at_level(logging.WARNING):
        report = complete_dataset(directory)
    assert report.written == [0, 1, 2, 3] and report.complete
    assert not any("differ" in message for message in caplog.messages)
    assert_same_configurations(reference, directory)
    assert json.loads((directory / "manifest.json").read_text()) == recorded

    tampered = {**recorded, "configurations": [{**entry, "arrays_sha256": "0" * 64} if i == 3 else entry
                                               for i, entry in enumerate(recorded["configurations"])]}
    (directory / "manifest.json").write_text(json.dumps(tampered))
    (directory / configuration_filename(3)).unlink()
    with caplog.at_level(logging.WARNING):
        complete_dataset(directory)
    assert any("1 configurations differ" in message and configuration_filename(3) in message
               for message in caplog.messages)
    assert json.loads((directory / "manifest.json").read_text())["configurations"][3]["arrays_sha256"] == "0" * 64


def test_shards_together_equal_one_run(reference: Path, tmp_path: Path) -> None:
    first = generate(tmp_path, TINY, workers=0, shard=(1, 2))
    assert first.written == [2, 3] and not first.complete
    assert json.loads((tmp_path / "manifest.json").read_text())["tau_alpha"] is None
    assert len(load_dataset(tmp_path, require_complete=False)) == 2
    second = generate(tmp_path, TINY, workers=0, shard=(0, 2))
    assert second.written == [0, 1] and second.complete
    assert_same_configurations(reference, tmp_path)
    assert second.tau_alpha == load_dataset(reference).manifest["tau_alpha"]


def test_corrupt_configuration_is_reported_and_regenerated(
    reference: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = copy_of(reference, tmp_path)
    path = directory / configuration_filename(2)
    path.write_bytes(path.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING):
        report = generate(directory, TINY, workers=0)
    assert report.corrupt == [2] and report.written == [2]
    assert any(configuration_filename(2) in message and "regenerated" in message for message in caplog.messages)
    assert_same_configurations(reference, directory)


def test_different_protocol_is_refused(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    directory = copy_of(reference, tmp_path)
    with pytest.raises(DataError, match="temperature: 1.0 in the manifest, 0.9 now"):
        generate(directory, dataclasses.replace(TINY, temperature=0.9), workers=0)
    code = main(["generate", str(directory), "--n-particles", "500", "--workers", "0"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "different protocol" in err and "Traceback" not in err


def test_protocol_validation() -> None:
    with pytest.raises(ValueError, match="sampling_interval_tau"):
        dataclasses.replace(TINY, sampling_interval_tau=0.5)
    with pytest.raises(ValueError, match="repeated numbers of time steps"):
        dataclasses.replace(TINY, n_times=50, time_min=0.005)
    with pytest.raises(ValueError, match="500 particles"):
        dataclasses.replace(TINY, n_particles=100)
    assert TINY.n_chains == 2 and list(TINY.chain_configurations(1)) == [2, 3]
    assert dataclasses.replace(TINY, n_configurations=5).n_chains == 3


def test_command_line_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "equiglass", "generate", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "--tau-alpha-estimate" in result.stdout and "--shard" in result.stdout


# ---------------------------------------------------------------- concurrent runs


def test_racing_claims_with_different_protocols_let_one_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second run claiming the directory between the first's check and write is refused, not mixed in."""
    other = dataclasses.replace(TINY, temperature=0.9)
    write_manifest = generate_module.write_manifest
    second: dict[str, BaseException | None] = {}

    def claim_other() -> None:
        try:
            with generate_module._directory_lock(tmp_path):
                generate_module._open_manifest(tmp_path, other, "second")
            second["error"] = None
        except BaseException as error:  # noqa: BLE001 - recorded for the assertion
            second["error"] = error

    def write_after_a_rival_claim(directory: Path, manifest: dict) -> Path:
        if threading.current_thread() is threading.main_thread() and "error" not in second:
            rival = threading.Thread(target=claim_other)
            rival.start()
            rival.join(timeout=2)  # without the lock the rival claims the empty directory in the meantime
        return write_manifest(directory, manifest)

    monkeypatch.setattr(generate_module, "write_manifest", write_after_a_rival_claim)
    monkeypatch.setattr(generate_module, "_generate_missing", lambda *args: None)
    generate(tmp_path, TINY, workers=0)
    deadline = time.monotonic() + 10
    while "error" not in second and time.monotonic() < deadline:
        time.sleep(0.05)
    assert isinstance(second.get("error"), DataError) and "different protocol" in str(second["error"])
    assert json.loads((tmp_path / "manifest.json").read_text())["protocol"] == TINY.to_json()


def test_concurrent_runs_with_different_protocols(tmp_path: Path) -> None:
    """Two processes started together on different shards with different temperatures: one runs, one is refused."""
    runs = {
        temperature: subprocess.Popen(
            [sys.executable, "-m", "equiglass", "generate", str(tmp_path),
             *command_line(dataclasses.replace(TINY, temperature=temperature)), "--shard", shard, "--workers", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for temperature, shard in ((1.0, "0/2"), (0.9, "1/2"))
    }
    results = {temperature: (run.wait(timeout=300), run.stderr.read()) for temperature, run in runs.items()}
    for run in runs.values():
        run.stdout.close()
        run.stderr.close()
    winners = [temperature for temperature, (code, _) in results.items() if code == 0]
    assert len(winners) == 1, results
    (loser,) = set(results) - set(winners)
    code, err = results[loser]
    assert code == 2 and err.startswith("error: ") and "different protocol" in err
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["temperature"] == winners[0]
    written = sorted(path.name for path in tmp_path.glob("configuration_*.npz"))
    winner_shard = [configuration_filename(i) for i in ((0, 1) if winners[0] == 1.0 else (2, 3))]
    assert written == winner_shard


def test_a_shard_being_generated_is_refused(tmp_path: Path) -> None:
    """A second run of a shard that another run holds is refused before any work; other shards may run."""
    generate(tmp_path, dataclasses.replace(TINY, n_configurations=2), workers=0, shard=(1, 2))  # claims the manifest
    with generate_module._shard_lock(tmp_path, (0, 2)):
        with pytest.raises(DataError, match="shard 0/2"):
            generate(tmp_path, dataclasses.replace(TINY, n_configurations=2), workers=0, shard=(0, 2))
    assert not list(tmp_path.glob("configuration_*.npz"))


# ---------------------------------------------------------------- signals, orphans and MPI shared memory


def live_processes(group: int) -> dict[int, str]:
    """{pid: command line} of the processes of process group `group` that are not zombies."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == group and fields[0] != "Z":
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue  # the process ended while being read
    return found


def shared_memory_of(pids: set[int]) -> list[Path]:
    """The mpich shared-memory files (``/dev/shm/mpich_shm_<hex pid>_*``) of `pids` that exist."""
    return [path for pid in pids for path in Path("/dev/shm").glob(f"mpich_shm_{pid:x}_*")]


@contextlib.contextmanager
def generate_in_background(directory: Path, protocol: GenerationProtocol, workers: int) -> Iterator[tuple]:
    """Run ``equiglass generate`` in its own process group; yields (process, pids seen in its group so far).

    Its standard error goes to ``directory.stderr`` (a pipe would stay open as long as any orphan lives).
    """
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory.with_suffix(".stderr"), "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "equiglass", "generate", str(directory), *command_line(protocol),
             "--workers", str(workers)],
            stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
        )  # fmt: skip
    seen: set[int] = {process.pid}
    watching = threading.Event()
    watching.set()

    def watch() -> None:
        while watching.is_set():
            seen.update(live_processes(process.pid))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield process, seen
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        watching.clear()
        watcher.join()


def wait_for_a_working_worker(group: int, timeout: float = 120) -> int:
    """The pid of a pool worker of `group` once it has opened LAMMPS (its MPI shared memory exists)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = {pid for pid, command in live_processes(group).items() if "spawn_main" in command}
        if ready := [pid for pid in workers if shared_memory_of({pid})]:
            return ready[0]
        time.sleep(0.05)
    raise AssertionError("no worker started")


def assert_group_ends(group: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while live_processes(group) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert live_processes(group) == {}


def test_sigterm_interrupts_cleanly_and_a_rerun_completes(reference: Path, tmp_path: Path) -> None:
    directory = tmp_path / "dataset"
    with generate_in_background(directory, TINY, workers=2) as (process, seen):
        wait_for_a_working_worker(process.pid)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        err = directory.with_suffix(".stderr").read_text()
        assert code == 130 and "interrupted: rerun the same command to resume" in err, err
        assert_group_ends(process.pid)
        assert shared_memory_of(seen) == []
    report = generate(directory, TINY, workers=0)
    assert report.complete
    assert_same_configurations(reference, directory)


def test_workers_end_when_the_main_process_is_killed(tmp_path: Path) -> None:
    with generate_in_background(tmp_path / "dataset", TINY, workers=2) as (process, seen):
        wait_for_a_working_worker(process.pid)
        process.kill()
        process.wait()
        assert_group_ends(process.pid)
        leaked = shared_memory_of(seen - {process.pid})
        for path in shared_memory_of({process.pid}):  # SIGKILL cannot be handled: the main process's is lost
            path.unlink()
        assert leaked == []


@pytest.mark.parametrize("workers", [0, 2])
def test_no_mpi_shared_memory_is_left_behind(tmp_path: Path, workers: int) -> None:
    protocol = dataclasses.replace(TINY, n_configurations=1, configurations_per_chain=1)
    directory = tmp_path / "dataset"
    with generate_in_background(directory, protocol, workers=workers) as (process, seen):
        code = process.wait(timeout=300)
        assert code == 0, directory.with_suffix(".stderr").read_text()
        time.sleep(0.2)
    assert len(seen) >= (1 if workers == 0 else 3)  # the main process, its workers and resource tracker
    assert shared_memory_of(seen) == []
