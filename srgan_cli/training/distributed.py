"""Running on several processes: torchrun (torch.distributed) and job-array shards.

Under ``torchrun`` every process (rank) gets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``
in its environment. srgan then joins the process group (NCCL on CUDA, gloo on CPU), uses
the GPU ``cuda:LOCAL_RANK``, and splits work by rank. Without torchrun, ``--shard I/N``
gives the same split for job arrays (Slurm, Kubernetes indexed jobs), one process each.

Training wraps its networks with ``parallel`` (DistributedDataParallel) and agrees on
losses and on stopping with ``mean_over_ranks``, ``any_rank`` and ``max_over_ranks``. Every
helper here is a no-op (or the identity) without a process group, so single-process code
calls them freely.
"""

from __future__ import annotations

import inspect
import os
import zlib
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from ..errors import SrganError

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

    def owns(self, name: str) -> bool:
        """Whether this shard reports ``name`` (an input that is no job: a planning problem,
        an earlier result), so every shard's report names it exactly once in total.

        Decided by a checksum of the name, not by list position: each shard plans on its
        own, and a file another shard has just written may be in one shard's list only.
        """
        return zlib.crc32(name.encode("utf-8", "surrogateescape")) % self.count == self.index


def under_torchrun() -> bool:
    """Whether this process was started by torchrun (or another torch.distributed launcher)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(device: str = "auto") -> tuple[int, int, torch.device]:
    """Join the torchrun process group if there is one; returns (rank, world size, device).

    ``device`` ``auto`` picks ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU.
    Without torchrun: (0, 1, the device asked for).
    """
    from ..upscale import pick_device

    if not under_torchrun():
        return 0, 1, pick_device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = device == "auto" and torch.cuda.is_available() or device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise SrganError(f"--device {device}: CUDA is not available")
    if use_cuda:
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    else:
        chosen = pick_device("cpu" if device == "auto" else device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), chosen


def launched_rank() -> int:
    """This process's rank as torchrun set it, 0 without torchrun (also after ``finish``)."""
    return int(os.environ.get("RANK", 0)) if under_torchrun() else 0


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


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def barrier() -> None:
    """Wait for every rank (e.g. while rank 0 prepares the run folder)."""
    if dist.is_initialized():
        dist.barrier()


def collective_device() -> torch.device:
    """Where this rank's collective tensors live: its GPU for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of ``values`` over the ranks (a new tensor on each rank)."""
    if world_size() == 1:
        return values
    total = values.to(collective_device(), copy=True)
    dist.all_reduce(total)
    return total.div_(world_size()).to(values.device)


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on some rank: all ranks take the same decision."""
    return max_over_ranks(int(flag)) > 0


def max_over_ranks(value: int) -> int:
    """The largest of the ranks' ``value`` (small integers: flags, signal numbers)."""
    if world_size() == 1:
        return value
    total = torch.tensor([float(value)], device=collective_device())
    dist.all_reduce(total, op=dist.ReduceOp.MAX)
    return int(total.item())


def parallel(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` wrapped in DistributedDataParallel under a process group, else itself.

    Buffers are not broadcast from rank 0 at every forward: BatchNorm running statistics
    only matter where they are saved, on rank 0, and the broadcast would modify buffers
    between the two discriminator forwards of a GAN step.
    """
    if world_size() == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    parameters = inspect.signature(DistributedDataParallel).parameters
    no_sync = "forward_sync_buffers" if "forward_sync_buffers" in parameters else (
        "broadcast_buffers")  # the older name
    return DistributedDataParallel(module, device_ids=device_ids, **{no_sync: False})
