"""The convolution's neighbour sum of tensor-product messages as one compiled CPU kernel.

For every path ``p`` of a channel-wise ("uvu") tensor product, edge ``e = (j -> i)``,
channel ``u`` and output component ``k``:

.. math::
    s_i[p, u, k] = \\lambda_p \\sum_{e = (j \\to i)} w_e[p, u] \\sum_m x_j[u, m]\\, C_e^{(l_1 l_2 l_3)}[m, k]

(``C_e`` the per-edge couplings of :class:`~equiglass.nn.convolution.SphericalCouplings`,
``λ_p`` e3nn's path weight). Written with PyTorch operators (the fused tensor product of
:mod:`equiglass.nn.convolution`) this materialises per-edge inputs, messages and their
gradients, ``[E, 560]`` floats per layer for the default model, and the training step is bound
by that memory traffic (``benchmarks/README.md``, *Roofline*). ``message_sum.c`` computes the
same sum in one pass over each centre's edges, keeping the centre's sums in cache, and the
backward in a second such pass (gradients of the inputs, of the per-edge weights and, when
they require it, of the couplings): no per-edge message is stored, no atomics. Its inner loops run over the channels
``u``, so node features are handed to it with each irrep block stored ``[2l+1, mul]``
(:func:`to_channels_last`), the transpose of e3nn's ``[mul, 2l+1]``.

The kernel is C compiled on first use with the system's compiler (``$CC``, else ``cc``;
``-O3 -march=native``, a second or two) into a per-user cache keyed by the source, the
compiler and the CPU (``$EQUIGLASS_CACHE_DIR``, else ``$XDG_CACHE_HOME/equiglass``, else
``~/.cache/equiglass``). Where no compiler works, or with ``EQUIGLASS_COMPILED_KERNELS=0``,
:func:`kernel_available` is False and the convolution uses its PyTorch operators (with a
warning once, in the first case). GPUs always use those.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

#: The kernel's source, beside this module.
SOURCE = Path(__file__).with_suffix(".c")
#: Compiler flags; ``-march=native`` is dropped where the compiler refuses it.
FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-pthread")
#: The kernel's dtypes and the suffix of their functions in ``message_sum.c``.
DTYPES = {torch.float32: "float32", torch.float64: "float64"}
#: Integers per path in the kernel's path table (``PATH_FIELDS`` of ``message_sum.c``).
PATH_FIELDS = 7


def kernel_available() -> bool:
    """Whether the compiled kernel can be used (it is compiled on the first call; see the module docstring)."""
    return os.environ.get("EQUIGLASS_COMPILED_KERNELS", "1") != "0" and _library() is not None


def _cache_dir() -> Path:
    if "EQUIGLASS_CACHE_DIR" in os.environ:
        return Path(os.environ["EQUIGLASS_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "equiglass"


def _cpu_flags() -> str:
    """The CPU's feature flags where Linux lists them (the cache key of a ``-march=native`` build)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next((line for line in cpuinfo if line.startswith(("flags", "Features"))), "")
    except OSError:
        return ""


def _compile(compiler: str, flags: tuple[str, ...], target: Path) -> bool:
    """Compile :data:`SOURCE` into ``target`` (written whole or not at all); True when it worked."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(handle)
    try:
        done = subprocess.run([compiler, *flags, "-o", partial, str(SOURCE)], capture_output=True, timeout=300)
        if done.returncode == 0:
            os.replace(partial, target)
            return True
        return False
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        Path(partial).unlink(missing_ok=True)


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The compiled kernel (compiled now if not cached), or None (warned) where that fails."""
    compiler = os.environ.get("CC", "cc")
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        version = None
    if version is not None:
        for flags in (FLAGS, tuple(flag for flag in FLAGS if not flag.startswith("-march"))):
            key = hashlib.sha256("\0".join([SOURCE.read_text(), version, *flags, platform.machine(), _cpu_flags()]).encode())
            target = _cache_dir() / f"message_sum-{key.hexdigest()[:16]}.so"
            if target.is_file() or _compile(compiler, flags, target):
                return _declare(ctypes.CDLL(str(target)))
    warnings.warn(
        f"equiglass: could not compile {SOURCE.name} with {compiler!r} (set $CC to a C compiler); "
        "the convolution's message sum uses PyTorch operators, several times slower on CPUs",
        RuntimeWarning,
        stacklevel=3,
    )
    return None


def _declare(library: ctypes.CDLL) -> ctypes.CDLL:
    """Argument types of the kernel's functions (pointers, then int64 sizes, then the thread count)."""
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    for suffix in DTYPES.values():
        forward = getattr(library, f"message_sum_forward_{suffix}")
        forward.argtypes = [pointer] * 7 + [size, pointer, pointer, size] + [size] * 4 + [ctypes.c_int]
        backward = getattr(library, f"message_sum_backward_{suffix}")
        backward.argtypes = [pointer] * 10 + [size, pointer, pointer, size] + [size] * 4 + [ctypes.c_int]
        forward.restype = backward.restype = ctypes.c_int
    return library


@dataclass(frozen=True)
class Neighbourhoods:
    """A graph's edges grouped by centre (target), in compressed-row form.

    The edges of centre ``i`` are ``order[ptr[i]:ptr[i + 1]]`` (``order`` is None when
    ``edge_index`` is sorted by centre, as :func:`~equiglass.data.graphs.neighbour_list` writes
    it); ``source [E]`` their neighbours. Computed once per forward (:meth:`of`) and shared by
    every layer. All int64, on the CPU.
    """

    source: torch.Tensor
    ptr: torch.Tensor
    order: torch.Tensor | None

    @property
    def n_nodes(self) -> int:
        return self.ptr.shape[0] - 1

    @classmethod
    def of(cls, edge_index: torch.Tensor, n_nodes: int) -> Neighbourhoods:
        """``edge_index [2, E]`` (source j, centre i), ``n_nodes`` -> the grouping."""
        source, target = edge_index[0].contiguous(), edge_index[1].contiguous()
        sorted_by_target = bool((target[1:] >= target[:-1]).all())
        counts = torch.bincount(target, minlength=n_nodes)
        ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        return cls(source, ptr, None if sorted_by_target else torch.argsort(target, stable=True))


@dataclass(frozen=True)
class PathTable:
    """The paths of one tensor product as the kernel reads them.

    ``paths [P, 7]`` int64 rows ``(input offset, 2 l1 + 1, coupling index, output offset,
    2 l3 + 1, weight offset, mul)`` (offsets in the channels-last layouts), ``path_weights [P]``
    float64, the feature sizes and the scratch each thread needs (largest ``(2 l1 + 1) mul``).
    """

    paths: torch.Tensor
    path_weights: torch.Tensor
    in_dim: int
    out_dim: int
    weight_dim: int
    scratch: int

    @classmethod
    def build(
        cls,
        input_shapes: list[tuple[int, int]],
        paths: list[tuple[int, int, int, float]],
        output_shapes: list[tuple[int, int]],
    ) -> PathTable:
        """``input_shapes`` / ``output_shapes``: ``(mul, 2l + 1)`` of each input irrep / output slot;
        ``paths``: ``(input irrep, coupling index, output slot, path weight)`` in weight order."""
        in_offsets = _offsets([mul * dim for mul, dim in input_shapes])
        out_offsets = _offsets([mul * dim for mul, dim in output_shapes])
        rows, weight_offset = [], 0
        for i_in, coupling, i_out, _ in paths:
            mul, d_in = input_shapes[i_in]
            if output_shapes[i_out][0] != mul:
                raise ValueError("a uvu path keeps its input's multiplicity")
            rows.append([in_offsets[i_in], d_in, coupling, out_offsets[i_out], output_shapes[i_out][1], weight_offset, mul])
            weight_offset += mul
        return cls(
            torch.tensor(rows, dtype=torch.int64).reshape(-1, PATH_FIELDS),
            torch.tensor([path[3] for path in paths], dtype=torch.float64),
            in_offsets[-1],
            out_offsets[-1],
            weight_offset,
            max(row[1] * row[6] for row in rows),
        )


def _offsets(sizes: list[int]) -> list[int]:
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + size)
    return offsets


def to_channels_last(features: torch.Tensor, shapes: list[tuple[int, int]]) -> torch.Tensor:
    """``[N, Σ mul (2l+1)]`` in e3nn's layout (each block ``[mul, 2l+1]``) -> each block ``[2l+1, mul]``."""
    blocks = features.split([mul * dim for mul, dim in shapes], dim=1)
    return torch.cat([_transpose_block(block, mul, dim) for block, (mul, dim) in zip(blocks, shapes)], dim=1)


def to_channels_first(features: torch.Tensor, shapes: list[tuple[int, int]]) -> torch.Tensor:
    """The inverse of :func:`to_channels_last`."""
    blocks = features.split([mul * dim for mul, dim in shapes], dim=1)
    return torch.cat([_transpose_block(block, dim, mul) for block, (mul, dim) in zip(blocks, shapes)], dim=1)


def _transpose_block(block: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    if rows == 1 or columns == 1:
        return block
    return block.reshape(-1, rows, columns).transpose(1, 2).reshape(-1, rows * columns)


def message_sum(
    x: torch.Tensor,
    weights: torch.Tensor,
    couplings: list[torch.Tensor],
    table: PathTable,
    neighbourhoods: Neighbourhoods,
) -> torch.Tensor:
    """The neighbour sums ``[N, table.out_dim]`` (channels last), differentiable in every input.

    ``x [N, table.in_dim]`` channels last, ``weights [E, table.weight_dim]``, ``couplings``
    ``[E, 2 l1 + 1, 2 l3 + 1]`` indexed by the table's coupling column; all CPU tensors of one
    dtype of :data:`DTYPES`. Second derivatives are not supported.
    """
    return _MessageSum.apply(x, weights, table, neighbourhoods, *couplings)


def _pointer(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def _pointers(tensors: list[torch.Tensor | None]) -> ctypes.Array:
    return (ctypes.c_void_p * len(tensors))(*[_pointer(tensor) for tensor in tensors])


def _run_kernel(direction: str, dtype: torch.dtype, arrays: list, table: PathTable, neighbourhoods: Neighbourhoods) -> None:
    """Call ``message_sum_<direction>_<dtype>`` of ``message_sum.c`` with ``arrays`` (its leading pointer
    arguments), then the graph, the path table and torch's thread count."""
    function = getattr(_library(), f"message_sum_{direction}_{DTYPES[dtype]}")
    status = function(
        *arrays, neighbourhoods.ptr.data_ptr(), _pointer(neighbourhoods.order), neighbourhoods.source.data_ptr(),
        neighbourhoods.n_nodes, table.paths.data_ptr(), table.path_weights.data_ptr(), table.paths.shape[0],
        table.in_dim, table.out_dim, table.weight_dim, table.scratch, torch.get_num_threads(),
    )  # fmt: skip
    if status:
        raise MemoryError(f"message_sum {direction}: out of memory for a thread's working arrays")


class _MessageSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weights, table, neighbourhoods, *couplings):
        x, weights = x.contiguous(), weights.contiguous()
        couplings = [coupling.contiguous() for coupling in couplings]
        out = x.new_empty(neighbourhoods.n_nodes, table.out_dim)
        _run_kernel("forward", x.dtype, [x.data_ptr(), weights.data_ptr(), _pointers(couplings), out.data_ptr()],
                    table, neighbourhoods)
        ctx.save_for_backward(x, weights, *couplings)
        ctx.table, ctx.neighbourhoods = table, neighbourhoods
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, weights, *couplings = ctx.saved_tensors
        grad_out = grad_out.contiguous()  # held here: the kernel reads it through a raw pointer
        wants_x, wants_weights, _, _, *wants_couplings = ctx.needs_input_grad
        grad_x = torch.zeros_like(x) if wants_x else None
        grad_weights = torch.empty_like(weights) if wants_weights else None
        grad_couplings = [torch.zeros_like(c) if wanted else None for c, wanted in zip(couplings, wants_couplings)]
        arrays = [x.data_ptr(), weights.data_ptr(), _pointers(couplings), grad_out.data_ptr(), _pointer(grad_x),
                  _pointer(grad_weights), _pointers(grad_couplings) if any(wants_couplings) else None]
        _run_kernel("backward", x.dtype, arrays, ctx.table, ctx.neighbourhoods)
        return grad_x, grad_weights, None, None, *grad_couplings
