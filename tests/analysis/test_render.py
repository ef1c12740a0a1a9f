"""The picture of one configuration: slab coloured by measured and predicted propensity, and their scatter."""

from __future__ import annotations

import numpy as np
import pytest
from factories import write_config
from matplotlib import pyplot as plt
from scipy import stats

from equiglass.analysis.render import MARKER_AREA, propensity_figure, slab
from equiglass.cli import main
from equiglass.training.loop import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_slab_holds_exactly_the_particles_near_the_middle_plane():
    box = np.array([4.0, 4.0, 10.0])
    positions = np.array([[1, 1, 5.0], [1, 1, 5.74], [1, 1, 4.26], [1, 1, 5.76], [1, 1, 0.1]])
    np.testing.assert_array_equal(slab(positions, box, 1.5), [True, True, True, False, False])
    with pytest.raises(ValueError, match="thickness must be positive"):
        slab(positions, box, 0.0)


def test_figure_shows_the_slab_values_and_the_scatter_of_every_particle():
    rng = np.random.default_rng(0)
    n, box, times = 400, np.array([6.0, 6.0, 6.0]), [0.1, 10.0]
    positions, types = rng.uniform(0, 6, (n, 3)), (rng.random(n) < 0.2).astype(np.int64)
    measured = rng.gamma(2.0, 0.5, (n, 2))
    predicted = measured + rng.normal(0, 0.5, (n, 2))
    figure = propensity_figure(positions, types, box, measured, predicted, times, thickness=2.0)
    inside = slab(positions, box, 2.0)
    axes = np.array([ax for ax in figure.axes if ax.get_label() != "<colorbar>"]).reshape(2, 3)  # a row per time
    for k in range(2):
        for ax, values in zip(axes[k, :2], (measured[:, k], predicted[:, k])):
            points = ax.collections[0]
            np.testing.assert_array_equal(points.get_offsets(), positions[inside, :2])
            np.testing.assert_array_equal(points.get_array(), values[inside])
            np.testing.assert_array_equal(points.get_sizes(), np.asarray(MARKER_AREA)[types[inside]])
        for code, species in enumerate("AB"):
            chosen = types == code
            points = axes[k, 2].collections[code]
            np.testing.assert_array_equal(points.get_offsets(), np.column_stack([measured[chosen, k], predicted[chosen, k]]))
            expected = stats.pearsonr(measured[chosen, k], predicted[chosen, k]).statistic
            assert f"{species}: Pearson {expected:.3f}" in [text.get_text() for text in axes[k, 2].get_legend().get_texts()]
    plt.close(figure)


def test_cli_renders_a_trained_model(tmp_path, dataset, capsys):
    run = train(write_config(tmp_path / "configs", dataset), tmp_path / "run", progress=False).run_dir
    assert main(["render", str(run), str(dataset), "--out", str(tmp_path / "pictures"), "--configuration", "3"]) == 0
    written = tmp_path / "pictures" / "propensity_configuration_00003.png"
    assert f"written: {written}" in capsys.readouterr().out
    assert plt.imread(written).shape[:2] == (1008, 1040)  # 80 dpi: 13 inches wide, 4.2 inches per time, three times
    assert main(["render", str(run), str(dataset), "--out", str(tmp_path / "pictures"), "--configuration", "99"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {dataset}: has 8 configurations, no configuration 99"
