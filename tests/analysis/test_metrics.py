"""Tests of equiglass.metrics: Pearson correlations, per configuration and pooled."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from equiglass.metrics import pearson_per_timescale, pearson_within_types, pooled_pearson_per_timescale, summarise


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    """Correlated prediction and target, [200, 4] float32."""
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(200, 4, generator=generator)
    prediction = target * torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.3 * torch.randn(200, 4, generator=generator)
    return prediction, target


def test_pearson_equals_scipy(pair):
    prediction, target = pair
    expected = [stats.pearsonr(prediction[:, t].double().numpy(), target[:, t].double().numpy()).statistic
                for t in range(4)]
    np.testing.assert_allclose(pearson_per_timescale(prediction.double(), target.double()).numpy(), expected, atol=1e-12)
    expected = [stats.pearsonr(prediction[:, t].numpy(), target[:, t].numpy()).statistic for t in range(4)]
    per_time = pearson_per_timescale(prediction, target)
    assert per_time.dtype == torch.float64 and per_time.shape == (4,)
    np.testing.assert_allclose(per_time.numpy(), expected, atol=1e-6)


def test_mask_selects_a_particle_type(pair):
    prediction, target = pair
    types = (torch.arange(200) % 5 == 0).long()  # 20 % of type B
    mask = types == 0
    expected = [stats.pearsonr(prediction[mask, t].double(), target[mask, t].double()).statistic for t in range(4)]
    np.testing.assert_allclose(pearson_per_timescale(prediction, target, mask).numpy(), expected, atol=1e-12)
    # the excluded particles really are excluded: spoiling them changes nothing
    spoiled = prediction.clone()
    spoiled[~mask] = 1e3
    assert torch.equal(pearson_per_timescale(spoiled, target, mask), pearson_per_timescale(prediction, target, mask))


def test_constant_input_gives_nan(pair):
    prediction, target = pair
    constant = torch.full((200, 1), 0.7)
    assert math.isnan(pearson_per_timescale(constant, target[:, :1]))
    assert math.isnan(pearson_per_timescale(target[:, :1], constant))
    one_particle = torch.zeros(200, dtype=torch.bool)
    one_particle[3] = True
    assert torch.isnan(pearson_per_timescale(prediction, target, one_particle)).all()
    with pytest.raises(ValueError, match=r"\[N, T\]"):
        pearson_per_timescale(prediction[:, 0], target[:, 0])


def test_per_configuration_average_and_pooled_differ(pair):
    """Two configurations with offset mean mobility: pooling correlates the offsets too."""
    prediction, target = pair
    predictions = [prediction[:100], prediction[100:] + 5.0]
    targets = [target[:100], target[100:] + 5.0]
    per_configuration = torch.stack([pearson_per_timescale(p, t) for p, t in zip(predictions, targets)])
    mean, std = summarise(per_configuration)
    np.testing.assert_allclose(mean.numpy(), per_configuration.numpy().mean(axis=0))
    np.testing.assert_allclose(std.numpy(), per_configuration.numpy().std(axis=0))  # population std
    assert torch.equal(summarise(per_configuration[:1])[1], torch.zeros(4, dtype=torch.float64))

    pooled = pooled_pearson_per_timescale(predictions, targets)
    expected = [stats.pearsonr(torch.cat(predictions)[:, t], torch.cat(targets)[:, t]).statistic for t in range(4)]
    np.testing.assert_allclose(pooled.numpy(), expected, atol=1e-6)
    assert pooled[0] > mean[0] + 0.01  # the between-configuration offset inflates the pooled value
    masks = [torch.ones(100, dtype=torch.bool), torch.zeros(100, dtype=torch.bool)]
    assert torch.allclose(pooled_pearson_per_timescale(predictions, targets, masks), per_configuration[0])


def test_summarise_propagates_nan():
    values = torch.tensor([[0.5, 0.2], [float("nan"), 0.4]])
    mean, std = summarise(values)
    assert math.isnan(mean[0]) and math.isnan(std[0])
    assert mean[1] == pytest.approx(0.3)


def test_pearson_within_types_scores_each_species_on_its_own_blind_to_their_offset(pair):
    """Each species' own correlation, averaged; the offset between species (which a correlation
    over all of them rewards) counts for nothing, and ``mask`` narrows the selection."""
    prediction, target = pair
    types = (torch.arange(200) % 5 == 0).long()  # a fifth B
    within = pearson_within_types(prediction + 3.0 * types[:, None], target, types, (0, 1))
    expected = (pearson_per_timescale(prediction, target, types == 0) + pearson_per_timescale(prediction, target, types == 1)) / 2
    torch.testing.assert_close(within, expected)
    torch.testing.assert_close(pearson_within_types(prediction, target, types, (0,)), pearson_per_timescale(prediction, target, types == 0))
    # a prediction that only knows the species: high over both together, nothing within either
    noise = torch.randn(200, 4, generator=torch.Generator().manual_seed(1))
    offset_only = 5.0 * types[:, None].double() + noise
    shifted = target + 2.0 * types[:, None]
    assert torch.all(pearson_per_timescale(offset_only, shifted) > 0.7)
    assert torch.all(pearson_within_types(offset_only, shifted, types, (0, 1)).abs() < 0.2)
    mask = torch.arange(200) < 100
    torch.testing.assert_close(pearson_within_types(prediction, target, types, (0, 1), mask),
                               pearson_within_types(prediction[:100], target[:100], types[:100], (0, 1)))
