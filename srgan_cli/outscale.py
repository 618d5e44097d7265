"""``--outscale``: any final size after the network's fixed factor, by a Lanczos resize.

Like Real-ESRGAN's option of the same name: the network upscales x4, then Pillow's
Lanczos filter (antialiased: its support widens when shrinking) resizes to
``round(input size * factor)``. Works per channel on the final integer pixels: 8-bit
channels as Pillow "L" images (rounded and clipped by Pillow), 16-bit ones in float32
("F"), then rounded and clipped.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from PIL import Image

from .errors import ImageError, InputError

MAX_OUTSCALE = 16
"""Largest ``--outscale``: the network's x4, then at most x4 more by Lanczos (which only
enlarges, adding no detail). Larger factors are refused as usage errors."""

OUTPUT_PIXELS_PER_MAX_PIXELS = 16
"""An output may have this many times ``--max-pixels`` pixels: what x4 of the largest input
allowed has. Larger outputs (a high ``--outscale``) fail their file before any work."""


def check_outscale(factor: object) -> float | None:
    """``None`` (the network's own scale) or a finite number in (0, MAX_OUTSCALE].

    Raises InputError (one line) for anything else: strings, NaN, 0, 1e9.
    """
    if factor is None:
        return None
    expected = f"--outscale must be a number above 0 and at most {MAX_OUTSCALE}"
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real):
        raise InputError(f"{expected}, got {type(factor).__name__} {factor!r}")
    if not (math.isfinite(factor) and 0 < factor <= MAX_OUTSCALE):
        raise InputError(f"{expected}, got {factor:g}")
    return float(factor)


def outscale_size(height: int, width: int, factor: float) -> tuple[int, int]:
    """(height, width) of the final image: ``round(size * factor)``, at least 1 pixel."""
    return max(1, round(height * factor)), max(1, round(width * factor))


def check_output_pixels(size: tuple[int, int], max_pixels: int) -> None:
    """Refuse an output (height, width) above ``OUTPUT_PIXELS_PER_MAX_PIXELS * max_pixels``
    with ImageError: one line for that file, raised before the network runs."""
    height, width = size
    limit = OUTPUT_PIXELS_PER_MAX_PIXELS * max_pixels
    if height * width > limit:
        raise ImageError(
            f"output would be {width}x{height} = {width * height:,} pixels, above the limit "
            f"of {limit:,} ({OUTPUT_PIXELS_PER_MAX_PIXELS} x --max-pixels): lower --outscale "
            "or raise --max-pixels")


def resize_lanczos(channels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) uint8 or uint16 -> (C, *size) of the same dtype, Lanczos-resampled."""
    if tuple(channels.shape[-2:]) == size:
        return channels
    height, width = size
    planes = []
    for plane in channels.numpy():
        if plane.dtype == np.uint8:
            planes.append(np.asarray(Image.fromarray(plane, "L").resize((width, height),
                                                                        Image.LANCZOS)))
        else:
            big = Image.fromarray(plane.astype(np.float32), "F")
            small = np.asarray(big.resize((width, height), Image.LANCZOS))
            planes.append(small.round().clip(0, 65535).astype(plane.dtype))
    return torch.from_numpy(np.stack(planes))
