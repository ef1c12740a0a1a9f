"""Optional NVIDIA cuEquivariance backend of the convolution's tensor product.

``[model] tensor_product = "cuequivariance"`` computes the channel-wise ("uvu") tensor
product of :class:`~equiglass.nn.convolution.CuEquivarianceConvolution` with
:class:`cuequivariance_torch.ChannelWiseTensorProduct`, the gather of the neighbours'
features and the sum of the messages at the centres fused into the same call. With a
GPU and ``cuequivariance-ops-torch`` (NVIDIA's CUDA kernels) it runs the ``uniform_1d``
CUDA kernel; otherwise cuEquivariance's pure-PyTorch ``naive`` method, which is correct
on any device but slower than the default fused path (see benchmarks/README.md).

Install: ``pip install -e '.[cuequivariance]'`` (the Python package), plus on a CUDA
machine ``cuequivariance-ops-torch-cu12`` (or ``-cu13``) for the kernels.

The parameters, and so the checkpoints, are those of the e3nn path: the radial MLP gives
the weights in the order of the e3nn module's instructions, reordered here to
cuEquivariance's order (by output slot); both order the output irreps the same way and
normalise the paths the same way (tests/nn/test_nn_equivariant.py checks outputs and
gradients against e3nn).
"""

from __future__ import annotations

import importlib.util
import math

import torch
from e3nn import o3
from torch import nn


def cuequivariance_available() -> bool:
    """Whether the ``cuequivariance-torch`` package is installed."""
    return importlib.util.find_spec("cuequivariance_torch") is not None


def cuda_kernels_available() -> bool:
    """Whether cuEquivariance's CUDA kernels (``cuequivariance-ops-torch``) and a GPU are present."""
    return importlib.util.find_spec("cuequivariance_ops_torch") is not None and torch.cuda.is_available()


class CuEquivarianceTensorProduct(nn.Module):
    """The message sum of a uvu :class:`e3nn.o3.TensorProduct`, computed by cuEquivariance.

    ``out[i] = sum over edges e = (j -> i) of tensor_product(x[j], edge_sh[e], weights[e])``.

    Args:
        tensor_product: the e3nn module (``shared_weights=False``, uvu paths, each path
            with its own output slot, the second operand one copy of each order); its
            irreps, instructions and weight layout are reproduced.
        method: cuEquivariance's method; default ``"uniform_1d"`` (CUDA kernels) when
            :func:`cuda_kernels_available`, else ``"naive"`` (pure PyTorch). Chosen at
            construction: build the model on the machine that runs it.

    Shapes: ``x [N, irreps_in1.dim]``, ``edge_index [2, E]`` (neighbour j, centre i),
    ``edge_sh [E, irreps_in2.dim]``, ``weights [E, weight_numel]`` (e3nn instruction order)
    -> ``[N, irreps_out.dim]`` (e3nn layout of the module's output).
    """

    def __init__(self, tensor_product: o3.TensorProduct, method: str | None = None) -> None:
        super().__init__()
        if not cuequivariance_available():
            raise ImportError(
                'tensor_product = "cuequivariance" needs the cuequivariance-torch package: '
                "pip install -e '.[cuequivariance]' (and cuequivariance-ops-torch-cu12 for the CUDA kernels)"
            )
        import cuequivariance as cue
        import cuequivariance_torch as cuet

        if any(ins.connection_mode != "uvu" for ins in tensor_product.instructions):
            raise ValueError("CuEquivarianceTensorProduct reproduces channel-wise (uvu) tensor products only")
        irreps_mid = tensor_product.irreps_out
        self.method = method or ("uniform_1d" if cuda_kernels_available() else "naive")
        self.channelwise = cuet.ChannelWiseTensorProduct(
            cue.Irreps("O3", str(tensor_product.irreps_in1)),
            cue.Irreps("O3", str(tensor_product.irreps_in2)),
            sorted({cue.O3(ir.l, ir.p) for _, ir in irreps_mid}),
            layout=cue.mul_ir,
            shared_weights=False,
            internal_weights=False,
            method=self.method,
        )
        if str(self.channelwise.irreps_out) != str(irreps_mid):
            raise ValueError(
                f"cuEquivariance orders the paths as {self.channelwise.irreps_out}, the e3nn module as {irreps_mid}"
            )
        # cuEquivariance's constant tables are rebuilt at construction: keep them out of checkpoints
        for module in self.channelwise.modules():
            for name, buffer in list(module.named_buffers(recurse=False)):
                module.register_buffer(name, buffer, persistent=False)
        # the weights of the path writing output slot k are cuEquivariance's k-th block
        sizes = [math.prod(ins.path_shape) for ins in tensor_product.instructions]
        starts = [sum(sizes[:n]) for n in range(len(sizes))]
        by_slot = sorted(range(len(sizes)), key=lambda n: tensor_product.instructions[n].i_out)
        columns = [starts[n] + k for n in by_slot for k in range(sizes[n])]
        self.register_buffer("weight_columns", torch.tensor(columns), persistent=False)

    def forward(
        self, x: torch.Tensor, edge_index: torch.Tensor, edge_sh: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        """Messages summed at the centres, ``[N, irreps_out.dim]``; see the class docstring."""
        source, target = edge_index
        return self.channelwise(
            x,
            edge_sh,
            weights[:, self.weight_columns],
            indices_1=source,
            indices_out=target,
            size_out=x.shape[0],
        )
