"""The training objective (equiglass.training.objective): target normalisation per dataset or
per configuration, and the loss particles."""

from __future__ import annotations

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
    objective = Objective.from_graphs(graphs, (0, 1), per_configuration=True)
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


def test_target_normalisation_is_a_checked_train_key(tmp_path, dataset):
    good = write_config(tmp_path / "a", dataset, train={"target_normalisation": "configuration"})
    assert load_config(good).train.target_normalisation == "configuration"
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
