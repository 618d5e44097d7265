"""Pillow's bicubic downscale of a batch as tensor ops, equal to Pillow bit for bit.

The paper's LR image is ``degradation.bicubic_downscale``: Pillow's ``Image.BICUBIC`` resize
by 1/scale. When training makes its batches on the GPU, the LR patches must be made there
too and stay exactly the benchmark's LR. torch's ``F.interpolate(..., mode="bicubic",
antialias=True)`` uses the same filter but in floating point without Pillow's rounding and
clipping between its passes: about a tenth of its 8-bit values differ from Pillow's, a few by
several levels (``scripts/resize_vs_pillow.py`` measures it).

:func:`pil_bicubic_downscale` instead repeats Pillow's own arithmetic (libImaging/Resample.c,
checked against Pillow 13.0.0): the bicubic filter with a = -0.5, its support widened by the
downscale factor (antialiasing), each output's taps normalised to sum 1 in double and
rounded to fixed point with ``PRECISION_BITS`` fraction bits; then a horizontal pass and a
vertical pass, each summing ``pixel x coefficient`` onto a rounding offset of half a unit,
shifting the fraction away (floor) and clipping to 0..255, with 8-bit values in between.
Each pass is one batched matrix product with a dense (out, in) coefficient matrix.

The pass order matters (the clipping and rounding between passes differ) and has changed
between Pillow versions: ``vertical_first`` follows the installed one (13: vertical first when
the height loses more than twice as many pixels as the width, python-pillow/Pillow#9549;
12: for images over 100 x taller than wide; 10 and 11: never), each found by comparing both
orders with that version's output and tested in tests/test_resize.py. Training patches are
square, so every version runs them horizontal first.
"""

from __future__ import annotations

import functools

import PIL
import torch

from srgan_cli.errors import InputError

PILLOW_MAJOR = int(PIL.__version__.split(".")[0])

PRECISION_BITS = 32 - 8 - 2
"""Fraction bits of Pillow's fixed-point coefficients (8 result bits, 2 for overshoot)."""

_ONE = 1 << PRECISION_BITS
_HALF = 1 << (PRECISION_BITS - 1)
_SUPPORT = 2.0  # the bicubic filter's support at scale 1, in input pixels


def bicubic_filter(x: float) -> float:
    """Keys' cubic convolution kernel with a = -0.5, written as Pillow's ``bicubic_filter``
    (same operations in the same order, so the same doubles)."""
    a = -0.5
    if x < 0.0:
        x = -x
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def fixed_point(coefficient: float) -> int:
    """Pillow's ``normalize_coeffs_8bpc``: round half away from zero to a multiple of
    2**-PRECISION_BITS, as an integer (C's int cast truncates toward zero, as ``int`` does)."""
    if coefficient < 0:
        return int(-0.5 + coefficient * _ONE)
    return int(0.5 + coefficient * _ONE)


@functools.lru_cache(maxsize=64)
def bicubic_weights(in_size: int, out_size: int) -> torch.Tensor:
    """Pillow's fixed-point bicubic coefficients resizing one axis from ``in_size`` to
    ``out_size`` pixels: an (out_size, in_size) float64 matrix of integers (the coefficient
    times 2**PRECISION_BITS; zero outside each output's taps), on the CPU.

    Mirrors ``precompute_coeffs`` line for line in Python floats (IEEE doubles, like C's).
    Each row's doubles sum to 1; after rounding, a row sums to 2**PRECISION_BITS within half
    a unit per tap. Cached by sizes; the returned tensor is shared, so do not modify it.
    """
    if in_size < 1 or out_size < 1:
        raise InputError(f"sizes must be at least 1, not {in_size} -> {out_size}")
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = _SUPPORT * filterscale
    inv_filterscale = 1.0 / filterscale
    weights = torch.zeros(out_size, in_size, dtype=torch.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        taps = [bicubic_filter((x + xmin - center + 0.5) * inv_filterscale) for x in range(xmax)]
        total = 0.0
        for w in taps:  # in order, as C sums them
            total += w
        if total != 0.0:
            taps = [w / total for w in taps]
        weights[xx, xmin:xmin + xmax] = torch.tensor([float(fixed_point(w)) for w in taps],
                                                     dtype=torch.float64)
    return weights


@functools.lru_cache(maxsize=64)
def _weights_on(in_size: int, out_size: int, device: torch.device) -> torch.Tensor:
    """``bicubic_weights`` copied once to ``device`` (a training loop reuses one pair)."""
    return bicubic_weights(in_size, out_size).to(device)


def _to_8bit(sums: torch.Tensor) -> torch.Tensor:
    """Pillow's ``clip8`` of fixed-point sums (float64 integers, before the rounding offset):
    add half a unit, drop the fraction bits (arithmetic shift = floor), clip to 0..255."""
    return torch.floor((sums + _HALF) / _ONE).clamp_(0, 255)


def _horizontal(x: torch.Tensor, out_width: int) -> torch.Tensor:
    """(N, C, H, W) float64 8-bit values -> (N, C, H, out_width), one Pillow pass."""
    weights = _weights_on(x.shape[-1], out_width, x.device)
    return _to_8bit(x @ weights.T)


def _vertical(x: torch.Tensor, out_height: int) -> torch.Tensor:
    """(N, C, H, W) float64 8-bit values -> (N, C, out_height, W), one Pillow pass."""
    weights = _weights_on(x.shape[-2], out_height, x.device)
    return _to_8bit(weights @ x)


def vertical_first(in_height: int, in_width: int, out_height: int, out_width: int) -> bool:
    """Whether the installed Pillow runs the vertical pass first; the order changes the
    rounding between the passes, so it must match. Pillow 13: when the height shrinks by
    more than twice as many pixels as the width. Pillow 12: when the image is more than 100
    times as tall as wide. Earlier: never (10.4 and 11.3 checked up to 140:1). Found by
    comparing both orders with each version's output (``tests/test_resize.py`` checks the
    installed one)."""
    if PILLOW_MAJOR >= 13:
        return in_height - out_height > 2 * (in_width - out_width)
    if PILLOW_MAJOR == 12:
        return in_height > 100 * in_width
    return False


def pil_bicubic_downscale(batch: torch.Tensor, scale: int) -> torch.Tensor:
    """Pillow's bicubic downscale of every image of a batch, bit for bit, on its device:
    (N, C, H, W) uint8 -> (N, C, H // scale, W // scale) uint8.

    Each image (each channel on its own, like Pillow's L and RGB modes) equals
    ``degradation.bicubic_downscale`` of it: crop the right and bottom edges to a multiple of
    ``scale``, then ``Image.BICUBIC`` resize by 1/scale, the two passes in Pillow's order
    (``vertical_first``: the installed Pillow's order).

    Pillow's sums are 32-bit integers: 8-bit pixels times coefficients below 2**23, at most
    ~2**31 in magnitude. Here they are float64 matrix products, which are exact in any
    summation order (every product and partial sum is an integer far below 2**53), on the CPU
    and on a GPU alike. Never float32 or TF32: their 24- or 11-bit significands would round
    the sums (and CUDA has no integer matmul); on CUDA this needs true IEEE float64 matmuls
    (cuBLAS's opt-in FP64 emulation must stay off). Raises InputError for a bad dtype, shape
    or scale, or an image smaller than the scale.
    """
    if batch.dtype != torch.uint8 or batch.dim() != 4:
        raise InputError(f"expected a uint8 (N, C, H, W) batch, not {batch.dtype} "
                         f"{tuple(batch.shape)}")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise InputError(f"scale must be a positive integer, not {scale!r}")
    height, width = batch.shape[-2:]
    if height < scale or width < scale:
        raise InputError(f"images of size {width}x{height} are smaller than the scale {scale}")
    out_height, out_width = height // scale, width // scale
    x = batch[..., :out_height * scale, :out_width * scale]
    if scale == 1:
        return x.clone()
    x = x.to(torch.float64)
    if vertical_first(x.shape[-2], x.shape[-1], out_height, out_width):
        x = _horizontal(_vertical(x, out_height), out_width)
    else:
        x = _vertical(_horizontal(x, out_width), out_height)
    return x.to(torch.uint8)
