"""torchrun's process group: joining it, each process's device, and the few collectives the library uses.

A run started by ``torchrun --nproc_per_node=N`` finds torchrun's rendezvous variables (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...) and joins the process group: NCCL on CUDA (each process on
the GPU of its ``LOCAL_RANK``), gloo on CPU. A plain ``python``/``medsegcnn`` run is a world of one. There is no
home-made process management. Training uses it for distributed data parallel (DDP); ``medsegcnn predict`` to
share a cohort out among processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .runtime import resolve_device


@dataclass(frozen=True)
class DistributedContext:
    """Where this process runs: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and reports progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launch_rank() -> int:
    """This process's rank as torchrun set it (0 in a plain run), known before the process group is joined."""
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def init_distributed(device_choice: str = "auto") -> DistributedContext:
    """Join torchrun's process group when launched by it; otherwise a single-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(rank=0, world_size=1, device=resolve_device(device_choice))
    device = resolve_device(device_choice)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)


def shutdown_distributed(context: DistributedContext) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(value: float, context: DistributedContext) -> float:
    """The mean of ``value`` over all ranks (``value`` itself in a single process)."""
    if not context.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / context.world_size


def broadcast_ints(values: list[int], context: DistributedContext) -> list[int]:
    """Rank 0's integers on every rank (e.g. a stop flag and the re-planned number of steps)."""
    if not context.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.int64, device=context.device)
    dist.broadcast(tensor, src=0)
    return [int(v) for v in tensor.tolist()]


def broadcast_text(text: str | None, context: DistributedContext) -> str:
    """Rank 0's ``text`` on every rank (``None`` elsewhere is fine): UTF-8 bytes in a tensor, nothing pickled."""
    if not context.distributed:
        if text is None:
            raise ValueError("broadcast_text needs the text in a single process")
        return text
    data = text.encode("utf-8") if context.is_main and text is not None else b""
    (size,) = broadcast_ints([len(data)], context)
    buffer = torch.zeros(size, dtype=torch.uint8, device=context.device)
    if context.is_main and size:
        buffer.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    dist.broadcast(buffer, src=0)
    return buffer.cpu().numpy().tobytes().decode("utf-8")
