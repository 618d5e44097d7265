"""``--outscale``: any final size after the network's fixed factor, by a Lanczos resize.

Like Real-ESRGAN's option of the same name: the network upscales x4, then Pillow's
Lanczos filter (antialiased: its support widens when shrinking) resizes to
``round(input size * factor)``. Works per channel on the final integer pixels: 8-bit
channels as Pillow "L" images (rounded and clipped by Pillow), 16-bit ones in float32
("F"), then rounded and clipped.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from .errors import SrganError


def check_outscale(factor: float | None) -> float | None:
    """``None`` (the network's own scale) or a finite factor > 0; SrganError otherwise."""
    if factor is None:
        return None
    if not math.isfinite(factor) or factor <= 0:
        raise SrganError(f"--outscale must be a positive number, got {factor}")
    return float(factor)


def outscale_size(height: int, width: int, factor: float) -> tuple[int, int]:
    """(height, width) of the final image: ``round(size * factor)``, at least 1 pixel."""
    return max(1, round(height * factor)), max(1, round(width * factor))


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
