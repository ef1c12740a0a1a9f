"""The committed reference checkpoints (experiments/checkpoints/): they load, and reproduce the
test Pearson recorded in experiments/RESULTS.md on the committed data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import equiglass
from equiglass.training.checkpoint import TrainedModel

REPOSITORY = Path(__file__).resolve().parents[2]
CHECKPOINTS = REPOSITORY / "experiments" / "checkpoints"


def mean_pearson(model: TrainedModel, test: Path, with_inherent_state: bool = False) -> np.ndarray:
    """Per-configuration Pearson of type A at every time, through :func:`equiglass.predict`, then
    the mean over the configurations of ``test``: [T]."""
    dataset = equiglass.load_dataset(test)
    pearsons = []
    for index in range(len(dataset)):
        arrays = dataset.read(index)
        inherent = {"is_positions": arrays["is_positions"]} if with_inherent_state else {}
        predicted = equiglass.predict(model, arrays["positions"], arrays["types"], arrays["box"], **inherent)
        type_a = arrays["types"] == 0
        pearsons.append([np.corrcoef(predicted[type_a, k], arrays["propensity"][k, type_a])[0, 1]
                         for k in range(predicted.shape[1])])
    return np.mean(pearsons, axis=0)


def test_shiba_checkpoint_reproduces_its_recorded_test_pearson():
    """experiments/glassbench.toml, CPU scale: the equivariant model's test Pearson, type A, t = 4120,
    per configuration then mean over the 5 test files, 0.561 (RESULTS.md, section 7)."""
    model = equiglass.load_model(CHECKPOINTS / "shiba-T0.44-equivariant.pt")
    assert model.times.tolist() == [4120.0]
    assert abs(mean_pearson(model, REPOSITORY / "data" / "shiba-T0.44" / "test")[0] - 0.5611) < 2e-3


def test_ka_reference_checkpoint_reproduces_its_recorded_test_pearson():
    """The reference checkpoint (science issue, part 4; RESULTS.md, section 10): trained on
    data/ka-T0.6 with the recipe and the displacement from the inherent state; its test Pearson,
    type A, per configuration then mean over the 16 configurations of data/ka-T0.6-test, at the
    ten times."""
    model = equiglass.load_model(CHECKPOINTS / "ka-T0.6-equivariant.pt")
    assert model.data_section["with_is_displacement"] and model.num_parameters() == 29_066
    recorded = [0.7269, 0.8919, 0.8018, 0.6821, 0.6927, 0.7148, 0.6908, 0.6490, 0.5661, 0.4503]
    measured = mean_pearson(model, REPOSITORY / "data" / "ka-T0.6-test", with_inherent_state=True)
    np.testing.assert_allclose(measured, recorded, atol=2e-4)
