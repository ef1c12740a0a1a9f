"""Tests of equiglass.analysis.noise_ceiling: both estimators against the analytic ceiling of
synthetic replicas, against each other, on datasets with and without the fields they need, and
the values of the committed demo dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from factories import N_PARTICLES, replica_targets, replica_values, write_bapst_file, write_dataset

from equiglass.analysis.evaluate import PearsonRow, PearsonTable
from equiglass.analysis.noise_ceiling import (
    REPLICA_VARIANCE,
    SPLIT_HALVES,
    UNKNOWN,
    ceiling,
    configuration_ceiling,
    dataset_ceiling,
    replicas_per_configuration,
    split_half_reliability,
    variance_reliability,
)
from equiglass.data.bapst import convert_bapst
from equiglass.data.format import load_dataset
from equiglass.errors import DataError
from equiglass.experiments.report import table_json
from equiglass.resources import DEMO_DATASET

#: The defaults of factories.replica_values.
SIGNAL_STD, NOISE_STD = 0.3, 0.6


def replica_displacements(seed: int, replicas: int, n: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """factories.replica_values at two times for ``n`` particles."""
    return replica_values(seed, replicas, n=n, n_times=2)


def analytic_ceiling(replicas: int) -> float:
    """Pearson(signal, mean of R replicas) = sqrt(var_s / (var_s + σ² / R))."""
    return float(np.sqrt(SIGNAL_STD**2 / (SIGNAL_STD**2 + NOISE_STD**2 / replicas)))


@pytest.mark.parametrize("replicas", [2, 4, 16])
def test_both_estimators_give_the_analytic_ceiling(replicas):
    signal, values = replica_displacements(seed=replicas, replicas=replicas)
    propensity, msd, halves = replica_targets(values).values()
    expected = analytic_ceiling(replicas)
    empirical = [np.corrcoef(signal[t], propensity[t])[0, 1] for t in range(2)]
    variance = ceiling(variance_reliability(propensity, msd, replicas))
    split = ceiling(split_half_reliability(halves))
    np.testing.assert_allclose(empirical, expected, atol=0.01)
    np.testing.assert_allclose(variance, expected, atol=0.01)
    np.testing.assert_allclose(split, expected, atol=0.015)
    np.testing.assert_allclose(variance, split, atol=0.015)


def test_a_wrong_formula_would_fail():
    """At R = 2 the analytic ceiling is 0.58: forgetting 1/R, R / (R - 1), or the square root moves it far."""
    replicas = 2
    signal, values = replica_displacements(seed=7, replicas=replicas)
    propensity, msd, _ = replica_targets(values).values()
    reliability = variance_reliability(propensity, msd, replicas)
    expected = analytic_ceiling(replicas)
    assert np.all(np.abs(ceiling(reliability) - expected) < 0.01)
    assert np.all(np.abs(reliability - expected) > 0.2)  # reliability is not the ceiling
    no_one_over_r = 1 - (msd - propensity**2).mean(axis=1) * replicas / (replicas - 1) / propensity.var(axis=1, ddof=1)
    biased = variance_reliability(propensity, msd, replicas + 1)  # s² without R / (R - 1)
    assert np.all(np.abs(ceiling(no_one_over_r) - expected) > 0.2)
    assert np.all(np.abs(ceiling(biased) - expected) > 0.04)


def test_masks_clipping_and_undefined_values():
    signal, values = replica_displacements(seed=3, replicas=4, n=1000)
    propensity, msd, _ = replica_targets(values).values()
    mask = np.arange(1000) < 500
    np.testing.assert_array_equal(variance_reliability(propensity, msd, 4, mask),
                                  variance_reliability(propensity[:, mask], msd[:, mask], 4))
    np.testing.assert_array_equal(ceiling(np.array([-0.3, 0.25, np.nan])), [0.0, 0.5, np.nan])
    constant = np.ones((2, 10))
    assert np.all(np.isnan(variance_reliability(constant, constant, 4)))
    assert np.all(np.isnan(variance_reliability(propensity, msd, 4, np.arange(1000) == 0)))  # one particle
    assert np.all(np.isnan(split_half_reliability(np.stack([constant, constant]))))
    with pytest.raises(ValueError, match="at least 2 replicas"):
        variance_reliability(propensity, msd, 1)
    with pytest.raises(ValueError, match=r"\[2, T, N\]"):
        split_half_reliability(propensity)


def test_dataset_ceiling_chooses_the_estimator_and_never_invents(tmp_path: Path):
    plain = load_dataset(write_dataset(tmp_path / "plain", n_configurations=2))  # no msd, no R
    unknown = dataset_ceiling(plain)
    assert unknown.method == UNKNOWN and unknown.values.shape == (2, 3) and np.all(np.isnan(unknown.values))

    halves = load_dataset(write_dataset(tmp_path / "halves", 4, lambda k, f: {**f, **replica_targets(replica_values(k, 8)[1])}))
    assert replicas_per_configuration(halves.manifest) == [None] * 4
    split = dataset_ceiling(halves, [0, 2])
    assert split.method == SPLIT_HALVES and split.n_configurations == 2
    assert np.all((split.values > 0.6) & (split.values < 0.95))

    fields = halves.read(1)
    without_halves = {name: array for name, array in fields.items() if name != "propensity_halves"}
    assert configuration_ceiling(without_halves, None)[1] == UNKNOWN
    variance, method = configuration_ceiling(without_halves, 8)
    assert method == REPLICA_VARIANCE
    np.testing.assert_allclose(variance, configuration_ceiling(fields, None)[0], atol=0.08)
    np.testing.assert_allclose(variance, analytic_ceiling(8), atol=0.08)


def test_replicas_come_from_the_protocol_or_the_bapst_entries():
    assert replicas_per_configuration({"protocol": {"replicas": 16}, "configurations": [{}, {}]}) == [16, 16]
    bapst = {"configurations": [{"n_trajectories": 32}, {"n_trajectories": 30}]}
    assert replicas_per_configuration(bapst) == [32, 30]
    assert replicas_per_configuration({"protocol": {}, "configurations": [{}]}) == [None]


#: Type A ceiling of data/demo at its ten times (replica variance, R = 16, mean over the 24 configurations).
DEMO_A = [0.73, 0.92, 0.94, 0.93, 0.92, 0.90, 0.88, 0.84, 0.77, 0.64]
#: The values of /work/shared/reference/noise_ceiling.md, which left out R / (R - 1).
DEMO_A_REFERENCE = [0.75, 0.92, 0.95, 0.94, 0.92, 0.90, 0.88, 0.85, 0.79, 0.67]


def test_demo_dataset_values():
    dataset = load_dataset(DEMO_DATASET)
    demo = dataset_ceiling(dataset)
    assert demo.method == REPLICA_VARIANCE and demo.n_configurations == 24
    np.testing.assert_allclose(demo.values[0], DEMO_A, atol=0.006)
    assert np.all((demo.values[1] > 0.65) & (demo.values[1] < 0.95))
    # the reference values are the biased variance: s² = msd - propensity² without R / (R - 1), i.e. R + 1 here
    biased = [ceiling(variance_reliability(fields["propensity"], fields["msd"], 17, fields["types"] == 0))
              for fields in dataset]
    np.testing.assert_allclose(np.mean(biased, axis=0), DEMO_A_REFERENCE, atol=0.006)


def test_the_format_checks_propensity_halves(tmp_path: Path):
    def halves(shape_of: tuple[int, ...], sign: float = 1.0):
        return lambda k, fields: {**fields, "propensity_halves": sign * np.ones(shape_of)}

    assert "propensity_halves" in load_dataset(write_dataset(tmp_path / "ok", 1, halves((2, 3, N_PARTICLES)))).read(0)
    with pytest.raises(DataError, match=r"'propensity_halves' has shape \[3, 3, 300\], expected \[2, T, N\]"):
        write_dataset(tmp_path / "three", 1, halves((3, 3, N_PARTICLES)))
    with pytest.raises(DataError, match="'propensity_halves' holds negative values"):
        write_dataset(tmp_path / "negative", 1, halves((2, 3, N_PARTICLES), -1.0))


def test_converted_bapst_files_use_their_trajectory_count(tmp_path: Path):
    rng = np.random.default_rng(5)
    for k in range(2):
        write_bapst_file(tmp_path / "bapst" / f"file{k}.pickle", rng, n_particles=512, n_trajectories=4)
    dataset = load_dataset(convert_bapst(tmp_path / "bapst", tmp_path / "converted"))
    assert replicas_per_configuration(dataset.manifest) == [4, 4]
    converted = dataset_ceiling(dataset)
    assert converted.method == REPLICA_VARIANCE and np.all(np.isfinite(converted.values))


def test_report_json_carries_the_ceiling():
    rows = (PearsonRow("m", "A", np.array([0.5, 0.4]), np.zeros(2), 3, np.array([0.6, 0.5]), np.array([0.8, np.nan]), "x"),)
    table = PearsonTable(np.array([0.1, 1.0]), rows, Path("d"), "all")
    row = table_json(table)["rows"][0]
    assert row["ceiling"] == [0.8, None] and row["pearson_over_ceiling"] == [0.625, None]
    assert row["ceiling_method"] == "x"
