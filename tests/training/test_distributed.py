"""Data-parallel training (equiglass.training.distributed): two CPU processes (gloo, launched by torchrun)
train what one process trains with the same global batch.

One ``torchrun --nproc-per-node 2`` launch (one process group) trains two tiny runs (batch_size 2: one configuration
per process per step), which the test compares with the same runs trained in this process: an
equivariant model without BatchNorm (whose statistics are per process by design) and the Bapst
GNN with cube-symmetry augmentation (the random symmetries must be drawn identically).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from factories import read_metrics, write_config

from equiglass.training.checkpoint import LAST_CHECKPOINT, read_checkpoint
from equiglass.training.distributed import SINGLE_PROCESS, Parallel
from equiglass.training.loop import train

#: The two runs: name -> (model, [model] options).
RUNS = {"equivariant": ("equivariant", {"batch_norm": False}), "bapst": ("bapst", {})}
TRAIN = {"epochs": 2, "batch_size": 2, "threads": 1}
#: Parameters agree to float32 rounding amplified by Adam's step (g / sqrt(v) turns the rounding
#: of a sum taken in another order into an O(lr) relative difference of tiny gradients): up to
#: 2e-5 here after 6 steps at lr 0.01; a wrong loss weighting between processes is O(lr) = 1e-2.
PARAMETER_TOLERANCE = 1e-4


def test_single_process_context_is_the_identity():
    items = list(range(5))
    assert SINGLE_PROCESS.shard(items) == items and SINGLE_PROCESS.gather(items) == (items,)
    assert Parallel(rank=1, world_size=2).shard(items) == [1, 3]
    loss = torch.tensor(2.0)
    assert SINGLE_PROCESS.global_loss(loss, torch.tensor(3)) is loss


def test_two_gloo_processes_train_as_one(tmp_path, dataset):
    configs = {
        name: write_config(tmp_path / name, dataset, model, model_options=options, train=TRAIN)
        for name, (model, options) in RUNS.items()
    }
    script = tmp_path / "train_runs.py"
    script.write_text(  # one process group for both runs: train() uses it and leaves it running
        "import sys\nimport torch.distributed as dist\nfrom equiglass.training.loop import train\n"
        "dist.init_process_group('gloo')\n"
        "for config, run_dir in zip(sys.argv[1::2], sys.argv[2::2]):\n"
        "    train(config, run_dir, progress=False)\n"
        "dist.destroy_process_group()\n"
    )
    arguments = [str(part) for name, config in configs.items() for part in (config, tmp_path / f"{name}-ddp")]
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script), *arguments],
        capture_output=True, text=True, timeout=300,
    )
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]

    for name, config in configs.items():
        single = train(config, tmp_path / f"{name}-single", progress=False)
        expected = read_checkpoint(single.last)
        actual = read_checkpoint(tmp_path / f"{name}-ddp" / LAST_CHECKPOINT)
        assert actual["epoch"] == expected["epoch"] == 2
        for key, value in expected["model_state"].items():
            torch.testing.assert_close(actual["model_state"][key], value, rtol=0, atol=PARAMETER_TOLERANCE,
                                       msg=f"{name}: {key}")
        for got, want in zip(read_metrics(tmp_path / f"{name}-ddp"), read_metrics(single.run_dir)):
            for column in ("train_loss", "val_loss", "val_pearson_mean"):
                assert float(got[column]) == pytest.approx(float(want[column]), rel=1e-5), (name, column)
