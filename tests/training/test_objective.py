"""The training objective (equiglass.training.objective): target normalisation per dataset, per
type or per configuration, and the loss particles."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from factories import write_config
from torch_geometric.data import Batch, Data

from equiglass.errors import ConfigError
from equiglass.training.config import load_config
from equiglass.training.objective import Objective

N, T = 50, 3


def configuration(seed: int, scale: float, offset: float) -> Data:
    """Random targets of two species (a quarter B), one missing target, scaled and shifted."""
    generator = torch.Generator().manual_seed(seed)
    types = (torch.rand(N, generator=generator) < 0.25).long()
    y = scale * torch.rand(N, T, generator=generator, dtype=torch.float64) + offset
    mask = torch.ones(N, T, dtype=torch.bool)
    mask[0, 1] = False
    return Data(types=types, y=y, target_mask=mask, num_nodes=N)


def test_per_configuration_normalisation_standardises_each_configuration_type_and_time():
    graphs = [configuration(0, 1.0, 0.0), configuration(1, 7.0, 3.0)]
    batch = Batch.from_data_list(graphs)
    objective = Objective.from_graphs(graphs, (0, 1), normalisation="configuration")
    z = objective.normalised(batch)
    for graph in range(2):
        for species in (0, 1):
            for t in range(T):
                chosen = (batch.batch == graph) & (batch.types == species) & batch.target_mask[:, t]
                values = z[chosen, t]
                assert abs(values.mean()) < 1e-12 and abs(values.std(unbiased=False) - 1) < 1e-12
    # the loss ignores what per-configuration Pearson ignores: an affine change of one configuration
    changed = Batch.from_data_list([graphs[0], Data(**{**graphs[1].to_dict(), "y": 0.1 * graphs[1].y - 5})])
    torch.testing.assert_close(objective.normalised(changed)[batch.target_mask], z[batch.target_mask])
    assert objective.loss(z.float(), batch) < 1e-10
    # one graph alone (no batch vector) gives the same numbers as inside the batch
    torch.testing.assert_close(objective.normalised(graphs[1]), z[batch.batch == 1])


def test_dataset_normalisation_uses_the_training_statistics_and_constant_groups_give_zero():
    graphs = [configuration(0, 1.0, 0.0), configuration(1, 7.0, 3.0)]
    objective = Objective.from_graphs(graphs, (0,))
    assert not objective.per_configuration
    torch.testing.assert_close(objective.normalised(graphs[1]), (graphs[1].y - objective.mean) / objective.std)
    flat = Data(**{**graphs[0].to_dict(), "y": torch.full((N, T), 2.0, dtype=torch.float64)})
    per_configuration = Objective(objective.mean, objective.std, (0,), per_configuration=True)
    assert torch.equal(per_configuration.normalised(flat), torch.zeros(N, T, dtype=torch.float64))


def test_per_type_normalisation_standardises_each_species_of_the_loss_over_the_training_set():
    """Each loss species has zero mean and unit variance per time over the training graphs; a
    species outside the loss gets the pooled statistics of the loss particles."""
    graphs = [configuration(0, 1.0, 0.0), configuration(1, 7.0, 3.0)]
    batch = Batch.from_data_list(graphs)
    both = Objective.from_graphs(graphs, (0, 1), normalisation="type")
    assert both.mean.shape == both.std.shape == (2, T)
    z = both.normalised(batch)
    for species in (0, 1):
        for t in range(T):
            values = z[(batch.types == species) & batch.target_mask[:, t], t]
            assert abs(values.mean()) < 1e-12 and abs(values.std(unbiased=False) - 1) < 1e-12
    # a configuration's affine change is not undone (unlike per configuration): the statistics are the training set's
    alone = Objective.from_graphs(graphs[1:], (0, 1), normalisation="type")
    assert not torch.allclose(both.normalised(graphs[1]), alone.normalised(graphs[1]))
    only_a = Objective.from_graphs(graphs, (0,), normalisation="type")
    pooled = Objective.from_graphs(graphs, (0,))
    torch.testing.assert_close(only_a.mean, torch.stack([pooled.mean, pooled.mean]))
    torch.testing.assert_close(only_a.std, torch.stack([pooled.std, pooled.std]))
    flat_b = Data(**{**graphs[0].to_dict(), "y": torch.where((graphs[0].types == 1)[:, None], 1.0, graphs[0].y)})
    with pytest.raises(ValueError, match="training targets of species 1 are constant"):
        Objective.from_graphs([flat_b], (0, 1), normalisation="type")


def test_time_weights_weight_each_timescale_of_the_loss():
    """A weighted mean: the squared error of each timescale counts with its weight, so a time of
    weight 0 is ignored, and equal weights give the unweighted loss."""
    graphs = [configuration(0, 1.0, 0.0), configuration(1, 7.0, 3.0)]
    batch = Batch.from_data_list(graphs)
    plain = Objective.from_graphs(graphs, (0, 1))
    output = torch.zeros(2 * N, T)
    output[:, 2] = 1.0  # wrong at time 2 only (by 1 in normalised units, on top of the target's own)
    squares = (output.double() - plain.normalised(batch)) ** 2
    mask = plain.mask(batch)
    per_time = torch.stack([squares[:, t][mask[:, t]].mean() for t in range(T)])
    counts = mask.sum(dim=0).double()
    for weights in ([1.0, 1.0, 1.0], [2.0, 0.0, 1.0], [0.0, 0.0, 5.0]):
        weighted = Objective.from_graphs(graphs, (0, 1), time_weights=weights)
        w = torch.tensor(weights, dtype=torch.float64) * counts
        assert float(weighted.loss(output, batch)) == pytest.approx(float((per_time * w).sum() / w.sum()), rel=1e-6)
        assert float(weighted.weight(batch)) == pytest.approx(float(w.sum()))
    assert float(Objective.from_graphs(graphs, (0, 1), time_weights=[1.0, 1.0, 1.0]).loss(output, batch)) == \
        pytest.approx(float(plain.loss(output, batch)), rel=1e-6)
    assert int(plain.weight(batch)) == int(mask.sum())
    with pytest.raises(ValueError, match="time_weights has 2 values for the data's 3 timescales"):
        Objective.from_graphs(graphs, (0, 1), time_weights=[1.0, 1.0])


def test_time_weights_of_another_length_than_the_data_are_a_config_error(tmp_path, dataset):
    from equiglass.training.loop import train

    config = write_config(tmp_path, dataset, "equivariant_l0", train={"time_weights": [1.0, 1.0]})
    with pytest.raises(ConfigError, match=r"time_weights has 2 values, one per stored time of the dataset is needed \(3\)"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_target_normalisation_is_a_checked_train_key(tmp_path, dataset):
    for choice in ("type", "configuration"):
        good = write_config(tmp_path / choice, dataset, train={"target_normalisation": choice})
        assert load_config(good).train.target_normalisation == choice
    bad = write_config(tmp_path / "b", dataset, train={"target_normalisation": "graph"})
    with pytest.raises(ConfigError, match="target_normalisation"):
        load_config(bad)


def test_a_run_trains_on_per_configuration_targets_and_predicts_in_dataset_units(tmp_path, dataset):
    from equiglass.training.checkpoint import load_checkpoint
    from equiglass.training.loop import train

    config = write_config(tmp_path, dataset, "equivariant_l0",
                          train={"epochs": 15, "batch_size": 2, "schedule": "none", "target_normalisation": "configuration"})
    result = train(config, tmp_path / "run", progress=False)
    assert result.best_score > 0.5  # the synthetic target is learnable from distances
    trained = load_checkpoint(tmp_path / "run")
    data = trained.graphs(dataset, indices=[0])[0]
    assert abs(trained.predict(data).mean() / data.y.mean() - 1) < 0.5  # mapped back with the training statistics


def test_a_run_with_per_type_targets_stores_them_and_predicts_each_species_in_its_units(tmp_path, dataset):
    from equiglass.training.checkpoint import load_checkpoint
    from equiglass.training.loop import train

    config = write_config(tmp_path, dataset, "equivariant_l0",
                          train={"epochs": 15, "batch_size": 2, "target_normalisation": "type"})
    result = train(config, tmp_path / "run", progress=False)
    assert result.best_score > 0.5
    trained = load_checkpoint(tmp_path / "run")
    graphs = trained.graphs(dataset, indices=json.loads((tmp_path / "run" / "run.json").read_text())["split"]["train"])
    expected = Objective.from_graphs(graphs, (0, 1), normalisation="type")
    np.testing.assert_allclose(trained.normalisation["mean"], expected.mean.numpy(), rtol=1e-10)
    np.testing.assert_allclose(trained.normalisation["std"], expected.std.numpy(), rtol=1e-10)
    data = graphs[0]
    with torch.no_grad():
        raw = trained.model(data).double()
    rows = data.types
    mapped = raw * torch.tensor(trained.normalisation["std"])[rows] + torch.tensor(trained.normalisation["mean"])[rows]
    torch.testing.assert_close(trained.predict(data), mapped.float())
