"""Synchronised BatchNorm for ``--sync-bn``: batch statistics over every rank's samples.

In training mode BatchNorm normalises with the statistics of the batch it sees. Under
DistributedDataParallel each rank sees only its share of the global batch, so plain BN
trains a slightly different network than one process on the whole batch; synchronised BN
trains the same one.

``torch.nn.SyncBatchNorm`` does this on GPUs only (its kernels are CUDA ones, and DDP
refuses it on CPU modules), so ``convert`` uses it for GPU modules and ``CpuSyncBatchNorm``
for CPU ones (gloo): the same statistics from plain tensor ops, each rank's per-channel sums
and sums of squares added up over the ranks by an all_reduce that autograd goes through
(its backward is the same all_reduce of the gradients). CPU runs, the tests among them,
get the numbers one process computes on the global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn


class SumOverRanks(torch.autograd.Function):
    """``all_reduce(SUM)`` with a gradient: d(sum)/d(each rank's input) is the summed grad."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics are those of all ranks' batches together."""

    def forward(self, input: Tensor) -> Tensor:
        synced = self.training and dist.is_initialized() and dist.get_world_size() > 1
        return self.synced_forward(input) if synced else super().forward(input)

    def synced_forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, c] + [1] * (x.dim() - 2)
        xf = x.float()
        count = torch.tensor([xf.numel() / c])
        total = SumOverRanks.apply(torch.cat([xf.sum(dims), xf.square().sum(dims), count]))
        n = total[-1].detach()
        mean = total[:c] / n
        var = (total[c:2 * c] / n - mean.square()).clamp(min=0)
        if self.track_running_stats:
            self.update_running_stats(mean.detach(), var.detach(), float(n))
        y = (xf - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    @torch.no_grad()
    def update_running_stats(self, mean: Tensor, var: Tensor, n: float) -> None:
        """As ``torch.nn.BatchNorm2d`` does: momentum (or cumulative) average, unbiased var."""
        self.num_batches_tracked.add_(1)
        factor = self.momentum if self.momentum is not None else (
            1.0 / float(self.num_batches_tracked))
        self.running_mean.lerp_(mean, factor)
        self.running_var.lerp_(var * n / max(n - 1, 1), factor)


def convert(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` with its BatchNorm layers synchronised over the ranks (same state dict):
    ``torch.nn.SyncBatchNorm`` on GPUs, ``CpuSyncBatchNorm`` on the CPU."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for layer in module.modules():
        if type(layer) is nn.BatchNorm2d:
            layer.__class__ = CpuSyncBatchNorm  # a subclass with no state of its own
    return module
