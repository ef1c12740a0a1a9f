"""Experiments (equiglass.experiments): every spec of experiments/ at its paper scale on miniature
Bapst-format files (one epoch), and the spec parsing, merging and analysis helpers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from e3nn import o3
from factories import write_bapst_file

from equiglass.analysis.features import explained_variance
from equiglass.cli import main
from equiglass.errors import ConfigError
from equiglass.experiments.kinds import KINDS
from equiglass.experiments.runner import run_experiment
from equiglass.experiments.spec import deep_merge, load_spec
from equiglass.nn.invariants import invariants
from equiglass.training.checkpoint import read_checkpoint
from equiglass.training.config import config_from_dict
from equiglass.training.transfer import is_decoder

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"  # tests/experiments/ -> the repository
SPECS = sorted(path.stem for path in EXPERIMENTS.glob("*.toml"))
#: Miniature Bapst files: 343 particles (the smallest cube whose box fits the descriptors' 3.0
#: neighbour cutoff), 3 stored times, 4 trajectories; 24 files (the transfer budget's 4/4/16).
N_PARTICLES, N_FILES = 343, 24

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bapst_directories(tmp_path_factory) -> list[Path]:
    """Two temperatures of miniature Bapst files, one directory each."""
    root = tmp_path_factory.mktemp("bapst")
    directories = []
    for temperature, seed in ((0.44, 1), (0.64, 2)):
        directory = root / f"T{temperature}"
        rng = np.random.default_rng(seed)
        for index in range(N_FILES):
            write_bapst_file(directory / f"aggregated_{index:03d}.pickle", rng, N_PARTICLES, temperature=temperature)
        directories.append(directory)
    return directories


def test_every_paper_result_has_a_spec():
    assert set(SPECS) == {"pearson_vs_time", "inputs", "depth_and_lmax", "temperatures", "transfer", "features",
                          "glassbench", "glassbench_recipe", "recipe", "scaling", "capacity"}
    for name in SPECS:
        spec = load_spec(EXPERIMENTS / f"{name}.toml")
        assert {"cpu", "paper"} <= spec.scales.keys()
        assert spec.datasets("paper") == []  # the Bapst files are given on the command line
        for entry in spec.scales["cpu"]["datasets"]:  # a committed dataset
            assert entry.startswith("../data/") and (EXPERIMENTS / entry / "manifest.json").is_file()


@pytest.mark.parametrize("name", SPECS)
def test_paper_scale_command_runs_on_miniature_bapst_files(name, bapst_directories, tmp_path):
    spec = load_spec(EXPERIMENTS / f"{name}.toml")
    for run, _ in spec.runs:  # every run's config is valid at this scale, trained or not
        config_from_dict(spec.run_tables(run, "paper", bapst_directories[0]), spec.path)
    data = bapst_directories[:KINDS[spec.kind].min_datasets]
    out = tmp_path / "out"
    test_data = bapst_directories[1] if name in ("glassbench", "glassbench_recipe", "scaling") else None  # GlassBench's separate test files
    # the recipe's many runs differ by one option each: three of them exercise the code
    runs = ["20ep-seed0", "60ep-loss-AB-type-heads", "60ep-loss-AB-readout-norms"] if name == "recipe" else None
    results = run_experiment(spec, "paper", data, out, epochs=1, progress=False, test_data=test_data, runs=runs)
    assert (out / "results.md").read_text().startswith(f"# {spec.title}")
    assert (out / "datasets" / "T0.44" / "manifest.json").is_file()  # converted once from the Bapst files
    assert all(run["epochs"] == 1 for run in results["runs"].values())

    if spec.kind == "compare":
        names = runs or [run for run, _ in spec.runs]
        trained = [row["model"] for row in results["pearson"]["rows"] if row["type"] == "A"]
        assert trained == [run for run in names if run not in results["skipped"]]
        for row in results["pearson"]["rows"]:
            assert len(row["mean"]) == 3 and row["configurations"] >= 2
        curves = results["learning_curves"]  # one epoch each; ridge has none
        assert set(curves) == {run for run in trained if results["runs"][run]["model"]["kind"] != "ridge"}
        for run, curve in curves.items():
            train_size = len(json.loads((out / "runs" / run / "run.json").read_text())["split"]["train"])
            assert curve["step"] == [train_size] and 0 < curve["train_loss"][0] and -1 <= curve["val_pearson"][0] <= 1
        assert (out / "learning_curves.png").is_file() == bool(curves)
        if name == "glassbench":  # trained on T0.44, tested on every configuration of the other dataset
            assert results["tested_on"] == str(out / "datasets" / "T0.64")
            assert all(row["configurations"] == N_FILES for row in results["pearson"]["rows"])
            assert all(json.loads((Path(run["run_dir"]) / "run.json").read_text())["test_dataset"] == results["tested_on"]
                       for run in results["runs"].values())
        if name == "inputs":  # Bapst's files hold no inherent states: those runs are skipped, named
            assert set(results["skipped"]) == {"inherent", "inherent_energy", "thermal_displacement"}
            assert all("is_positions" in reason for reason in results["skipped"].values())
        if name == "pearson_vs_time":
            parameters = {run["model"]["kind"] + str(run["model"].get("l_max", "")): run["parameters"]
                          for run in results["runs"].values()}
            fewer = 7 * 65  # 3 stored times, not the defaults' 10: 7 fewer outputs of a 64-wide decoder layer
            assert parameters["equivariant2"] == 61_866 - fewer and parameters["bapst"] == 63_050 - fewer
            assert abs(parameters["equivariant0"] / parameters["equivariant2"] - 1) < 0.03  # matched
    elif spec.kind == "temperatures":
        assert results["labels"] == ["T0.44", "T0.64"]
        for matrix in results["matrices"].values():
            assert np.isfinite([[cell["mean"] for cell in row] for row in matrix]).all()
            assert all(0.0 < cell["ceiling"] <= 1.0 for row in matrix for cell in row)  # Bapst files: R and msd known
        assert "(ceiling 0." in (out / "results.md").read_text()
        assert (out / "temperatures.png").is_file()
    elif spec.kind == "scaling":  # 24 miniature files: the sizes from 8 on leave fewer than the 40 validation ones
        assert results["runs"] == {} and results["tables"] == {} and results["plot"] is None
        skipped = dict(results["skipped"])
        assert "is_positions" in skipped.pop("displacement")  # Bapst's files hold no inherent states
        assert len(skipped) == (len(spec.runs) - 1) * len(spec.options["train_configurations"])
        assert all("holds 24 configurations, 40 of them for validation" in reason for reason in skipped.values())
    elif spec.kind == "transfer":
        table = results["tables"]["equivariant T0.44 -> T0.64"]
        assert [row["model"] for row in table["pearson"]["rows"] if row["type"] == "A"] == [
            "T0.64-frozen-backbone", "T0.64-scratch"]
        source = read_checkpoint(out / "runs" / "equivariant" / "source-T0.44" / "best.pt")["model_state"]
        frozen = read_checkpoint(out / "runs" / "equivariant" / "T0.64-frozen-backbone" / "last.pt")["model_state"]
        assert all(torch.equal(source[k], frozen[k]) for k in source if not is_decoder(k))
    else:
        analysis = results["analyses"]["equivariant"]
        assert len(analysis["r2_trained"]) == len(analysis["descriptors"]) == 222
        density = results["families"]["equivariant"]["rho_A|L=0"]
        assert density["trained"] > 0.2  # the first layer's invariants are radial densities


def test_a_compare_run_without_test_configurations_asks_for_test_data(bapst_directories, tmp_path):
    """GlassBench's paper scale keeps no test configurations of the training files: without
    --test-data it stops before training anything, naming the option."""
    with pytest.raises(ConfigError, match="--test-data"):
        run_experiment(EXPERIMENTS / "glassbench.toml", "paper", bapst_directories[:1], tmp_path, epochs=1, progress=False)
    assert not (tmp_path / "runs").exists()


def test_cli_runs_a_spec_and_resumes(bapst_directories, tmp_path, capsys):
    arguments = ["experiment", str(EXPERIMENTS / "features.toml"), "--scale", "paper", "--data",
                 str(bapst_directories[0]), "--out", str(tmp_path), "--epochs", "1", "--no-progress"]
    assert main(arguments) == 0
    def results() -> dict:
        content = json.loads((tmp_path / "results.json").read_text())
        content.pop("wall_s_this_call")
        for run in content["runs"].values():
            run.pop("this_call_wall_s")
        return content

    first = results()
    assert main(arguments) == 0  # the finished run is kept (not retrained), the analysis repeated
    assert "R² trained" in capsys.readouterr().out
    assert results() == first


def test_spec_errors_name_the_file(tmp_path, bapst_directories):
    bad = tmp_path / "bad.toml"
    for text, message in (
        ("[experiment]\nkind = 'compare'\n", "title"),
        ("[experiment]\ntitle = 'x'\nkind = 'sweep'\n", "kind"),
        ("[experiment]\ntitle = 'x'\n", r"\[\[run\]\]"),
        ("[experiment]\ntitle = 'x'\n[[run]]\nname = 'a'\n[[run]]\nname = 'a'\n", "distinct"),
        ("[experiment]\ntitle = 'x'\n[[run]]\nname = 'a'\noptimizer = 1\n", "unknown key"),
        ("[experiment]\ntitle = 'x'\n[other]\n", "unknown table"),
    ):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message) as error:
            load_spec(bad)
        assert str(bad) in str(error.value)
    with pytest.raises(ConfigError, match="no datasets"):
        run_experiment(EXPERIMENTS / "features.toml", "paper", None, tmp_path / "a")
    with pytest.raises(ConfigError, match="at least 2 datasets"):
        run_experiment(EXPERIMENTS / "temperatures.toml", "paper", bapst_directories[:1], tmp_path / "b")
    with pytest.raises(ConfigError, match=r"no run\(s\) \['sweep'\]"):
        run_experiment(EXPERIMENTS / "features.toml", "paper", bapst_directories[:1], tmp_path / "d", runs=["sweep"])
    with pytest.raises(ConfigError, match="no \\[scale.gpu\\]"):
        run_experiment(EXPERIMENTS / "features.toml", "gpu", bapst_directories[:1], tmp_path / "c")


def test_run_configs_merge_base_scale_run_and_run_scale():
    spec = load_spec(EXPERIMENTS / "pearson_vs_time.toml")
    tables = spec.run_tables("bapst", "paper", Path("/data/T0.44"))
    assert tables["model"] == {"kind": "bapst", "n_steps": 7, "normalization": "none"}
    assert tables["train"]["lr"] == 1e-4 and tables["train"]["grad_clip"] == 1.0 and tables["train"]["device"] == "auto"
    assert tables["data"]["dataset"] == "/data/T0.44" and tables["data"]["split"] == [0.8, 0.1, 0.1]
    assert spec.run_tables("bapst", "cpu", Path("/d"))["model"]["n_steps"] == 3
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}, "d": 4}) == {"a": {"b": 1, "c": 3}, "d": 4}


def test_invariants_are_rotation_invariant_and_explained_variance_is_exact_for_linear_targets():
    irreps = o3.Irreps("3x0e + 2x1o + 2x2e")
    features = irreps.randn(50, -1, dtype=torch.float64)
    rotation = o3.rand_matrix(dtype=torch.float64)
    rotated = features @ irreps.D_from_matrix(rotation).T
    torch.testing.assert_close(invariants(rotated, irreps), invariants(features, irreps))
    assert invariants(features, irreps).shape == (50, 7)

    generator = torch.Generator().manual_seed(0)
    x = [torch.randn(40, 4, generator=generator, dtype=torch.float64) for _ in range(4)]
    linear = [torch.stack([v @ torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64) + 3.0,
                           torch.randn(40, generator=generator, dtype=torch.float64),
                           torch.ones(40, dtype=torch.float64)], dim=1) for v in x]
    masks = [torch.ones(40, dtype=torch.bool)] * 4
    r2 = explained_variance(x, linear, masks)
    assert r2[0] == pytest.approx(1.0, abs=1e-12)  # an exact linear function of the features
    assert r2[1] < 0.3  # noise: nothing to explain out of sample
    assert math.isnan(r2[2])  # constant
