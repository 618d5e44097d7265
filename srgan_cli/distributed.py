"""Running on several processes: torchrun (torch.distributed) and job-array shards.

Under ``torchrun`` every process (rank) gets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``
in its environment. srgan then joins the process group (NCCL on CUDA, gloo on CPU), uses
the GPU ``cuda:LOCAL_RANK``, and splits work by rank. Without torchrun, ``--shard I/N``
gives the same split for job arrays (Slurm, Kubernetes indexed jobs), one process each.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from .errors import SrganError

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Share ``index`` (0-based) of ``count``: every ``count``-th item of a sorted list."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise SrganError(f"bad shard {self.index}/{self.count}: need 0 <= I < N")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"`` -> Shard(I, N), e.g. ``$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``."""
        try:
            index, count = (int(v) for v in text.split("/"))
        except ValueError:
            raise SrganError(f"bad shard {text!r}: expected I/N, like 0/4") from None
        return cls(index, count)

    def select(self, items: list[T]) -> list[T]:
        """This shard's items: a deterministic round-robin split, each item in one shard."""
        return items[self.index :: self.count]


def under_torchrun() -> bool:
    """Whether this process was started by torchrun (or another torch.distributed launcher)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(device: str = "auto") -> tuple[int, int, torch.device]:
    """Join the torchrun process group if there is one; returns (rank, world size, device).

    ``device`` ``auto`` picks ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU.
    Without torchrun: (0, 1, the device asked for).
    """
    from .upscale import pick_device

    if not under_torchrun():
        return 0, 1, pick_device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = device == "auto" and torch.cuda.is_available() or device.startswith("cuda")
    if use_cuda:
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    else:
        chosen = pick_device("cpu" if device == "auto" else device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), chosen


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def gather(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order (just ``[obj]`` without a process group)."""
    if not dist.is_initialized():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def finish() -> None:
    """Leave the process group (if any) cleanly."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
