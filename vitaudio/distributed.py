"""torchrun support: one process per device, rank 0 alone writes files; the rest wait and share its results."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0  # this process among all processes
    world_size: int = 1  # number of processes
    local_rank: int = 0  # this process on its machine: its GPU index
    device: torch.device = torch.device("cpu")  # where collectives run: NCCL takes only CUDA tensors

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); a no-op otherwise. On CUDA, `device`
    becomes this process's current GPU, where NCCL's collectives (object broadcasts too) run."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistContext(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank=dist.get_rank(), world_size=world_size, local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                       device=device)


def broadcast(value, ctx: DistContext):
    """Rank 0's `value` on every rank (any picklable object)."""
    if not ctx.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: list[float], ctx: DistContext) -> list[float]:
    """Element-wise sums of `values` over all ranks."""
    if not ctx.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.destroy_process_group()
