"""Data-parallel training with :mod:`torch.distributed`: one process per device, launched by ``torchrun``.

:func:`setup` reads the environment that ``torchrun`` sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and, when ``WORLD_SIZE > 1``, starts the
process group: NCCL on CUDA (each process on GPU ``LOCAL_RANK``), gloo on the CPU. Without
those variables (a plain ``equiglass train``) it gives :data:`SINGLE_PROCESS`, whose every
method is the identity, so the training code has one path.

What :mod:`equiglass.training.loop` does with it (``[train] batch_size`` is the *global* batch):

* every rank draws the same epoch order and augmentation from the same seeded generator,
  builds the same global batch and keeps its share (:meth:`Parallel.shard_batch`:
  configurations ``rank, rank + world_size, ...`` of the batch);
* the model is wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`, which
  averages the gradients over ranks; :meth:`Parallel.global_loss` weights each rank's loss
  by its share of the loss particles, so the averaged gradient is that of the global
  batch's loss, as in one process (and the loss it reports is the global batch's);
* validation is split over the ranks and gathered back in order (:meth:`Parallel.shard`,
  :meth:`Parallel.gather`), after the model buffers (BatchNorm running statistics) are
  taken from rank 0, the rank whose model is saved;
* only rank 0 writes files (checkpoints, ``metrics.csv``, ``run.json``, TensorBoard).

Exactness: with models without batch normalisation across particles, a run on ``W``
processes gives the parameters of a one-process run with the same global batch, to float
rounding (tests/training/test_distributed.py). e3nn's BatchNorm (the equivariant model's default)
computes its training statistics over the particles of each rank's share of the batch,
as ``DistributedDataParallel`` does for any batch norm without synchronisation: the same in
expectation, not bit for bit. The global batch must hold at least ``W`` configurations,
the epoch's last (partial) one included.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch_geometric.data import Batch

T = TypeVar("T")


@dataclass(frozen=True)
class Parallel:
    """This process's place among the training processes.

    Attributes:
        rank: global rank (0 writes the files).
        world_size: number of processes.
        device: this process's device (``cuda:LOCAL_RANK`` on GPUs).
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on rank 0."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True with more than one process."""
        return self.world_size > 1

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` (itself with one process)."""
        if not self.distributed:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def shard_batch(self, batch: Batch) -> Batch:
        """This rank's configurations of a global ``batch``: numbers ``rank, rank + world_size, ...``.

        Raises:
            ValueError: the batch has fewer configurations than processes (on every rank alike).
        """
        if not self.distributed:
            return batch
        if batch.num_graphs < self.world_size:
            raise ValueError(
                f"a batch of {batch.num_graphs} configuration(s) for {self.world_size} processes: "
                "choose batch_size (and a training split) so that every batch holds at least one per process"
            )
        return Batch.from_data_list(batch.index_select(range(self.rank, batch.num_graphs, self.world_size)))

    def global_loss(self, loss: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """The loss to back-propagate, given this rank's mean ``loss`` over ``count`` terms.

        Its gradient, averaged over ranks by DistributedDataParallel, is the gradient of the
        mean over all ranks' terms; its value is that global mean.
        """
        if not self.distributed:
            return loss
        counts = count.detach().to(loss.dtype).reshape(1)
        sums = loss.detach().reshape(1) * counts
        totals = torch.cat([sums, counts])
        dist.all_reduce(totals)
        scaled = loss * (counts[0] * self.world_size / totals[1])
        return scaled + (totals[0] / totals[1] - scaled).detach()

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's items of ``items``: numbers ``rank, rank + world_size, ...``."""
        return [items[k] for k in range(self.rank, len(items), self.world_size)]

    def gather(self, *per_rank: list[Any]) -> tuple[list[Any], ...]:
        """Lists made from :meth:`shard` items on every rank, joined back into the order of the full sequence."""
        if not self.distributed:
            return per_rank
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, per_rank)
        joined = []
        for column in range(len(per_rank)):
            parts = [ranks[column] for ranks in gathered]
            joined.append([parts[k % self.world_size][k // self.world_size] for k in range(sum(map(len, parts)))])
        return tuple(joined)

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Copy rank 0's buffers (e.g. BatchNorm running statistics) to every rank."""
        if self.distributed:
            for buffer in model.buffers():
                dist.broadcast(buffer.data, src=0)


#: The context of a single process: every method is the identity.
SINGLE_PROCESS = Parallel()


@contextmanager
def setup(device: torch.device) -> Iterator[Parallel]:
    """The :class:`Parallel` context of this process, from ``torchrun``'s environment variables.

    With ``WORLD_SIZE > 1``: starts the process group (NCCL for a CUDA ``device``, gloo
    otherwise) unless it is already running, and ends it on exit if it started it; a CUDA
    device becomes ``cuda:LOCAL_RANK``. Otherwise: :data:`SINGLE_PROCESS` on ``device``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        yield Parallel(device=device)
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    started = not dist.is_initialized()
    if started:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield Parallel(dist.get_rank(), dist.get_world_size(), device)
    finally:
        if started:
            dist.destroy_process_group()
