"""Transfer learning: start a model from another run's backbone, optionally train only its decoder.

A propensity network is a *backbone* (embedding and interaction blocks, or Bapst's encoder
and graph-network block) followed by a *decoder* (every submodule named ``decoder``: the
MLP from the backbone's invariant features to one propensity per timescale). PCL22 test the
learned representation by freezing the backbone trained at one temperature and retraining
only the decoder at another. ``[train] init_from`` and ``freeze_backbone`` (see
:mod:`equiglass.training.config`) do that:

* :func:`load_backbone` copies every backbone parameter and buffer of a checkpoint into a
  freshly built model of the same ``[model]`` section; the decoder keeps its fresh
  initialisation (its targets, normalised per timescale, belong to the new data);
* :func:`freeze_backbone` stops gradients to the backbone, and :func:`backbone_eval` keeps
  its normalisation layers on their stored statistics while the decoder trains.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from equiglass.errors import CheckpointError
from equiglass.training.checkpoint import checkpoint_path, read_checkpoint

#: Name of the decoder submodule(s) of every network.
DECODER = "decoder"


def is_decoder(name: str) -> bool:
    """Whether the parameter, buffer or module ``name`` (dotted, as ``named_parameters`` gives) belongs to a decoder."""
    return DECODER in name.split(".")


def load_backbone(model: nn.Module, source: str | Path, model_section: dict) -> int:
    """Copy the backbone weights of checkpoint (or run directory) ``source`` into ``model``.

    Args:
        model: a freshly built network with a submodule named ``decoder``.
        source: the checkpoint file or run directory (its ``best.pt``).
        model_section: the resolved ``[model]`` section ``model`` was built from; it must
            equal the checkpoint's.

    Returns:
        The number of tensors copied.

    Raises:
        CheckpointError: naming the checkpoint: unreadable, another model section, or weights that do not fit.
    """
    path = checkpoint_path(source)
    content = read_checkpoint(path)
    if dict(content["model"]) != dict(model_section):
        raise CheckpointError(path, f"init_from: the checkpoint's model {content['model']} differs from this run's {model_section}")
    own = model.state_dict()
    if not any(is_decoder(name) for name in own):
        raise CheckpointError(path, f"init_from: a {type(model).__name__} has no '{DECODER}' to retrain")
    backbone = {name: value for name, value in content["model_state"].items() if not is_decoder(name)}
    missing = sorted(name for name in own if not is_decoder(name) and name not in backbone)
    mismatched = sorted(name for name, value in backbone.items() if name not in own or own[name].shape != value.shape)
    if missing or mismatched:
        raise CheckpointError(path, f"init_from: backbone weights do not fit (missing {missing[:5]}, mismatched {mismatched[:5]})")
    model.load_state_dict(backbone, strict=False)
    return len(backbone)


def freeze_backbone(model: nn.Module) -> int:
    """Stop gradients to every parameter outside the decoder; return how many parameters stay trainable."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(is_decoder(name))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def backbone_eval(model: nn.Module) -> None:
    """Put every module outside the decoder in eval mode (normalisation layers use their stored statistics)."""
    for name, module in model.named_modules():
        if not is_decoder(name) and not any(True for _ in module.children()):
            module.eval()
