"""Inference copies of the generator that compute the same function faster.

``prepare_for_inference(generator)`` returns a copy (the original is left untouched) with:

* BatchNorm folded into the convolution before it. In eval mode BN is a per-channel affine
  map, so ``bn(conv(x))`` is one convolution with scaled weights and a shifted bias. (A
  ``norm = "none"`` generator has nothing to fold; the other steps apply all the same.
  ``without_batchnorm`` uses the same folding to turn a ``batch`` generator into an equal
  ``none`` one, for training and ``--perception``.)
* The tail convolution moved before the last PixelShuffle (``ShuffledConv``). The paper's
  tail is a 9x9 conv 64 -> 3 at output resolution: three output channels make a poor
  matrix product. A kxk conv of ``pixel_shuffle(z, r)`` equals ``pixel_shuffle`` of a
  conv of ``z`` with r*r times the output channels (3 -> 12 for r = 2), ``C*r*r`` input
  channels (256) and a ``2*ceil((k//2)/r)+1`` kernel (5x5), at 1/r the resolution. It
  does about 1.6x the multiply-adds (19% of the new taps are zero, and the 12 output
  channels are padded to 16) but as a far better shaped matrix product, and it skips
  shuffling the 256-channel tensor. The PReLU between the shuffle and the tail is
  elementwise, so it moves before the shuffle (a per-channel one with repeated slopes).
* Each PReLU (one slope) swapped for the equal in-place LeakyReLU: no full-size copy.
* Weights in channels_last memory format, so oneDNN and cuDNN run NHWC kernels (the
  first convolution's output takes the weights' format; the rest follow).

Each step is exact up to float summation order: the copy maps the same (N, 3, H, W)
input in [0, 1] to the same (N, 3, scale*H, scale*W) output as the original in eval mode,
and has the same ``config`` and ``scale``. It is for inference only: its state dict
differs from a checkpoint's.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from .models import Generator, ResidualBlock, UpsampleStage


@torch.no_grad()
def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """One convolution equal to ``bn(conv(x))`` with ``bn`` in eval mode (running statistics).

    The arithmetic runs in float64 on the CPU (some devices lack float64), then the result
    is stored in the conv's dtype and device.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")

    def f64(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.detach().cpu().double()

    scale = f64(bn.running_var).add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * f64(bn.weight)
    bias = f64(conv.bias) if conv.bias is not None else torch.zeros_like(scale)
    bias = (bias - f64(bn.running_mean)) * scale
    if bn.bias is not None:
        bias = bias + f64(bn.bias)
    folded = copy.deepcopy(conv)
    folded.weight.copy_(f64(conv.weight) * scale.view(-1, 1, 1, 1))
    folded.bias = nn.Parameter(bias.to(conv.weight))
    return folded


def _conv_bn_pairs(generator: Generator) -> list[tuple[nn.Module, str, str]]:
    """(parent module, conv name, BatchNorm name) of each conv a BatchNorm follows; empty for
    a ``norm = "none"`` generator."""
    pairs: list[tuple[nn.Module, str, str]] = []
    for block in generator.body:
        if isinstance(block, ResidualBlock):
            pairs += [(block, "conv1", "bn1"), (block, "conv2", "bn2")]
    pairs.append((generator.body_tail, "0", "1"))
    return [(parent, conv, bn) for parent, conv, bn in pairs
            if isinstance(getattr(parent, bn), nn.BatchNorm2d)]


def _fold_all_batchnorm(generator: Generator) -> None:
    """In place: each BatchNorm folded into its conv (``fold_batchnorm``), then replaced by
    ``nn.Identity``, the layer a ``norm = "none"`` generator has there."""
    for parent, conv, bn in _conv_bn_pairs(generator):
        setattr(parent, conv, fold_batchnorm(getattr(parent, conv), getattr(parent, bn)))
        setattr(parent, bn, nn.Identity())


def without_batchnorm(generator: Generator) -> Generator:
    """A new ``norm = "none"`` generator computing the same function as ``generator`` in eval
    mode: each BatchNorm (its running statistics) folded into the conv before it.

    The result is in eval mode, on ``generator``'s device and dtype; ``generator`` is not
    changed. A ``none`` generator comes back as an equal copy. Outputs agree to float
    rounding (fp32: about 1e-6 on [0, 1] images).
    """
    folded = copy.deepcopy(generator).eval()
    _fold_all_batchnorm(folded)
    plain = Generator(replace(generator.config, norm="none"))
    plain.load_state_dict(folded.state_dict())  # the same names: a strict load proves it
    weight = next(generator.parameters())
    return plain.to(device=weight.device, dtype=weight.dtype).eval()


class ShuffledConv(nn.Module):
    """``conv(pixel_shuffle(z, factor))`` computed as ``pixel_shuffle(conv'(z), factor)``.

    ``conv`` must be a stride-1, undilated, ungrouped conv with an odd kernel and "same"
    zero padding. Output pixel ``(factor*i + a, factor*j + b)`` of ``conv`` reads shuffled
    pixel ``(factor*i + a + dy, ...)``, which is channel ``c*factor**2 + ry*factor + rx``
    of ``z`` at ``(i + py, ...)`` with ``py, ry = divmod(a + dy, factor)``; ``conv'`` has
    one output channel per (output channel, a, b) and one tap per (py, px).

    z: (N, C*factor**2, h, w) -> (N, out_channels, factor*h, factor*w), same dtype.
    """

    def __init__(self, conv: nn.Conv2d, factor: int) -> None:
        super().__init__()
        k = conv.kernel_size[0]
        same = (k // 2, k // 2)
        if (conv.kernel_size != (k, k) or k % 2 == 0 or conv.stride != (1, 1)
                or conv.dilation != (1, 1) or conv.groups != 1 or conv.padding != same
                or conv.padding_mode != "zeros"):
            raise ValueError(f"ShuffledConv needs a plain odd-kernel 'same' conv, got {conv}")
        self.factor = factor
        self.padding = math.ceil((k // 2) / factor)
        weight, bias = conv.weight.detach(), conv.bias
        out_ch, in_ch = weight.shape[:2]
        taps = 2 * self.padding + 1
        # axes: out channel, a, b | in channel, ry, rx | py, px
        w = weight.new_zeros(out_ch, factor, factor, in_ch, factor, factor, taps, taps)
        for a in range(factor):
            for dy in range(-(k // 2), k // 2 + 1):
                py, ry = divmod(a + dy, factor)
                for b in range(factor):
                    for dx in range(-(k // 2), k // 2 + 1):
                        px, rx = divmod(b + dx, factor)
                        w[:, a, b, :, ry, rx, py + self.padding, px + self.padding] = (
                            weight[:, :, dy + k // 2, dx + k // 2])
        # Zero rows pad the output channels to a multiple of 8 (12 -> 16): oneDNN and cuDNN
        # kernels work in blocks of 8 or 16 channels, and the padded conv measured faster.
        self.channels = out_ch * factor**2
        pad_rows = -self.channels % 8
        w = w.reshape(self.channels, in_ch * factor**2, taps, taps)
        self.weight = nn.Parameter(torch.cat([w, w.new_zeros(pad_rows, *w.shape[1:])]))
        self.bias = None if bias is None else nn.Parameter(torch.cat(
            [bias.detach().repeat_interleave(factor**2), bias.new_zeros(pad_rows)]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(z, self.weight, self.bias, padding=self.padding)
        return F.pixel_shuffle(y[:, :self.channels], self.factor)


def _prelu_before_shuffle(act: nn.PReLU, factor: int) -> nn.PReLU:
    """The PReLU that, applied before ``pixel_shuffle(., factor)``, equals ``act`` after it."""
    moved = copy.deepcopy(act)
    if act.num_parameters > 1:  # shuffled channel c comes from channels c*f*f .. c*f*f+f*f-1
        moved.weight = nn.Parameter(act.weight.detach().repeat_interleave(factor**2))
        moved.num_parameters = moved.weight.numel()
    return moved


def _activations_in_place(module: nn.Module) -> None:
    """Swap each single-slope PReLU for the equal in-place LeakyReLU (every one follows a conv
    or a shuffle, whose fresh output nothing else reads), saving a full-size copy each."""
    for name, child in module.named_children():
        if isinstance(child, nn.PReLU) and child.num_parameters == 1:
            setattr(module, name, nn.LeakyReLU(child.weight.item(), inplace=True))
        else:
            _activations_in_place(child)


def prepare_for_inference(
    generator: Generator,
    fold_bn: bool = True,
    shuffled_tail: bool = True,
    channels_last: bool = True,
    inplace_act: bool = True,
) -> Generator:
    """An eval-mode copy of ``generator`` with the optimizations of this module switched on.

    The copy computes the same function as ``generator.eval()`` (fp32: max abs difference
    around 1e-6 on [0, 1] outputs) on the same device and dtype; the argument is not changed.
    """
    fast = copy.deepcopy(generator).eval()
    if fold_bn:
        _fold_all_batchnorm(fast)  # fast.config stays: the copy stands for the same model
    if shuffled_tail:
        last: UpsampleStage = fast.upsample[-1]
        factor = last.shuffle.upscale_factor
        fast.upsample[-1] = nn.Sequential(last.conv, _prelu_before_shuffle(last.act, factor))
        fast.tail = ShuffledConv(fast.tail, factor)
    if inplace_act:
        _activations_in_place(fast)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    return fast
