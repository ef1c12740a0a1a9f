"""The committed reference checkpoints (experiments/checkpoints/): they load, and reproduce the
test Pearson recorded in experiments/RESULTS.md on the committed data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import equiglass

REPOSITORY = Path(__file__).resolve().parents[2]


def test_shiba_checkpoint_reproduces_its_recorded_test_pearson():
    """experiments/glassbench.toml, CPU scale: the equivariant model's test Pearson, type A, t = 4120,
    per configuration then mean over the 5 test files, 0.561 (RESULTS.md, section 7)."""
    model = equiglass.load_model(REPOSITORY / "experiments" / "checkpoints" / "shiba-T0.44-equivariant.pt")
    assert model.times.tolist() == [4120.0]
    test = equiglass.load_dataset(REPOSITORY / "data" / "shiba-T0.44" / "test")
    pearsons = []
    for index in range(len(test)):
        arrays = test.read(index)
        predicted = equiglass.predict(model, arrays["positions"], arrays["types"], arrays["box"])
        type_a = arrays["types"] == 0
        pearsons.append(np.corrcoef(predicted[type_a, 0], arrays["propensity"][0, type_a])[0, 1])
    assert len(pearsons) == 5
    assert abs(np.mean(pearsons) - 0.5611) < 2e-3
