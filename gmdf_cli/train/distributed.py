"""Several processes, one model: torch DistributedDataParallel over NCCL (GPUs, one process per GPU) or gloo
(CPUs), launched by ``torchrun`` on one or several nodes; and the two collectives GM-DF's meta step needs beyond
DDP's gradient averaging, both differentiable: the inner-loop gradient averaged over the global batch, and the
Frechet loss's features gathered from every process."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of a sum over processes is the sum of the processes' gradients."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x.detach().clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        total = grad.detach().clone()
        dist.all_reduce(total)
        return total


class _AllGatherRows(torch.autograd.Function):
    """(B, F) padded to the same B on every process -> (world * B, F); each process's rows get back the sum of
    every process's gradient for them."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x.detach().contiguous())
        ctx.rows, ctx.rank = x.shape[0], dist.get_rank()
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        total = grad.detach().clone().contiguous()
        dist.all_reduce(total)
        return total[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def mean_over_ranks(x: torch.Tensor, differentiable: bool) -> torch.Tensor:
    """The average of a tensor over the processes (the tensor itself with one process); ``differentiable`` when the
    outer loss differentiates through it (second order)."""
    world = world_size()
    if world == 1:
        return x
    if differentiable:
        return _AllReduceSum.apply(x) / world
    out = x.detach().clone()
    dist.all_reduce(out)
    return out / world


def all_rows(x: torch.Tensor) -> torch.Tensor:
    """The rows (B_r, F) of every process concatenated, differentiably: statistics of the whole batch (the Frechet
    loss's mean and covariance), not of one shard. Shards may differ in size (a corrupt crop left out)."""
    world = world_size()
    if world == 1:
        return x
    count = torch.tensor([x.shape[0]], device=x.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    top = max(sizes)
    gathered = _AllGatherRows.apply(F.pad(x, (0, 0, 0, top - x.shape[0])))
    return torch.cat([gathered[r * top : r * top + n] for r, n in enumerate(sizes)])


@dataclass
class Distributed:
    """This process's place among the ``torchrun`` processes: torch DDP over NCCL on GPUs (one process per GPU,
    ``LOCAL_RANK`` picks it), gloo on CPUs."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), local)

    def wrap(self, objective: nn.Module, device: torch.device, find_unused: bool = False) -> nn.Module:
        """The step module every process calls: DDP averages the gradients in backward (in buckets that overlap
        the backward pass) and broadcasts rank 0's parameters and buffers when it wraps. ``find_unused`` for a
        step that leaves some trainable parameters out (the baseline skips GM-DF's own parts)."""
        if self.world <= 1:
            return objective
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(objective, device_ids=ids, find_unused_parameters=find_unused)

    def agree(self, value: float) -> bool:
        if self.world <= 1:
            return True
        backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        mine = torch.tensor([value], dtype=torch.float64, device=backend_device)
        gathered = [torch.zeros_like(mine) for _ in range(self.world)]
        dist.all_gather(gathered, mine)
        return len({float(g) for g in gathered}) == 1
