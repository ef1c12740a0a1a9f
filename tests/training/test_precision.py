"""Mixed precision (``[train] precision``): the models run under autocast, and training uses it.

Whether it is worth it (speed, and the demo's Pearson unchanged) is measured in
benchmarks/README.md, not here.
"""

from __future__ import annotations

import pytest
import torch
from factories import SMALL, SMALL_MODELS, two_graphs, write_config

import equiglass.training.loop
from equiglass.nn import EquivariantConfig, EquivariantPropensityModel
from equiglass.nn.cuequivariance import cuequivariance_available
from equiglass.training.checkpoint import read_checkpoint
from equiglass.training.loop import train


def equivariant(tensor_product: str):
    return lambda: EquivariantPropensityModel(EquivariantConfig(**SMALL, tensor_product=tensor_product))


UNDER_AUTOCAST = {
    "bapst": SMALL_MODELS["bapst"],
    "equivariant-fused": equivariant("fused"),
    "equivariant-e3nn": equivariant("e3nn"),
    "equivariant-cuequivariance": equivariant("cuequivariance"),
}


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", list(UNDER_AUTOCAST))
def test_models_run_under_autocast_close_to_float32(name: str, precision: str):
    """Under CPU autocast the outputs come out in the lower precision, correlate with the float32
    outputs to better than 0.999, and every parameter gets a finite float32 gradient (e3nn's
    modules do not support autocast: the equivariant model keeps them out of it)."""
    if name.endswith("cuequivariance") and not cuequivariance_available():
        pytest.skip("cuequivariance-torch not installed")
    torch.manual_seed(0)
    model = UNDER_AUTOCAST[name]().train()
    data = two_graphs()[1]
    reference = model(data).detach()
    with torch.autocast("cpu", dtype=getattr(torch, precision)):
        output = model(data)
    assert output.dtype == getattr(torch, precision)
    correlation = torch.corrcoef(torch.stack([output.float().flatten(), reference.flatten()]))[0, 1]
    assert correlation > 0.999, correlation
    assert not torch.equal(output.float(), reference)
    output.float().square().sum().backward()
    for parameter in model.parameters():
        assert parameter.grad.dtype == torch.float32 and torch.isfinite(parameter.grad).all()


def test_precision_option_trains_under_autocast(tmp_path, dataset, monkeypatch):
    """``precision = "bfloat16"`` runs every training forward under bfloat16 autocast, ends near
    the float32 run's weights without equalling them, and records itself in the run's resolved
    config; ``"float16"`` trains through the gradient scaler."""
    entered = []
    real_autocast = equiglass.training.loop.mixed_precision

    def recording_autocast(device, precision):
        context = real_autocast(device, precision)
        entered.append((context.fast_dtype, context._enabled))
        return context

    monkeypatch.setattr(equiglass.training.loop, "mixed_precision", recording_autocast)
    weights = {}
    for precision in ("float32", "bfloat16", "float16"):
        entered.clear()
        config = write_config(tmp_path / precision, dataset, "equivariant", train={"epochs": 1, "precision": precision})
        checkpoint = read_checkpoint(train(config, tmp_path / f"run-{precision}", progress=False).last)
        weights[precision] = checkpoint["model_state"]
        assert checkpoint["config"]["train"]["precision"] == precision
        assert len(entered) == 6  # one per training step: 6 training configurations, batch 1
        if precision == "float32":
            assert not any(enabled for _, enabled in entered)
        else:
            assert entered == [(getattr(torch, precision), True)] * 6
    for precision in ("bfloat16", "float16"):
        differences = [
            (weights[precision][key] - value).abs().max().item()
            for key, value in weights["float32"].items()
            if value.is_floating_point() and value.numel() > 0
        ]
        assert 0 < max(differences) < 0.05, (precision, max(differences))
