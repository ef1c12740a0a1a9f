"""Tests of equiglass.analysis.evaluate (Pearson tables, files, plot) and equiglass.analysis.predict (per-configuration outputs).

Two tiny models (equivariant and Bapst, one epoch each) are trained once on the synthetic
``dataset`` fixture of conftest.py (eight configurations of 300 particles, three times) with a
4 / 2 / 2 train / validation / test split.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import N_PARTICLES, TIMES, replica_targets, replica_values, write_config, write_dataset
from matplotlib import pyplot as plt
from matplotlib.collections import PolyCollection
from scipy import stats

from equiglass.analysis.evaluate import TYPE_NAMES, evaluate
from equiglass.analysis.noise_ceiling import SPLIT_HALVES, UNKNOWN, dataset_ceiling
from equiglass.analysis.predict import predict
from equiglass.cli import main
from equiglass.data.format import load_dataset, write_configuration
from equiglass.errors import DataError
from equiglass.metrics import pearson_per_timescale
from equiglass.training.checkpoint import load_checkpoint
from equiglass.training.loop import train

SPLIT = [4, 2, 2]
MODELS = ("equivariant", "bapst")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, dataset) -> dict[str, Path]:
    """Model name -> run directory, one epoch each."""
    directory = tmp_path_factory.mktemp("runs")
    out = {}
    for model in MODELS:
        config = write_config(directory / "configs", dataset, model, data={"split": SPLIT})
        out[model] = train(config, directory / model, progress=False).run_dir
    return out


def direct_pearson(run: Path, dataset: Path, indices: list[int], particle_type: int) -> tuple[torch.Tensor, np.ndarray]:
    """Per-configuration ``[C, T]`` and pooled ``[T]`` (scipy) Pearson of the run's best.pt,
    computed without equiglass.analysis.evaluate."""
    trained = load_checkpoint(run)
    rows, predictions, targets = [], [], []
    for data in trained.graphs(dataset, indices=indices):
        prediction, chosen = trained.predict(data), data.types == particle_type
        rows.append(pearson_per_timescale(prediction, data.y, chosen))
        predictions.append(prediction[chosen].double().numpy())
        targets.append(data.y[chosen].double().numpy())
    predictions, targets = np.concatenate(predictions), np.concatenate(targets)
    pooled = [stats.pearsonr(predictions[:, t], targets[:, t]).statistic for t in range(len(TIMES))]
    return torch.stack(rows), np.array(pooled)


def bands(axes) -> list[PolyCollection]:
    """The filled areas of ``axes`` (error bars are LineCollections)."""
    return [artist for artist in axes.collections if isinstance(artist, PolyCollection)]


# ------------------------------------------------------------------ evaluate


def test_table_values_files_and_plot(tmp_path, runs, dataset):
    out = tmp_path / "evaluation"
    table = evaluate([runs["equivariant"], runs["bapst"]], dataset, out=out)

    assert [(row.model, row.particle_type) for row in table.rows] == [
        ("equivariant", "A"), ("equivariant", "B"), ("bapst", "A"), ("bapst", "B")
    ]
    np.testing.assert_allclose(table.times, TIMES)
    for model, run in runs.items():
        test = json.loads((run / "run.json").read_text())["split"]["test"]
        for code, name in enumerate(TYPE_NAMES):
            expected, pooled = direct_pearson(run, dataset, test, code)
            row = table.row(model, name)
            assert row.n_configurations == len(test) == SPLIT[2]
            np.testing.assert_allclose(row.mean, expected.mean(dim=0).numpy(), rtol=1e-12)
            np.testing.assert_allclose(row.std, expected.std(dim=0, correction=0).numpy(), rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(row.pooled, pooled, rtol=1e-6)
            assert np.all(np.isfinite(row.mean)) and np.all(row.std > 0)

    lines = (out / "pearson.md").read_text().splitlines()
    assert "per-configuration" in lines[0] and "mean ± std over configurations" in lines[0]
    assert "split: test" in lines[0] and "Pooled values" in lines[0]
    assert lines[2] == "| model | type | configurations | t = 0.1 | t = 1 | t = 10 |"
    first = table.row("equivariant", "A")
    assert "noise ceiling" in lines[0] and UNKNOWN in lines[0]  # the fixture has no msd and no replicas
    assert lines[4] == "| equivariant | A | 2 | " + " | ".join(
        f"{m:.3f} ± {s:.3f} (ceiling unknown)" for m, s in zip(first.mean, first.std)) + " |"
    assert len(lines) == 4 + len(table.rows)

    records = list(csv.DictReader(io.StringIO((out / "pearson.csv").read_text())))
    assert len(records) == len(table.rows) * len(TIMES)
    for record in records:
        row = table.row(record["model"], record["type"])
        k = int(np.argmin(np.abs(TIMES - float(record["time"]))))
        assert float(record["pearson_mean"]) == row.mean[k] and float(record["pearson_std"]) == row.std[k]
        assert float(record["pearson_pooled"]) == row.pooled[k] and int(record["n_configurations"]) == 2
        assert np.isnan(float(record["noise_ceiling"])) and np.isnan(float(record["pearson_over_ceiling"]))
        assert record["ceiling_method"] == UNKNOWN

    assert (out / "pearson.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    figure = table.figure()
    axes = figure.axes[0]
    assert len(axes.containers) == 4  # one error-bar line per model and type
    assert not bands(axes)  # no ceiling band where the ceiling is unknown
    assert [text.get_text() for text in axes.get_legend().get_texts()] == [
        "equivariant (A)", "equivariant (B)", "bapst (A)", "bapst (B)"
    ]
    styles = [container.lines[0].get_linestyle() for container in axes.containers]
    assert styles == ["-", "--", "-", "--"] and axes.get_xscale() == "log"
    plt.close(figure)


def test_noise_ceiling_beside_every_pearson(tmp_path, runs):
    """On a dataset whose targets come from 8 synthetic replicas (split halves stored), the ceiling of
    each row is that of its configurations, printed with Pearson / ceiling, and drawn as bands."""
    noisy = write_dataset(tmp_path / "noisy", change=lambda k, fields: {**fields, **replica_targets(replica_values(k, 8)[1])})
    table = evaluate([runs["equivariant"], runs["bapst"]], noisy, [1, 4, 6], out=tmp_path / "out")
    expected = dataset_ceiling(load_dataset(noisy), [1, 4, 6])
    assert expected.method == SPLIT_HALVES and np.all((expected.values > 0.6) & (expected.values < 1))
    for row in table.rows:
        code = TYPE_NAMES.index(row.particle_type)
        np.testing.assert_array_equal(row.ceiling, expected.values[code])
        np.testing.assert_allclose(row.fraction_of_ceiling, row.mean / expected.values[code], rtol=1e-12)
        assert row.ceiling_method == SPLIT_HALVES

    lines = table.to_markdown().splitlines()
    assert SPLIT_HALVES in lines[0]
    first = table.row("equivariant", "A")
    assert lines[4].split(" | ")[3] == (
        f"{first.mean[0]:.3f} ± {first.std[0]:.3f} (ceiling {first.ceiling[0]:.3f}, ratio {first.fraction_of_ceiling[0]:.3f})"
    )
    records = list(csv.DictReader(io.StringIO((tmp_path / "out" / "pearson.csv").read_text())))
    assert float(records[0]["noise_ceiling"]) == first.ceiling[0]
    assert float(records[0]["pearson_over_ceiling"]) == first.fraction_of_ceiling[0]

    figure = table.figure()
    axes = figure.axes[0]
    assert len(bands(axes)) == 2  # one band per type: both models share the configurations
    band = bands(axes)[0].get_paths()[0].vertices
    assert np.isclose(band[:, 1].max(), 1.0) and np.isclose(band[:, 1].min(), first.ceiling.min())
    assert "above the noise ceiling (A)" in [text.get_text() for text in axes.get_legend().get_texts()]
    plt.close(figure)


def test_published_predictions_are_rows(tmp_path, runs):
    """A dataset holding published models' predictions gets one row per model, by the same metric
    on the same configurations and particles; a configuration lacking one is named."""
    def published(k: int, fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        noise = np.random.default_rng(100 + k).normal(0.0, 0.05, fields["propensity"].shape)
        return {**fields, "published_SE3": fields["propensity"] * 2.0 + 1.0, "published_BOTAN": fields["propensity"] + noise}

    bench = write_dataset(tmp_path / "bench", change=published)
    table = evaluate([runs["equivariant"]], bench, [2, 5, 7])
    assert [row.model for row in table.rows] == ["equivariant"] * 2 + ["BOTAN (published)"] * 2 + ["SE3 (published)"] * 2
    np.testing.assert_allclose(table.row("SE3 (published)", "A").mean, 1.0, atol=1e-6)  # a linear map of the target
    opened = load_dataset(bench)
    for code, name in enumerate(TYPE_NAMES):
        direct = []
        for index in (2, 5, 7):
            fields = opened.read(index)
            chosen = torch.from_numpy(fields["types"] == code)
            direct.append(pearson_per_timescale(torch.from_numpy(fields["published_BOTAN"].T).float(),
                                                torch.from_numpy(fields["propensity"].T).float(), chosen))
        row = table.row("BOTAN (published)", name)
        np.testing.assert_allclose(row.mean, torch.stack(direct).mean(dim=0).numpy(), rtol=1e-5)
        assert row.n_configurations == 3 and 0.3 < row.mean.min() < 0.999
        np.testing.assert_array_equal(row.ceiling, table.row("equivariant", name).ceiling)

    fields = opened.read(5)
    del fields["published_SE3"]
    write_configuration(opened.files[5], fields, **opened.checks())
    with pytest.raises(DataError, match="configuration_00005.npz.*lacks the published SE3"):
        evaluate([runs["equivariant"]], bench, [2, 5, 7])


def test_split_all_indices_and_another_dataset(tmp_path, runs, dataset):
    table = evaluate([runs["equivariant"]], dataset, split="all")
    assert {row.n_configurations for row in table.rows} == {8} and table.split == "all"
    expected, _ = direct_pearson(runs["equivariant"], dataset, list(range(8)), 0)
    np.testing.assert_allclose(table.row("equivariant", "A").mean, expected.mean(dim=0).numpy(), rtol=1e-12)
    # explicit configurations, one model given as a path (not a list)
    chosen = evaluate(runs["equivariant"], dataset, [6, 1])
    assert chosen.split == "configurations [6, 1]" and {row.n_configurations for row in chosen.rows} == {2}
    expected, _ = direct_pearson(runs["equivariant"], dataset, [1, 6], 1)
    np.testing.assert_allclose(chosen.row("equivariant", "B").mean, expected.mean(dim=0).numpy(), rtol=1e-12)
    # the run's test split applies only to the dataset it was trained on
    copy = shutil.copytree(dataset, tmp_path / "copy")
    assert {row.n_configurations for row in evaluate([runs["equivariant"] / "best.pt"], copy).rows} == {8}
    with pytest.raises(ValueError, match="split must be one of"):
        evaluate(runs["equivariant"], dataset, split="train")


def test_cli_evaluate_prints_the_table(tmp_path, runs, dataset, capsys):
    out = tmp_path / "cli"
    assert main(["evaluate", str(runs["equivariant"]), str(runs["bapst"] / "best.pt"), str(dataset),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| equivariant | A | 2 |" in printed and "| bapst | B | 2 |" in printed
    assert {path.name for path in out.iterdir()} == {"pearson.md", "pearson.csv", "pearson.png"}
    assert main(["evaluate", str(runs["equivariant"]), str(tmp_path / "missing")]) == 2
    assert "manifest.json" in capsys.readouterr().err


# ------------------------------------------------------------------ predict


def test_predict_a_dataset_then_resume(tmp_path, runs, dataset):
    out = tmp_path / "predictions"
    report = predict(runs["equivariant"], dataset, out)
    names = [path.name for path in load_dataset(dataset).files]
    assert [path.name for path in report.written] == names and report.skipped == []

    trained = load_checkpoint(runs["equivariant"])
    for item, data in enumerate(trained.graphs(dataset)):
        with np.load(out / names[item], allow_pickle=False) as archive:
            assert sorted(archive.files) == ["prediction", "times"]
            prediction, times = archive["prediction"], archive["times"]
        assert prediction.shape == (len(TIMES), N_PARTICLES) and prediction.dtype == np.float32
        np.testing.assert_array_equal(prediction, trained.predict(data).numpy().T)
        np.testing.assert_array_equal(times, TIMES)

    stamps = {path: path.stat().st_mtime_ns for path in out.iterdir()}
    again = predict(runs["equivariant"], dataset, out)
    assert again.written == [] and len(again.skipped) == len(names)
    assert {path: path.stat().st_mtime_ns for path in out.iterdir()} == stamps
    (out / names[3]).unlink()
    assert [path.name for path in predict(runs["equivariant"], dataset, out).written] == [names[3]]
    assert len(predict(runs["equivariant"], dataset, out, overwrite=True).written) == len(names)
    assert not [path for path in out.iterdir() if path.name.startswith(".")]  # no temporary files left


def test_predict_one_configuration_file_and_cli(tmp_path, runs, dataset, capsys):
    source = dataset / "configuration_00005.npz"
    assert main(["predict", str(runs["bapst"]), str(source), "--out", str(tmp_path)]) == 0
    assert "1 predictions written, 0 already present" in capsys.readouterr().out
    trained = load_checkpoint(runs["bapst"])
    with np.load(tmp_path / source.name) as archive:
        np.testing.assert_array_equal(archive["prediction"], trained.predict(trained.graphs(dataset)[5]).numpy().T)
    assert main(["predict", str(runs["bapst"]), str(source), "--out", str(tmp_path)]) == 0
    assert "0 predictions written, 1 already present" in capsys.readouterr().out
