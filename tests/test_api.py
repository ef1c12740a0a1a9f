"""The notebook API at the top of the package: equiglass.load_dataset, load_model, predict (equiglass.api),
its docstring examples run as doctests on the embedded demo dataset with a tiny model."""

from __future__ import annotations

import doctest
from pathlib import Path

import numpy as np
import pytest
from factories import MODELS

import equiglass
from equiglass import api
from equiglass.analysis.predict import configuration_prediction
from equiglass.nn.registry import build_model
from equiglass.resources import DEMO_DATASET
from equiglass.training.checkpoint import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_checkpoint(path: Path, with_potential_energy: bool = False) -> Path:
    """An untrained tiny equivariant model for the demo dataset's ten times, saved as a checkpoint."""
    times = equiglass.load_dataset(DEMO_DATASET).times
    model = build_model(MODELS["equivariant"], len(times))
    return save_checkpoint(
        path, model=model, model_section=MODELS["equivariant"],
        data_section={"cutoff": 2.0, "positions": "thermal", "with_potential_energy": with_potential_energy,
                      "particle_types": [0]},
        normalisation={"mean": np.full(len(times), 0.5), "std": np.full(len(times), 0.1)}, times=times, extra={},
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


def test_the_docstring_examples_run(checkpoint):
    results = doctest.testmod(api, extraglobs={"checkpoint": checkpoint}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert results.attempted >= 10 and results.failed == 0


def test_the_top_level_names_are_the_apis():
    assert (equiglass.load_dataset, equiglass.load_model, equiglass.predict) == (api.load_dataset, api.load_model, api.predict)
    assert {"load_dataset", "load_model", "predict"} <= set(dir(equiglass))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        equiglass.nothing  # noqa: B018


def test_predict_on_arrays_equals_the_predictions_of_the_configuration(checkpoint):
    fields = equiglass.load_dataset(DEMO_DATASET).read(1)
    model = equiglass.load_model(checkpoint)
    expected = configuration_prediction(model, fields)["prediction"].T
    shifted = fields["positions"] + fields["box"] * [1, -2, 0]  # positions outside the box are wrapped
    np.testing.assert_allclose(equiglass.predict(model, shifted, fields["types"], fields["box"]), expected, atol=1e-5)
    np.testing.assert_array_equal(equiglass.predict(checkpoint, fields["positions"], fields["types"], fields["box"]),
                                  expected)
    assert not np.allclose(expected, expected[:1])  # the particles' predictions differ


def test_a_model_of_the_potential_energy_needs_it(tmp_path):
    model = equiglass.load_model(tiny_checkpoint(tmp_path / "energy.pt", with_potential_energy=True))
    fields = equiglass.load_dataset(DEMO_DATASET).read(0)
    with pytest.raises(ValueError, match="pass potential_energy"):
        equiglass.predict(model, fields["positions"], fields["types"], fields["box"])
    prediction = equiglass.predict(model, fields["positions"], fields["types"], fields["box"], fields["potential_energy"])
    np.testing.assert_array_equal(prediction, configuration_prediction(model, fields)["prediction"].T)
