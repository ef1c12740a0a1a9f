"""torch.compile of the models (``[train] compile``): compiled and eager give the same outputs and gradients.

The fast tests compile with the ``aot_eager`` backend: TorchDynamo captures the model's
forward and AOTAutograd its backward, as with the default backend, but no code is generated,
so they take seconds. The inductor test (the default backend, what ``compile = true`` uses:
C++ code generated and built, about a minute on 2 shared cores) is marked slow. All skip,
saying why, where torch.compile cannot run (e.g. inductor without a C++ compiler).
"""

from __future__ import annotations

import shutil

import pytest
import torch
from factories import SMALL_MODELS, two_graphs, write_config

import equiglass.training.loop
from equiglass.training.checkpoint import read_checkpoint
from equiglass.training.loop import train


def assert_compiled_equals_eager(model: torch.nn.Module, backend: str) -> None:
    """Training-mode outputs and parameter gradients of ``torch.compile(model, dynamic=True)`` equal eager ones."""
    compiled = torch.compile(model, backend=backend, dynamic=True)
    for data in two_graphs():
        results = []
        for run in (model, compiled):
            model.zero_grad(set_to_none=True)
            out = run(data)
            out.square().sum().backward()
            results.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
        (eager, eager_grads), (got, got_grads) = results
        torch.testing.assert_close(got, eager, rtol=1e-4, atol=1e-5)
        for a, b in zip(got_grads, eager_grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(SMALL_MODELS))
def test_compiled_model_equals_eager(name):
    torch.manual_seed(0)
    assert_compiled_equals_eager(SMALL_MODELS[name]().train(), "aot_eager")


@pytest.mark.slow
def test_inductor_compiled_model_equals_eager():
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("torch.compile's inductor backend needs a C++ compiler on the CPU, and none is installed")
    torch.manual_seed(0)
    assert_compiled_equals_eager(SMALL_MODELS["equivariant"]().train(), "inductor")


def test_compile_option_trains_like_eager(tmp_path, dataset, monkeypatch):
    """``[train] compile = true`` trains through torch.compile (here with aot_eager) to the eager run's weights."""
    real_compile, calls = torch.compile, []

    def compile_aot_eager(model, **options):
        calls.append(options)
        return real_compile(model, backend="aot_eager", **options)

    monkeypatch.setattr(equiglass.training.loop.torch, "compile", compile_aot_eager)
    runs = {}
    for flag in (False, True):
        config = write_config(tmp_path / str(flag), dataset, "equivariant", train={"epochs": 1, "compile": flag})
        runs[flag] = read_checkpoint(train(config, tmp_path / f"run-{flag}", progress=False).last)["model_state"]
    assert calls == [{"dynamic": True}]
    for key, value in runs[False].items():
        torch.testing.assert_close(runs[True][key], value, rtol=1e-4, atol=1e-5, msg=key)
